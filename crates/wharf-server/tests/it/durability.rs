//! kill -9 during an acks=all produce stream: every acknowledged message survives, in order,
//! once per offset.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{eventually, start_broker};

#[tokio::test(flavor = "multi_thread")]
async fn acked_messages_survive_kill_9() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "ledger", 3, &[])
        .await
        .unwrap();
    // Retries off: a message is either acked at one offset or failed.
    let producer = wharf_testkit::producer(
        &addr,
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("message.timeout.ms", "5000"),
            ("linger.ms", "1"),
        ],
    )
    .unwrap();
    let acked: Arc<Mutex<BTreeMap<(i32, i64), String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let producer = producer.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("w{writer}-{i}");
                let key = format!("k{}", i % 7);
                if let Ok(rdkafka::producer::future_producer::Delivery {
                    partition, offset, ..
                }) = producer
                    .send(
                        FutureRecord::to("ledger").key(&key).payload(&value),
                        Duration::from_secs(1),
                    )
                    .await
                {
                    assert!(
                        acked
                            .lock()
                            .unwrap()
                            .insert((partition, offset), value)
                            .is_none(),
                        "two acks for one offset"
                    );
                }
                i += 1;
            }
        }));
    }
    eventually("2,000 acks before the kill", || {
        acked.lock().unwrap().len() >= 2_000
    });
    broker.kill9().unwrap();
    let acked_at_kill = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= acked_at_kill);
    broker.restart().unwrap();

    let ends = wharf_testkit::watermarks(&addr, "ledger", 3).unwrap();
    let consumer = wharf_testkit::base_consumer(&addr, &[]).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("ledger", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let total: i64 = ends.values().map(|(lo, hi)| hi - lo).sum();
    let mut stored: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while (stored.len() as i64) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {total}",
            stored.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
            assert!(
                stored.insert((m.partition(), m.offset()), value).is_none(),
                "offset read twice"
            );
        }
    }
    for (at, value) in &acked {
        assert_eq!(
            stored.get(at),
            Some(value),
            "acked message at {at:?} lost or changed"
        );
    }
    // Per partition, offsets are dense from 0 and each writer's sequence only moves forward.
    for p in 0..3 {
        let offsets: Vec<i64> = stored
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for ((_, _), v) in stored.range((p, 0)..(p + 1, 0)) {
            let (w, i) = v.split_once('-').unwrap();
            let i: u64 = i.parse().unwrap();
            if let Some(prev) = last.insert(w.to_string(), i) {
                assert!(prev < i, "writer {w} out of order on partition {p}");
            }
        }
    }
    // Producing works after the restart.
    let producer = wharf_testkit::producer(&addr, &[("acks", "all")]).unwrap();
    producer
        .send(
            FutureRecord::to("ledger").key("k").payload("after"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}
