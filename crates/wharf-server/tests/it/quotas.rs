//! Client quotas: `wharf quota` sets a producer byte rate for one client id; a librdkafka
//! producer with that id is throttled (the broker reports throttle_time_ms, which librdkafka's
//! statistics show, and counts it) while an unlimited one is not; quotas survive a restart.
//! A request-time quota (`request_percentage`) throttles a client whose requests use more
//! thread time than it allows.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use crate::admin_http::get;
use crate::{eventually, start_broker, wharf_bin};

/// Keeps the largest throttle time librdkafka saw from any broker.
#[derive(Clone, Default)]
struct ThrottleSeen(Arc<Mutex<i64>>);

impl ClientContext for ThrottleSeen {
    fn stats(&self, statistics: Statistics) {
        let max = statistics
            .brokers
            .values()
            .filter_map(|b| b.throttle.as_ref().map(|t| t.max))
            .max()
            .unwrap_or(0);
        let mut seen = self.0.lock().unwrap();
        *seen = (*seen).max(max);
    }
}

fn producer(addr: &str, client_id: &str, seen: ThrottleSeen) -> FutureProducer<ThrottleSeen> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("client.id", client_id)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("statistics.interval.ms", "100")
        .create_with_context(seen)
        .unwrap()
}

fn wharf(addr: &str, args: &[&str]) -> String {
    let out = Command::new(wharf_bin())
        .args(["quota", "--bootstrap-server", addr])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wharf quota {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn send_3mb(producer: &FutureProducer<ThrottleSeen>) {
    let value = vec![b'x'; 100_000];
    for _ in 0..30 {
        producer
            .send(
                FutureRecord::<(), _>::to("metered").payload(&value),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
}

fn throttle_metric(text: &str, client: &str) -> f64 {
    quota_metric(text, client, "producer_byte_rate")
}

fn quota_metric(text: &str, client: &str, quota: &str) -> f64 {
    let prefix =
        format!("wharf_kafka_throttle_time_ms_total{{client_id=\"{client}\",quota=\"{quota}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_byte_rate_is_throttled_and_others_are_not() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "metered", 1, &[])
        .await
        .unwrap();
    assert_eq!(
        wharf(
            &addr,
            &[
                "set",
                "--client-id",
                "slow",
                "--producer-byte-rate",
                "1000000"
            ]
        )
        .trim(),
        "quota updated"
    );
    let listed = wharf(&addr, &["describe"]);
    assert!(
        listed.contains("client-id=slow")
            && listed.contains("producer_byte_rate")
            && listed.contains("1000000"),
        "{listed}"
    );
    // An unknown quota key is refused, not stored.
    let bad = Command::new(wharf_bin())
        .args([
            "quota",
            "--bootstrap-server",
            &addr,
            "remove",
            "--client-id",
            "slow",
            "--key",
            "request_rate",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let slow_seen = ThrottleSeen::default();
    let fast_seen = ThrottleSeen::default();
    let slow = producer(&addr, "slow", slow_seen.clone());
    let fast = producer(&addr, "fast", fast_seen.clone());
    tokio::join!(send_3mb(&slow), send_3mb(&fast));
    eventually(
        "librdkafka reports the broker's throttle time for the slow client",
        || *slow_seen.0.lock().unwrap() > 0,
    );
    let (_, text) = get(&broker.admin_addr().unwrap(), "/metrics");
    assert!(throttle_metric(&text, "slow") > 0.0, "{text}");
    assert!(
        throttle_metric(&text, "fast") <= 0.0,
        "the unlimited client was held back"
    );
    assert_eq!(
        *fast_seen.0.lock().unwrap(),
        0,
        "the unlimited client was never throttled"
    );

    // Quotas are saved: after a restart they are still there; removing one works.
    broker.restart().unwrap();
    assert!(wharf(&addr, &["describe", "--client-id", "slow"]).contains("1000000"));
    wharf(&addr, &["remove", "--client-id", "slow"]);
    assert!(!wharf(&addr, &["describe"]).contains("slow"));
}

/// Small produce requests one at a time, each waiting for its answer.
async fn send_small(producer: &FutureProducer<ThrottleSeen>, count: usize) {
    for i in 0..count {
        let value = i.to_string();
        producer
            .send(
                FutureRecord::<(), _>::to("metered").payload(&value),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_request_percentage_is_throttled_and_others_are_not() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "metered", 1, &[])
        .await
        .unwrap();
    // 0.1 % of a thread: 1 ms of request handling per second, a few produce requests.
    wharf(
        &addr,
        &["set", "--client-id", "busy", "--request-percentage", "0.1"],
    );
    let listed = wharf(&addr, &["describe"]);
    assert!(
        listed.contains("client-id=busy") && listed.contains("request_percentage"),
        "{listed}"
    );
    let busy_seen = ThrottleSeen::default();
    let idle_seen = ThrottleSeen::default();
    let busy = producer(&addr, "busy", busy_seen.clone());
    let idle = producer(&addr, "idle", idle_seen.clone());
    tokio::join!(send_small(&busy, 20), send_small(&idle, 20));
    eventually(
        "librdkafka reports a throttle time for the client over its request quota",
        || *busy_seen.0.lock().unwrap() > 0,
    );
    let (_, text) = get(&broker.admin_addr().unwrap(), "/metrics");
    assert!(
        quota_metric(&text, "busy", "request_percentage") > 0.0,
        "{text}"
    );
    assert!(
        quota_metric(&text, "idle", "request_percentage") <= 0.0,
        "the unlimited client was held back"
    );
    assert_eq!(
        *idle_seen.0.lock().unwrap(),
        0,
        "the unlimited client was throttled"
    );
}
