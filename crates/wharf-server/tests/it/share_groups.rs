//! Share groups (KIP-932) with retry backoff and a dead-letter topic, driven by the real
//! client: confluent-kafka's `ShareConsumer` (librdkafka's share consumer) in the venv of
//! `scripts/test`, against a broker process.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::fetch_sessions::python;
use crate::{start_broker, wharf_bin};

const CLIENT: &str = include_str!("share_client.py");

/// Runs the client to completion; its stdout lines.
fn run(args: &[&str]) -> Vec<String> {
    let out = Command::new(python())
        .arg("-c")
        .arg(CLIENT)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "share client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `wharf share ARGS` against `addr`; its stdout.
fn share_cli(addr: &str, args: &[&str]) -> String {
    let out = Command::new(wharf_bin())
        .args(["share", "--bootstrap-server", addr])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wharf share {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running client whose lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg("-c")
            .arg(CLIENT)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 90 s) for a line equal to `line`.
    fn wait_for(&mut self, line: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::time::Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let done = l == line;
                self.seen.push(l);
                if done {
                    return;
                }
            }
        }
        panic!("no {line:?} from the client; saw {:?}", self.seen);
    }

    /// Waits for the client to exit; every line it printed.
    fn finish(mut self) -> Vec<String> {
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        assert!(status.success(), "client failed: {:?}", self.seen);
        self.seen
    }

    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen.extend(self.lines.try_iter());
        self.seen
    }
}

/// A delivery the client printed.
#[derive(Debug, Clone)]
struct Got {
    offset: i64,
    delivery_count: i64,
    key: String,
    at_ms: i64,
}

fn got(lines: &[String]) -> Vec<Got> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.first() == Some(&"got")).then(|| Got {
                offset: f[1].parse().unwrap(),
                delivery_count: f[2].parse().unwrap(),
                key: f[3].to_string(),
                at_ms: f[4].parse().unwrap(),
            })
        })
        .collect()
}

/// Offsets whose acknowledgement of `kind` (1 accept, 2 release, 3 reject) was committed.
fn acked(lines: &[String], kind: &str) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.first() == Some(&"acked") && f.get(2) == Some(&kind)).then(|| f[1].parse().unwrap())
        })
        .collect()
}

fn no_errors(lines: &[String]) {
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("error") || l.starts_with("commit-error")),
        "{lines:?}"
    );
}

#[test]
fn three_share_consumers_split_a_partition_and_accept_each_record_once() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    run(&[
        "setup",
        &addr,
        "work",
        "1",
        "g3",
        "share.auto.offset.reset=earliest",
    ]);
    // All three have joined before the records arrive; 2 ms per record: a consumer alone
    // would need 6 s, so all three get work.
    let mut consumers: Vec<Running> = (0..3)
        .map(|_| Running::start(&["consume", &addr, "g3", "work", "accept", "4", "120", "2"]))
        .collect();
    for c in &mut consumers {
        c.wait_for("polling");
    }
    run(&["produce", &addr, "work", "3000"]);
    let outputs: Vec<Vec<String>> = consumers.into_iter().map(Running::finish).collect();
    let mut accepted = Vec::new();
    for lines in &outputs {
        no_errors(lines);
        let mine = acked(lines, "1");
        assert!(!mine.is_empty(), "every consumer received work: {lines:?}");
        accepted.extend(mine);
    }
    let total = accepted.len();
    let distinct: BTreeSet<i64> = accepted.into_iter().collect();
    assert_eq!(total, 3000, "each record accepted exactly once overall");
    assert_eq!(distinct, (0..3000).collect::<BTreeSet<i64>>());
    let describe = share_cli(&addr, &["describe", "g3"]);
    assert!(
        describe.contains(
            "Total: accepted 3000, archived 0, dead-lettered 0, in flight 0, acquired 0, lag 0"
        ),
        "{describe}"
    );
    let list = share_cli(&addr, &["list"]);
    assert!(list.contains("g3") && list.contains("Empty"), "{list}");
}

#[test]
fn a_released_record_comes_back_with_a_higher_delivery_count_after_the_backoff() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    run(&[
        "setup",
        &addr,
        "retry",
        "1",
        "gr",
        "share.auto.offset.reset=earliest",
        "wharf.share.retry.backoff.ms=2000,4000",
    ]);
    run(&["produce", &addr, "retry", "3"]);
    let lines = run(&["consume", &addr, "gr", "retry", "release-once", "5", "60"]);
    no_errors(&lines);
    let deliveries = got(&lines);
    // The time the releases were sent: the client's commit of them.
    let released_at: i64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("committing ").map(|t| t.parse().unwrap()))
        .unwrap();
    for offset in 0..3 {
        let counts: Vec<i64> = deliveries
            .iter()
            .filter(|g| g.offset == offset)
            .map(|g| g.delivery_count)
            .collect();
        assert_eq!(counts, vec![1, 2], "offset {offset}: {lines:?}");
        let again = deliveries
            .iter()
            .find(|g| g.offset == offset && g.delivery_count == 2)
            .unwrap();
        // Not before the first backoff (2 s) counted from the release.
        assert!(
            again.at_ms - released_at >= 1_990,
            "offset {offset} redelivered {} ms after its release",
            again.at_ms - released_at
        );
    }
    assert_eq!(acked(&lines, "1"), vec![0, 1, 2]);
}

#[test]
fn a_consumer_that_dies_holding_records_loses_them_after_the_lock_duration() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    run(&[
        "setup",
        &addr,
        "locks",
        "1",
        "gl",
        "share.auto.offset.reset=earliest",
        "share.record.lock.duration.ms=3000",
    ]);
    run(&["produce", &addr, "locks", "20"]);
    let mut dying = Running::start(&["consume", &addr, "gl", "locks", "die-holding", "5", "60"]);
    dying.wait_for("holding");
    let held: BTreeSet<i64> = got(&dying.kill()).iter().map(|g| g.offset).collect();
    assert!(!held.is_empty());
    let lines = run(&["consume", &addr, "gl", "locks", "accept", "6", "90", "0"]);
    no_errors(&lines);
    let deliveries = got(&lines);
    let offsets: BTreeSet<i64> = deliveries.iter().map(|g| g.offset).collect();
    assert_eq!(offsets, (0..20).collect::<BTreeSet<i64>>(), "{lines:?}");
    for g in deliveries.iter().filter(|g| held.contains(&g.offset)) {
        assert_eq!(
            g.delivery_count, 2,
            "a held record is delivered again: {g:?}"
        );
    }
}

#[test]
fn rejected_and_exhausted_records_land_in_the_dead_letter_topic_once() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    run(&[
        "setup",
        &addr,
        "orders",
        "1",
        "gd",
        "share.auto.offset.reset=earliest",
        "share.delivery.count.limit=3",
        "errors.deadletterqueue.topic.name=dlq.orders",
        "errors.deadletterqueue.copy.record.enable=true",
    ]);
    run(&["produce-one", &addr, "orders", "reject-me", "bad"]);
    run(&["produce-one", &addr, "orders", "release-me", "flaky"]);
    run(&["produce-one", &addr, "orders", "fine", "good"]);
    let lines = run(&["consume", &addr, "gd", "orders", "by-key", "5", "60"]);
    no_errors(&lines);
    let deliveries = got(&lines);
    let count = |key: &str| deliveries.iter().filter(|g| g.key == key).count();
    assert_eq!(
        count("reject-me"),
        1,
        "a rejected record is not delivered again"
    );
    assert_eq!(
        count("release-me"),
        3,
        "delivered up to the limit, then archived"
    );
    assert_eq!(count("fine"), 1);
    let dead = run(&["read", &addr, "dlq.orders", "2"]);
    let mut records: BTreeMap<String, (String, BTreeMap<String, String>)> = BTreeMap::new();
    for l in &dead {
        let f: Vec<&str> = l.splitn(4, ' ').collect();
        let headers = f[3]
            .split(';')
            .map(|h| {
                let (k, v) = h.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        records.insert(f[1].to_string(), (f[2].to_string(), headers));
    }
    assert_eq!(records.len(), 2, "{dead:?}");
    let (value, h) = &records["reject-me"];
    assert_eq!(value, "bad");
    assert_eq!(h["h"], "orig", "original headers are copied");
    assert_eq!(h["__dlq.errors.topic"], "orders");
    assert_eq!(h["__dlq.errors.partition"], "0");
    assert_eq!(h["__dlq.errors.offset"], "0");
    assert_eq!(h["__dlq.errors.group"], "gd");
    assert_eq!(h["__dlq.errors.delivery.count"], "1");
    assert!(!h["__dlq.errors.message"].is_empty());
    let (value, h) = &records["release-me"];
    assert_eq!(value, "flaky");
    assert_eq!(h["__dlq.errors.offset"], "1");
    assert_eq!(h["__dlq.errors.delivery.count"], "3");
    // Exactly two: a third read finds nothing more.
    assert_eq!(run(&["read", &addr, "dlq.orders", "3", "8"]).len(), 2);
    let describe = share_cli(&addr, &["describe", "gd"]);
    assert!(
        describe.contains("Total: accepted 1, archived 2, dead-lettered 2, in flight 0"),
        "{describe}"
    );
    let (status, metrics) = crate::admin_http::get(&broker.admin_addr().unwrap(), "/metrics");
    assert_eq!(status, 200);
    for line in [
        "wharf_share_records_dead_lettered_total{group=\"gd\"} 2",
        "wharf_share_records_archived_total{group=\"gd\"} 2",
        "wharf_share_records_acknowledged_total{group=\"gd\",type=\"reject\"} 1",
        "wharf_share_records_acknowledged_total{group=\"gd\",type=\"release\"} 3",
        "wharf_share_records_redelivered_total{group=\"gd\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[test]
fn kill_9_while_consumers_hold_records_loses_and_repeats_nothing_accepted() {
    let (_dir, mut broker) = start_broker(&[]);
    let addr = broker.addr();
    run(&[
        "setup",
        &addr,
        "crash",
        "1",
        "gk",
        "share.auto.offset.reset=earliest",
    ]);
    run(&["produce", &addr, "crash", "300"]);
    let mut holder = Running::start(&[
        "consume",
        &addr,
        "gk",
        "crash",
        "accept-then-hold",
        "30",
        "120",
        "100",
    ]);
    holder.wait_for("holding");
    broker.kill9().unwrap();
    let before = holder.kill();
    let accepted: BTreeSet<i64> = acked(&before, "1").into_iter().collect();
    let held: BTreeSet<i64> = got(&before)
        .iter()
        .map(|g| g.offset)
        .filter(|o| !accepted.contains(o))
        .collect();
    assert!(accepted.len() >= 100 && !held.is_empty(), "{before:?}");
    broker.restart().unwrap();
    let lines = run(&[
        "consume",
        &broker.addr(),
        "gk",
        "crash",
        "accept",
        "5",
        "90",
        "0",
    ]);
    no_errors(&lines);
    let after: Vec<i64> = got(&lines).iter().map(|g| g.offset).collect();
    let after_set: BTreeSet<i64> = after.iter().copied().collect();
    assert_eq!(
        after.len(),
        after_set.len(),
        "delivered once after the restart"
    );
    assert!(
        accepted.is_disjoint(&after_set),
        "no accepted record is redelivered: {:?}",
        accepted.intersection(&after_set).collect::<Vec<_>>()
    );
    assert!(
        held.is_subset(&after_set),
        "every held record is delivered again"
    );
    let all: BTreeSet<i64> = accepted.union(&after_set).copied().collect();
    assert_eq!(all, (0..300).collect::<BTreeSet<i64>>(), "nothing is lost");
}

/// Start offsets per partition of `group` on `topic` (DescribeShareGroupOffsets).
async fn start_offsets(addr: &str, group: &str) -> Vec<(String, i32, i64)> {
    use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
    use kafka_protocol::messages::{DescribeShareGroupOffsetsRequest, GroupId};
    use kafka_protocol::protocol::StrBytes;
    let mut client = wharf_kafka::Client::connect(addr).await.unwrap();
    let response = client
        .send(
            DescribeShareGroupOffsetsRequest::default().with_groups(vec![
                DescribeShareGroupOffsetsRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                    .with_topics(None),
            ]),
        )
        .await
        .unwrap();
    response.groups[0]
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.topic_name.0.to_string(),
                    p.partition_index,
                    p.start_offset,
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn share_offsets_are_described_reset_and_deleted() {
    use kafka_protocol::messages::delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic;
    use kafka_protocol::messages::{DeleteShareGroupOffsetsRequest, GroupId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    run(&[
        "setup",
        &addr,
        "offs",
        "1",
        "go",
        "share.auto.offset.reset=earliest",
    ]);
    run(&["produce", &addr, "offs", "10"]);
    let first = run(&["consume", &addr, "go", "offs", "accept", "3", "60", "0"]);
    assert_eq!(acked(&first, "1").len(), 10, "{first:?}");
    assert_eq!(
        start_offsets(&addr, "go").await,
        vec![("offs".to_string(), 0, 10)]
    );
    let reset = share_cli(
        &addr,
        &[
            "reset-offsets",
            "go",
            "--topic",
            "offs",
            "--to-earliest",
            "--execute",
        ],
    );
    assert!(reset.contains("Reset 1 partition(s)"), "{reset}");
    assert_eq!(
        start_offsets(&addr, "go").await,
        vec![("offs".to_string(), 0, 0)]
    );
    let again = run(&["consume", &addr, "go", "offs", "accept", "3", "60", "0"]);
    let offsets: Vec<i64> = got(&again).iter().map(|g| g.offset).collect();
    assert_eq!(
        offsets,
        (0..10).collect::<Vec<i64>>(),
        "read again from the start"
    );
    let mut client = wharf_kafka::Client::connect(&addr).await.unwrap();
    let deleted = client
        .send(
            DeleteShareGroupOffsetsRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("go")))
                .with_topics(vec![DeleteShareGroupOffsetsRequestTopic::default()
                    .with_topic_name(TopicName(StrBytes::from_static_str("offs")))]),
        )
        .await
        .unwrap();
    assert_eq!(deleted.responses[0].error_code, 0);
    assert!(start_offsets(&addr, "go").await.is_empty(), "no state left");
}

#[test]
fn read_committed_share_groups_skip_aborted_records() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    run(&[
        "setup",
        &addr,
        "txns",
        "1",
        "gc",
        "share.auto.offset.reset=earliest",
        "share.isolation.level=read_committed",
    ]);
    run(&[
        "setup",
        &addr,
        "txns-all",
        "1",
        "gu",
        "share.auto.offset.reset=earliest",
    ]);
    run(&["produce-txn", &addr, "txns"]);
    run(&["produce-txn", &addr, "txns-all"]);
    let keys =
        |lines: &[String]| -> BTreeSet<String> { got(lines).into_iter().map(|g| g.key).collect() };
    let committed = run(&["consume", &addr, "gc", "txns", "accept", "3", "60", "0"]);
    no_errors(&committed);
    let expected: BTreeSet<String> = (0..5).map(|i| format!("c{i}")).collect();
    assert_eq!(
        keys(&committed),
        expected,
        "only committed records: {committed:?}"
    );
    // The same log read uncommitted delivers the aborted records too.
    let all = run(&["consume", &addr, "gu", "txns-all", "accept", "3", "60", "0"]);
    assert_eq!(keys(&all).len(), 10, "{all:?}");
}
