//! The crash loop: producers with acks=all stamp (producer, sequence) on every message while
//! the broker is killed with SIGKILL at random moments — during segment rolls, retention
//! deletions and group commits — and restarted. Every acknowledged message must be found at
//! its acknowledged offset, once, in per-producer order; and a consumer group's committed
//! offsets never go back behind an acknowledged commit.
//!
//! Default 20 kills; `WHARF_CRASH_KILLS=500 cargo test -p wharf-server --test it crash_loop`
//! is the long mode. `WHARF_CRASH_SEED` picks the random moments.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::start_broker;

const PRODUCERS: u32 = 3;
const PARTITIONS: i32 = 4;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Acked = Arc<Mutex<HashMap<(u32, u64), (i32, i64)>>>;

#[tokio::test(flavor = "multi_thread")]
async fn crash_loop() {
    let kills = env_u64("WHARF_CRASH_KILLS", 20);
    let mut rng = Rng(env_u64("WHARF_CRASH_SEED", 0x5eed_cafe_f00d) | 1);
    // Small segments roll often; a churn topic with tiny retention deletes segments often.
    let (_dir, mut broker) = start_broker(&[
        ("shards", "2"),
        ("log_segment_bytes", "65536"),
        ("log_retention_check_interval_ms", "50"),
    ]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "durable", PARTITIONS, &[])
        .await
        .unwrap();
    wharf_testkit::create_topic(&addr, "churn", 2, &[("retention.bytes", "100000")])
        .await
        .unwrap();

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for pid in 0..PRODUCERS {
        let (addr, acked, stop) = (addr.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // No retries: every message is acked at one offset or failed.
            let producer = wharf_testkit::producer(
                &addr,
                &[
                    ("acks", "all"),
                    ("retries", "0"),
                    ("message.timeout.ms", "3000"),
                    ("linger.ms", "2"),
                ],
            )
            .unwrap();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut window = Vec::new();
                for _ in 0..20 {
                    let headers = OwnedHeaders::new()
                        .insert(Header {
                            key: "pid",
                            value: Some(&pid.to_string()),
                        })
                        .insert(Header {
                            key: "seq",
                            value: Some(&seq.to_string()),
                        });
                    let key = format!("producer-{pid}");
                    let payload = format!("{pid}:{seq}:{}", "p".repeat((seq % 200) as usize));
                    let record = FutureRecord::to("durable")
                        .key(&key)
                        .payload(&payload)
                        .headers(headers);
                    if let Ok(f) = producer.send_result(record) {
                        window.push((seq, f));
                    }
                    let churn = FutureRecord::<str, str>::to("churn").payload(&payload);
                    let _ = producer.send_result(churn);
                    seq += 1;
                }
                for (seq, f) in window {
                    if let Ok(Ok(d)) = f.await {
                        acked
                            .lock()
                            .unwrap()
                            .insert((pid, seq), (d.partition, d.offset));
                    }
                }
                if acked.lock().unwrap().is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }

    // A committer moves the group's offsets forward with synchronous commits; after every
    // restart the committed offsets must be at least what was acknowledged before the kill.
    let committed_acked: Arc<Mutex<HashMap<i32, i64>>> = Arc::default();
    let committer = {
        let (addr, stop, acked) = (addr.clone(), stop.clone(), committed_acked.clone());
        tokio::task::spawn_blocking(move || {
            let c =
                wharf_testkit::base_consumer(&addr, &[("group.id", "crash-committer")]).unwrap();
            let mut next = 1i64;
            while !stop.load(Ordering::Relaxed) {
                let mut tpl = TopicPartitionList::new();
                for p in 0..PARTITIONS {
                    tpl.add_partition_offset("durable", p, Offset::Offset(next))
                        .unwrap();
                }
                if c.commit(&tpl, CommitMode::Sync).is_ok() {
                    let mut a = acked.lock().unwrap();
                    for p in 0..PARTITIONS {
                        a.insert(p, next);
                    }
                }
                next += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let committed_now = |addr: String| {
        tokio::task::spawn_blocking(move || {
            let c =
                wharf_testkit::base_consumer(&addr, &[("group.id", "crash-committer")]).unwrap();
            let mut tpl = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                tpl.add_partition("durable", p);
            }
            let got = c.committed_offsets(tpl, Duration::from_secs(30)).unwrap();
            got.elements()
                .iter()
                .map(|e| (e.partition(), e.offset()))
                .collect::<Vec<_>>()
        })
    };
    let mut offset_checks = 0;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
        broker.kill9().unwrap();
        let before: HashMap<i32, i64> = committed_acked.lock().unwrap().clone();
        tokio::time::sleep(Duration::from_millis(rng.below(100))).await;
        broker.restart().unwrap();
        for (p, offset) in committed_now(addr.clone()).await.unwrap() {
            let floor = before.get(&p).copied().unwrap_or(0);
            match offset {
                Offset::Offset(o) => assert!(
                    o >= floor,
                    "partition {p}: committed offset went back from {floor} to {o}"
                ),
                other => assert_eq!(
                    floor, 0,
                    "partition {p}: acknowledged commit {floor} missing ({other:?})"
                ),
            }
            offset_checks += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    committer.await.unwrap();
    assert!(
        committed_acked.lock().unwrap().values().all(|o| *o > 1),
        "commits were acknowledged"
    );
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Read everything back.
    let a = addr.clone();
    let stored: BTreeMap<(i32, i64), (u32, u64)> = tokio::task::spawn_blocking(move || {
        let marks = wharf_testkit::watermarks(&a, "durable", PARTITIONS).unwrap();
        let c = wharf_testkit::base_consumer(&a, &[]).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset("durable", p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let total: i64 = marks.values().map(|(lo, hi)| hi - lo).sum();
        let mut stored = BTreeMap::new();
        while (stored.len() as i64) < total {
            let m = c
                .poll(Duration::from_secs(60))
                .expect("stored data readable")
                .unwrap();
            let h = m.headers().unwrap();
            let pid: u32 = std::str::from_utf8(h.get(0).value.unwrap())
                .unwrap()
                .parse()
                .unwrap();
            let seq: u64 = std::str::from_utf8(h.get(1).value.unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                m.payload().unwrap(),
                format!("{pid}:{seq}:{}", "p".repeat((seq % 200) as usize)).as_bytes()
            );
            assert!(
                stored
                    .insert((m.partition(), m.offset()), (pid, seq))
                    .is_none(),
                "offset read twice"
            );
        }
        stored
    })
    .await
    .unwrap();

    let mut lost = 0usize;
    for (id, at) in &acked {
        if stored.get(at) != Some(id) {
            lost += 1;
        }
    }
    let mut copies: HashMap<(u32, u64), usize> = HashMap::new();
    for id in stored.values() {
        *copies.entry(*id).or_default() += 1;
    }
    let duplicated = copies.values().filter(|n| **n > 1).count();
    let found = acked.keys().filter(|id| copies.contains_key(id)).count();
    println!(
        "crash-loop summary: kills={kills} acked={} found={found} lost={lost} duplicated={duplicated} committed_offset_checks={offset_checks}",
        acked.len()
    );
    assert!(
        acked.len() > kills as usize,
        "producers made progress between kills"
    );
    assert_eq!(lost, 0, "acknowledged messages lost");
    assert_eq!(duplicated, 0, "messages stored twice");
    // Per producer (one key, one partition), sequences only move forward along offsets.
    let mut last: HashMap<u32, u64> = HashMap::new();
    for (pid, seq) in stored.values() {
        if let Some(prev) = last.insert(*pid, *seq) {
            assert!(prev < *seq, "producer {pid}: {prev} then {seq}");
        }
    }
}
