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

/// How the sends around the kill ended.
#[derive(Debug, Default, Clone, Copy)]
struct SendOutcomes {
    /// Begun before the kill started, ended (acked or failed) after that.
    in_flight_at_kill: usize,
    /// Acked though begun once the process was reaped: must stay 0.
    acked_begun_after_kill: usize,
}

impl SendOutcomes {
    fn record(&mut self, in_flight_at_kill: bool, begun_after_kill: bool, acked: bool) {
        self.in_flight_at_kill += usize::from(in_flight_at_kill);
        self.acked_begun_after_kill += usize::from(begun_after_kill && acked);
    }
}

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
    // `killing` is set just before the kill, `killed` once the process is reaped.
    let killing = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<SendOutcomes>> = Arc::default();
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let producer = producer.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        let (killing, killed) = (killing.clone(), killed.clone());
        let outcomes = outcomes.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("w{writer}-{i}");
                let key = format!("k{}", i % 7);
                let began_before_kill = !killing.load(Ordering::SeqCst);
                let began_after_kill = killed.load(Ordering::SeqCst);
                let sent = producer
                    .send(
                        FutureRecord::to("ledger").key(&key).payload(&value),
                        Duration::from_secs(1),
                    )
                    .await;
                let ended_after_kill_began = killing.load(Ordering::SeqCst);
                outcomes.lock().unwrap().record(
                    began_before_kill && ended_after_kill_began,
                    began_after_kill,
                    sent.is_ok(),
                );
                if let Ok(rdkafka::producer::future_producer::Delivery {
                    partition, offset, ..
                }) = sent
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
    killing.store(true, Ordering::SeqCst);
    broker.kill9().unwrap();
    killed.store(true, Ordering::SeqCst);
    // One send surely begun after the kill, whatever the writers were doing then.
    let probe = {
        let producer = producer.clone();
        tokio::spawn(async move {
            producer
                .send(
                    FutureRecord::to("ledger").key("probe").payload("probe-0"),
                    Duration::from_secs(1),
                )
                .await
                .is_ok()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // What the kill can be held to. Acks may still arrive after it: responses the broker
    // wrote before dying sit in the client's socket buffer, so "no ack after the kill" would
    // be false. What is true: a send begun after the process was reaped can never be acked
    // (if one is, the kill did not stop the broker and the read-back below proves nothing),
    // and the kill caught sends in flight, each then acked or failed (if none were, the test
    // killed an idle broker and tested nothing). "In flight" counts from the moment the kill
    // starts: an in-flight send may fail on the closed socket before `kill9` has reaped the
    // process.
    assert!(
        !probe.await.unwrap(),
        "a send begun after kill -9 was acked"
    );
    let outcomes = *outcomes.lock().unwrap();
    assert_eq!(
        outcomes.acked_begun_after_kill, 0,
        "sends begun after kill -9 were acked: {outcomes:?}"
    );
    assert!(
        outcomes.in_flight_at_kill > 0,
        "kill -9 caught no send in flight: {outcomes:?}"
    );
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
