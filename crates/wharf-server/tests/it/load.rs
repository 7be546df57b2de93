//! Load: 2,000 idle connections plus a producer and a consumer at full speed for 30 s. No
//! delivery errors, everything produced is consumed, and the broker's memory stays bounded
//! (peak RSS printed). Opt-in, as it is long: `cargo test -p wharf-server --test it -- --ignored load`.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::start_broker;

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "30 s load run; opt in with --ignored"]
async fn idle_connections_and_full_speed_traffic() {
    let seconds: u64 = std::env::var("WHARF_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    let pid = broker.pid().unwrap();
    wharf_testkit::create_topic(&addr, "load", 4, &[])
        .await
        .unwrap();
    let idle: Vec<TcpStream> = (0..2_000)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let rss_idle = status_kib(pid, "VmRSS:");

    let stop = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let consumer = {
        let (addr, stop, consumed) = (addr.clone(), stop.clone(), consumed.clone());
        tokio::task::spawn_blocking(move || {
            let c = wharf_testkit::base_consumer(&addr, &[]).unwrap();
            let mut tpl = TopicPartitionList::new();
            for p in 0..4 {
                tpl.add_partition_offset("load", p, Offset::Beginning)
                    .unwrap();
            }
            c.assign(&tpl).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Some(m) = c.poll(Duration::from_millis(100)) {
                    m.unwrap();
                    consumed.fetch_add(1, Ordering::Relaxed);
                }
            }
            c
        })
    };
    let producer = wharf_testkit::producer(
        &addr,
        &[
            ("acks", "1"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "100000"),
        ],
    )
    .unwrap();
    let value = vec![b'v'; 1024];
    let started = Instant::now();
    let mut produced = 0u64;
    let mut peak_rss = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let mut batch = Vec::with_capacity(1_000);
        for _ in 0..1_000 {
            batch.push(
                producer
                    .send_result(FutureRecord::<str, [u8]>::to("load").payload(&value))
                    .map_err(|(e, _)| e)
                    .unwrap(),
            );
        }
        for f in batch {
            f.await.unwrap().map_err(|(e, _)| e).unwrap();
            produced += 1;
        }
        peak_rss = peak_rss.max(status_kib(pid, "VmRSS:"));
    }
    // The consumer catches up with everything produced.
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed.load(Ordering::Relaxed) < produced {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {produced}",
            consumed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    drop(consumer.await.unwrap());
    assert_eq!(
        consumed.load(Ordering::Relaxed),
        produced,
        "nothing consumed twice"
    );
    let hwm = status_kib(pid, "VmHWM:");
    println!(
        "load summary: seconds={seconds} idle_connections={} produced={produced} consumed={} rss_idle_kib={rss_idle} rss_peak_sampled_kib={peak_rss} vm_hwm_kib={hwm}",
        idle.len(),
        consumed.load(Ordering::Relaxed)
    );
    // Bounded: well under what 30 s of 1 KiB records would take if the broker held them.
    assert!(hwm < 1024 * 1024, "peak RSS {hwm} KiB");
    assert!(
        broker.log().lines().all(|l| !l.contains("ERROR")),
        "no errors logged"
    );
}
