//! Fetch sessions (KIP-227) with a client that uses them: kafka-python (librdkafka does not).
//! A consumer of 5,000 partitions reads what was produced to 100 of them; once its session
//! is open, its fetches name only the partitions that changed, which the broker's metrics
//! count.

use std::process::Command;
use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::admin_http::get;
use crate::start_broker;

const PARTITIONS: i32 = 5_000;
const FILLED: i32 = 100;

/// The venv interpreter `scripts/test` prepared.
pub(crate) fn python() -> String {
    std::env::var("WHARF_PYTHON").unwrap_or_else(|_| {
        panic!(
            "WHARF_PYTHON is not set: run the README test command (scripts/test creates the \
             virtual environment with kafka-python)"
        )
    })
}

const CONSUMER: &str = r#"
import sys, time
from kafka import KafkaConsumer, TopicPartition
addr, topic, partitions, expected = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
consumer = KafkaConsumer(bootstrap_servers=addr, enable_auto_commit=False, group_id=None,
                         fetch_max_wait_ms=100, request_timeout_ms=30000)
tps = [TopicPartition(topic, p) for p in range(partitions)]
consumer.assign(tps)
consumer.seek_to_beginning()
seen = set()
deadline = time.time() + 90
while len(seen) < expected and time.time() < deadline:
    for tp, records in consumer.poll(timeout_ms=500).items():
        for r in records:
            seen.add((tp.partition, r.offset, r.value.decode()))
# A few more polls with nothing new: incremental fetches of an idle session.
for _ in range(5):
    consumer.poll(timeout_ms=200)
consumer.close()
for p, o, v in sorted(seen):
    print(f"{p} {o} {v}")
"#;

fn counter(text: &str, metric: &str, session: &str) -> f64 {
    let prefix = format!("{metric}{{session=\"{session}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_of_5000_partitions_fetches_incrementally() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "wide", PARTITIONS, &[])
        .await
        .unwrap();
    let producer = wharf_testkit::producer(&addr, &[("acks", "all")]).unwrap();
    for p in 0..FILLED {
        producer
            .send(
                FutureRecord::<(), _>::to("wide")
                    .partition(p * (PARTITIONS / FILLED))
                    .payload(&format!("v{p}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let out = Command::new(python())
        .args([
            "-c",
            CONSUMER,
            &addr,
            "wide",
            &PARTITIONS.to_string(),
            &FILLED.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-python consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = {
        let mut e: Vec<(i32, String)> = (0..FILLED)
            .map(|p| (p * (PARTITIONS / FILLED), format!("v{p}")))
            .collect();
        e.sort();
        e.into_iter().map(|(p, v)| format!("{p} 0 {v}")).collect()
    };
    assert_eq!(
        read, expected,
        "every record, once, at offset 0 of its partition"
    );

    let (status, text) = get(&broker.admin_addr().unwrap(), "/metrics");
    assert_eq!(status, 200);
    let metric = "wharf_kafka_fetch_requests_total";
    let partitions = "wharf_kafka_fetch_request_partitions_total";
    let opened = counter(&text, metric, "full");
    let incremental = counter(&text, metric, "incremental");
    assert!(opened >= 1.0, "a session was opened:\n{text}");
    assert!(
        incremental >= 5.0,
        "incremental fetches followed: {incremental}"
    );
    // A full fetch names all 5,000 partitions; incremental ones only those that moved on.
    let named_full = counter(&text, partitions, "full");
    let named_incremental = counter(&text, partitions, "incremental");
    assert!(named_full >= f64::from(PARTITIONS), "{named_full}");
    assert!(
        named_incremental / incremental < f64::from(FILLED),
        "incremental fetches named {named_incremental} partitions in {incremental} requests"
    );
}
