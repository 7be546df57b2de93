//! `/metrics` of a real broker process, read with a Prometheus text parser: while librdkafka
//! produces N records and a group consumes and commits M of them, records in = N, the
//! group's lag = N − M (as `wharf group describe` and `/v1/groups` say too), and the
//! Produce latency histogram counts exactly the produce requests sent.
// Samples here are small integer counts, exact in f64.
#![allow(clippy::float_cmp, clippy::cast_precision_loss)]

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use rdkafka::consumer::{CommitMode, Consumer, DefaultConsumerContext};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::admin_http::{get, get_json};
use crate::{eventually, start_broker, wharf_bin};

const TOPIC: &str = "metered";
const GROUP: &str = "metered-group";
const PARTITIONS: i32 = 3;
const N: usize = 150;
const M: usize = 100;

/// Parses a scrape, checking that the parser kept every sample line (it skips what it
/// cannot read) and that every family has TYPE and HELP.
fn scrape(admin: &str) -> Scrape {
    let (status, text) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let sample_lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    let mut buckets = 0;
    let mut histogram_series = 0;
    for s in &parsed.samples {
        if let Value::Histogram(b) = &s.value {
            buckets += b.len();
            histogram_series += 1;
            assert!(
                b.windows(2).all(|w| w[0].count <= w[1].count),
                "{}: buckets are cumulative",
                s.metric
            );
        }
    }
    assert_eq!(
        parsed.samples.len() - histogram_series + buckets,
        sample_lines,
        "every sample line parsed:\n{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("wharf_"), "{line}");
        assert!(
            parsed.docs.contains_key(name),
            "{name} has no HELP:\n{text}"
        );
    }
    if let Ok(out) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
    {
        // promtool, where installed, lints too (exit 3 is lint findings only).
        assert!(
            out.status.success() || out.status.code() == Some(3),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parsed
}

fn find<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
}

fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, metric, labels).map(|x| &x.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("{metric}{labels:?}: {other:?}"),
    }
}

/// LAG cells of `wharf group describe` for `topic`, summed.
fn describe_lag(addr: &str) -> i64 {
    let out = Command::new(wharf_bin())
        .args(["group", "--bootstrap-server", addr, "describe", GROUP])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.len() == 6 && cells[0] == TOPIC)
        .map(|cells| cells[4].parse::<i64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_records_in_group_lag_and_produce_requests() {
    let (_dir, broker) = start_broker(&[("group_initial_rebalance_delay_ms", "300")]);
    let addr = broker.addr();
    let admin = broker.admin_addr().unwrap();
    wharf_testkit::create_topic(&addr, TOPIC, PARTITIONS, &[])
        .await
        .unwrap();
    let before = scrape(&admin);
    // Registered with the topic, at zero until something is produced.
    assert_eq!(
        value(&before, "wharf_topic_records_in_total", &[("topic", TOPIC)]),
        0.0
    );

    // One record per produce request: each send is awaited before the next, nothing lingers.
    let producer = wharf_testkit::producer(&addr, &[("acks", "all"), ("linger.ms", "0")]).unwrap();
    for i in 0..N {
        let value = format!("record-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(i as i32 % PARTITIONS)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    // A group member consumes M records and commits exactly what it consumed.
    let a = addr.clone();
    let admin_addr = admin.clone();
    tokio::task::spawn_blocking(move || {
        let consumer =
            wharf_testkit::group_consumer(&a, GROUP, &[], DefaultConsumerContext).unwrap();
        consumer.subscribe(&[TOPIC]).unwrap();
        let mut next: HashMap<i32, i64> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut consumed = 0;
        while consumed < M {
            assert!(Instant::now() < deadline, "consumed {consumed} of {M}");
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.unwrap();
            next.insert(m.partition(), m.offset() + 1);
            consumed += 1;
        }
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            let offset = next.get(&p).copied().unwrap_or(0);
            tpl.add_partition_offset(TOPIC, p, Offset::Offset(offset))
                .unwrap();
        }
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
        // The live member and its assignment, as the admin API shows them.
        let group = get_json(&admin_addr, &format!("/v1/groups/{GROUP}"));
        assert_eq!(group["state"], "Stable", "{group}");
        let members = group["members"].as_array().unwrap();
        assert_eq!(members.len(), 1, "{group}");
        assert_eq!(
            members[0]["assignment"].as_array().unwrap().len(),
            PARTITIONS as usize,
            "{group}"
        );
        assert_eq!(
            group["offsets"].as_array().unwrap().len(),
            PARTITIONS as usize
        );
    })
    .await
    .unwrap();

    let lag = (N - M) as f64;
    let s = scrape(&admin);
    assert_eq!(
        value(&s, "wharf_topic_records_in_total", &[("topic", TOPIC)]),
        N as f64
    );
    assert!(value(&s, "wharf_topic_bytes_in_total", &[("topic", TOPIC)]) > 0.0);
    assert!(value(&s, "wharf_topic_records_out_total", &[("topic", TOPIC)]) >= M as f64);
    assert_eq!(
        value(&s, "wharf_group_lag_records", &[("group", GROUP)]),
        lag
    );
    let partition_lags: f64 = (0..PARTITIONS)
        .map(|p| {
            value(
                &s,
                "wharf_group_partition_lag_records",
                &[
                    ("group", GROUP),
                    ("topic", TOPIC),
                    ("partition", &p.to_string()),
                ],
            )
        })
        .sum();
    assert_eq!(partition_lags, lag);
    assert_eq!(describe_lag(&addr), (N - M) as i64);
    assert_eq!(
        get_json(&admin, &format!("/v1/groups/{GROUP}"))["lag"],
        (N - M) as i64
    );

    let produce = [("api", "Produce")];
    assert_eq!(
        value(&s, "wharf_kafka_request_duration_seconds_count", &produce),
        N as f64
    );
    assert_eq!(value(&s, "wharf_kafka_requests_total", &produce), N as f64);
    match &find(&s, "wharf_kafka_request_duration_seconds", &produce)
        .unwrap()
        .value
    {
        Value::Histogram(buckets) => {
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
            assert_eq!(inf.count, N as f64);
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert_eq!(value(&s, "wharf_kafka_request_errors_total", &produce), 0.0);
    assert!(value(&s, "wharf_kafka_requests_total", &[("api", "Fetch")]) > 0.0);
    assert!(value(&s, "wharf_topic_disk_bytes", &[("topic", TOPIC)]) > 0.0);
    assert!(value(&s, "wharf_kafka_connections", &[]) >= 1.0);
    assert!(find(&s, "wharf_storage_fdatasync_duration_seconds", &[]).is_some());
    assert!(find(&s, "wharf_storage_group_commit_appends", &[]).is_some());
    assert_eq!(
        value(&s, "wharf_storage_shard_poisoned", &[("shard", "0")]),
        0.0
    );
    assert!(!s
        .samples
        .iter()
        .any(|x| x.metric.contains("under_replicated")));
    dashboard_uses_only_these_metrics(&s);

    // The group's lag follows the log: N more records, nothing committed.
    for i in 0..PARTITIONS {
        producer
            .send(
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(i)
                    .payload("more"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    eventually("lag grows with the log", || {
        value(
            &scrape(&admin),
            "wharf_group_lag_records",
            &[("group", GROUP)],
        ) == lag + f64::from(PARTITIONS)
    });
}

/// Every `wharf_*` metric the Grafana dashboard queries is one this scrape holds.
fn dashboard_uses_only_these_metrics(s: &Scrape) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/wharf.json"
    );
    let dashboard = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).unwrap();
    let mut rest = dashboard.as_str();
    let mut checked = 0;
    while let Some(at) = rest.find("wharf_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            s.samples
                .iter()
                .any(|x| x.metric == family || x.metric == name),
            "the dashboard queries {name}, which /metrics does not have"
        );
        checked += 1;
    }
    assert!(checked > 10);
}

/// The stage stamps of ADR 0017: an acks=all produce and the parked fetch that delivers it
/// each add one sample to every stage of their path (counts only, never times).
#[tokio::test(flavor = "multi_thread")]
async fn stage_metrics_count_every_stage_of_a_delivered_produce() {
    const STAGED: &str = "staged";
    const RECORDS: usize = 12;
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    let admin = broker.admin_addr().unwrap();
    wharf_testkit::create_topic(&addr, STAGED, 1, &[])
        .await
        .unwrap();
    let count = |s: &Scrape, metric: &str, stage: &str| {
        find(s, &format!("{metric}_count"), &[("stage", stage)]).map_or(0.0, |x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{metric}{{stage={stage}}}: not a count"),
        })
    };
    let before = scrape(&admin);

    // A consumer reads each record before the next is produced, so its next fetch is parked
    // when the produce arrives and the publish wakes it.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<usize>();
    let a = addr.clone();
    let consumer = std::thread::spawn(move || {
        let consumer = wharf_testkit::base_consumer(&a, &[("fetch.wait.max.ms", "5000")]).unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(STAGED, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = 0;
        while seen < RECORDS && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                m.unwrap();
                seen += 1;
                let _ = seen_tx.send(seen);
            }
        }
        seen
    });
    let producer = wharf_testkit::producer(&addr, &[("acks", "all"), ("linger.ms", "0")]).unwrap();
    for i in 0..RECORDS {
        producer
            .send(
                FutureRecord::<(), _>::to(STAGED)
                    .partition(0)
                    .payload(&format!("staged-{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        let seen = tokio::task::block_in_place(|| seen_rx.recv_timeout(Duration::from_secs(60)));
        assert_eq!(seen, Ok(i + 1), "the consumer received record {i}");
    }
    assert_eq!(consumer.join().unwrap(), RECORDS);

    let after = scrape(&admin);
    let produce = "wharf_produce_stage_seconds";
    let fetch = "wharf_fetch_stage_seconds";
    // One produce request of one partition per record: one sample each, in every stage.
    for stage in [
        "receive",
        "queue",
        "write",
        "fdatasync",
        "publish",
        "ack",
        "response_write",
    ] {
        assert_eq!(
            count(&after, produce, stage) - count(&before, produce, stage),
            RECORDS as f64,
            "produce stage {stage}"
        );
    }
    // Each record came back in a fetch that returned records; parked fetches were woken.
    for stage in ["read", "response_write"] {
        assert!(
            count(&after, fetch, stage) - count(&before, fetch, stage) >= RECORDS as f64,
            "fetch stage {stage}"
        );
    }
    assert!(
        count(&after, fetch, "wake") - count(&before, fetch, "wake") >= 1.0,
        "a parked fetch was woken by a publish"
    );
}

/// The exporter's upkeep (folding histogram samples into buckets) runs on its own thread,
/// never on the async workers where a fold held up every task queued behind it (ADR 0017):
/// its duration histogram fills without any scrape, and the broker has that thread.
#[test]
fn the_metrics_upkeep_runs_on_its_own_thread() {
    let (_dir, broker) = start_broker(&[]);
    let admin = broker.admin_addr().unwrap();
    let pid = broker.pid().unwrap();
    let upkeeps = |s: &Scrape| {
        find(s, "wharf_metrics_upkeep_duration_seconds_count", &[]).map_or(0.0, |x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("wharf_metrics_upkeep_duration_seconds_count: not a count"),
        })
    };
    eventually("two upkeeps, one between two scrapes", || {
        let first = upkeeps(&scrape(&admin));
        std::thread::sleep(Duration::from_secs(1));
        upkeeps(&scrape(&admin)) > first && first >= 1.0
    });
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    assert_eq!(
        threads.iter().filter(|t| *t == "wharf-metrics").count(),
        1,
        "one upkeep thread among {threads:?}"
    );
}

/// Each segment roll is timed: with 64 KiB segments, 320 KB produced roll the shard's
/// segment at least three times, and `wharf_storage_segment_roll_seconds` counts them.
#[tokio::test(flavor = "multi_thread")]
async fn segment_rolls_are_counted_and_timed() {
    const ROLLED: &str = "rolled";
    let (_dir, broker) = start_broker(&[("shards", "1"), ("log_segment_bytes", "65536")]);
    let addr = broker.addr();
    let admin = broker.admin_addr().unwrap();
    wharf_testkit::create_topic(&addr, ROLLED, 1, &[])
        .await
        .unwrap();
    let histogram = |s: &Scrape, name: &str| {
        find(s, name, &[("shard", "0")]).map_or(0.0, |x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name}: not a number"),
        })
    };
    let rolls = |s: &Scrape, suffix: &str| {
        histogram(s, &format!("wharf_storage_segment_roll_seconds_{suffix}"))
    };
    let seals = |s: &Scrape, suffix: &str| {
        histogram(s, &format!("wharf_storage_segment_seal_seconds_{suffix}"))
    };
    let before = scrape(&admin);
    let producer = wharf_testkit::producer(&addr, &[("acks", "all"), ("linger.ms", "0")]).unwrap();
    let value = vec![7u8; 16_000];
    for _ in 0..20 {
        producer
            .send(
                FutureRecord::<(), _>::to(ROLLED).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    eventually("three segment rolls counted", || {
        rolls(&scrape(&admin), "count") - rolls(&before, "count") >= 3.0
    });
    // The syncer seals each rolled segment; an acks=all ack after a roll waits for it.
    eventually("three seals counted", || {
        seals(&scrape(&admin), "count") - seals(&before, "count") >= 3.0
    });
    let after = scrape(&admin);
    assert!(rolls(&after, "sum") > 0.0, "rolls take time");
    assert!(seals(&after, "sum") > 0.0, "seals take time");
}
