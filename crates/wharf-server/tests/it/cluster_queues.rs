//! The queue engines follow the shard leader in a 3-node cluster (ARCHITECTURE decision 6):
//! delayed messages (`__wharf_scheduled`) and share-group cursors (`__wharf_cursors`) are
//! records in internal logs, replicated with their shard and reloaded by the node that
//! becomes the shard's leader. Each test kills the leader with kill -9 and checks, with the
//! real clients, what the new leader does: delayed records stored before the kill arrive
//! once each; a share group's accepted records stay accepted and its held ones come back.
//!
//! The nodes run `shards=1`: the topic, `__consumer_offsets` and the engines' internal logs
//! then share one shard, so one node leads them all (with several shards an engine's log and
//! the partitions it serves may have different leaders, which is not handled yet: see
//! ADR 0012).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use wharf_testkit::TestCluster;

use crate::fetch_sessions::python;
use crate::wharf_bin;

const CLIENT: &str = include_str!("share_client.py");

/// Three nodes with one shard each.
fn start_cluster(dir: &tempfile::TempDir) -> TestCluster {
    TestCluster::start(wharf_bin(), dir.path(), 3, &[("shards", "1")]).unwrap()
}

/// The node leading `topic`'s partition 0 once every partition has one.
fn leader(cluster: &mut TestCluster, topic: &str) -> u64 {
    cluster
        .wait_for_leaders(topic, Duration::from_secs(60))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(id) = cluster.leader_of(topic, 0) {
            return id;
        }
        assert!(Instant::now() < deadline, "no leader for {topic}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const DELAYED: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn delayed_messages_stored_before_a_leader_kill_arrive_once_from_the_new_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(&dir);
    let bootstrap = cluster.bootstrap();
    wharf_testkit::create_topic(
        &cluster.node(1).addr(),
        "later",
        2,
        &[("wharf.message.type", "delay")],
    )
    .await
    .unwrap();
    let leader = leader(&mut cluster, "later");

    // Every record waits 8 to 12 s: all of them are still in `__wharf_scheduled` when the
    // leader dies (checked below through the high watermarks).
    let producer = wharf_testkit::producer(&bootstrap, &[("message.timeout.ms", "60000")]).unwrap();
    let values: Vec<String> = (0..DELAYED).map(|i| i.to_string()).collect();
    let mut acks = Vec::with_capacity(DELAYED);
    for (i, value) in values.iter().enumerate() {
        let delay = (8_000 + (i * 7_919) % 4_001).to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: "wharf-delay-ms",
            value: Some(delay.as_str()),
        });
        let partition = i32::try_from(i % 2).unwrap();
        let record = FutureRecord::to("later")
            .partition(partition)
            .key(value)
            .payload(value)
            .headers(headers);
        acks.push(producer.send(record, Duration::from_secs(60)));
    }
    for (i, ack) in acks.into_iter().enumerate() {
        let delivery = ack.await.unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
        assert_eq!(delivery.offset, -1, "record {i} is stored to wait");
    }
    drop(producer);

    let consumer: BaseConsumer = wharf_testkit::base_consumer(&bootstrap, &[]).unwrap();
    let visible: i64 = (0..2)
        .map(|p| {
            consumer
                .fetch_watermarks("later", p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    assert!(
        visible < i64::try_from(DELAYED).unwrap(),
        "some records still wait when the leader dies ({visible} delivered already)"
    );
    cluster.kill(leader).unwrap();

    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("later", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let poll_until = |seen: &mut BTreeMap<String, usize>, until: Instant, all: bool| {
        while Instant::now() < until && !(all && seen.len() == DELAYED) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                *seen.entry(value).or_default() += 1;
            }
        }
    };
    poll_until(&mut seen, Instant::now() + Duration::from_secs(120), true);
    assert_eq!(
        seen.len(),
        DELAYED,
        "every delayed record arrives from the new leader"
    );
    // The old leader comes back as a follower: still no record twice.
    cluster.restart(leader).unwrap();
    cluster
        .wait_for_leaders("later", Duration::from_secs(60))
        .unwrap();
    poll_until(&mut seen, Instant::now() + Duration::from_secs(3), false);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        (0..DELAYED).map(|i| i.to_string()).collect(),
        "exactly the produced records"
    );
}

/// Sends a half-message step (`prepare`, `commit`, `rollback`) of transaction `txn_id` to
/// `orders`[0].
async fn half(producer: &rdkafka::producer::FutureProducer, action: &str, txn_id: &str) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "wharf-txn",
            value: Some(action),
        })
        .insert(Header {
            key: "wharf-txn-id",
            value: Some(txn_id),
        })
        .insert(Header {
            key: "wharf-txn-group",
            value: Some("shop"),
        });
    let record = FutureRecord::<str, str>::to("orders")
        .partition(0)
        .key(txn_id)
        .payload(txn_id)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(60))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The keys of every record of `topic`[0] (empty while the topic does not exist).
fn keys_of(bootstrap: &str, topic: &str) -> Vec<String> {
    let consumer: BaseConsumer = wharf_testkit::base_consumer(bootstrap, &[]).unwrap();
    let Ok((_, high)) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) else {
        return Vec::new();
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while i64::try_from(out.len()).unwrap() < high {
        assert!(Instant::now() < deadline, "reading {topic}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn half_messages_prepared_before_a_leader_kill_are_committed_and_checked_back_by_the_new_leader(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(&dir);
    let bootstrap = cluster.bootstrap();
    wharf_testkit::create_topic(
        &cluster.node(1).addr(),
        "orders",
        1,
        &[
            ("wharf.message.type", "transaction"),
            ("wharf.txn.check.after.ms", "8000"),
            ("wharf.txn.check.interval.ms", "60000"),
        ],
    )
    .await
    .unwrap();
    let leader = tokio::task::block_in_place(|| leader(&mut cluster, "orders"));
    let producer = wharf_testkit::producer(&bootstrap, &[("message.timeout.ms", "60000")]).unwrap();
    for id in ["t-commit", "t-rollback", "t-check"] {
        half(&producer, "prepare", id).await;
    }
    tokio::task::block_in_place(|| cluster.kill(leader).unwrap());
    // The new leader knows the prepared records: a commit and a rollback resolve them, and
    // the one left unanswered is checked back (its first check is due 8 s after the prepare).
    half(&producer, "commit", "t-commit").await;
    half(&producer, "rollback", "t-rollback").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tokio::task::block_in_place(|| keys_of(&bootstrap, "wharf.txn-check.shop"))
        .contains(&"t-check".to_string())
    {
        assert!(Instant::now() < deadline, "no check-back of t-check");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    half(&producer, "commit", "t-check").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut visible = tokio::task::block_in_place(|| keys_of(&bootstrap, "orders"));
        visible.sort();
        if visible.len() >= 2 {
            assert_eq!(
                visible,
                ["t-check", "t-commit"],
                "each committed record once, nothing else"
            );
            break;
        }
        assert!(Instant::now() < deadline, "committed records: {visible:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let checks = tokio::task::block_in_place(|| keys_of(&bootstrap, "wharf.txn-check.shop"));
    assert_eq!(
        checks.iter().filter(|k| *k == "t-check").count(),
        1,
        "the unanswered record is checked back once: {checks:?}"
    );
    assert!(
        !checks.contains(&"t-rollback".to_string()),
        "a rolled-back record is never checked back: {checks:?}"
    );
}

/// Runs the share client to completion; its stdout lines.
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

/// A running share client whose lines arrive on a channel.
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
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
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

    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen.extend(self.lines.try_iter());
        self.seen
    }
}

/// (offset, delivery count) of every record the client printed as received.
fn got(lines: &[String]) -> Vec<(i64, i64)> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.first() == Some(&"got")).then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect()
}

/// Offsets whose acknowledgement of `kind` (1 accept) was committed.
fn acked(lines: &[String], kind: &str) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.first() == Some(&"acked") && f.get(2) == Some(&kind)).then(|| f[1].parse().unwrap())
        })
        .collect()
}

const SHARED: i64 = 100;

/// The error code of a ShareGroupHeartbeat joining `group` (subscribed to `work`) sent to
/// the node at `addr` itself.
async fn share_heartbeat(addr: &str, group: &str) -> i16 {
    use kafka_protocol::messages::{GroupId, ShareGroupHeartbeatRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut client = wharf_kafka::Client::connect(addr).await.unwrap();
    let request = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_member_id(StrBytes::from_static_str("cluster-queues-probe-member"))
        .with_member_epoch(0)
        .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_static_str("work"))]));
    client.send(request).await.unwrap().error_code
}

#[tokio::test(flavor = "multi_thread")]
async fn a_share_group_keeps_accepted_records_and_redelivers_held_ones_after_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(&dir);
    let bootstrap = cluster.bootstrap();
    // The group's config is written by the node leading `__wharf_share_groups`; the admin
    // client may send it to any node (a follower hands it to the leader).
    run(&[
        "setup",
        &bootstrap,
        "work",
        "1",
        "gq",
        "share.auto.offset.reset=earliest",
    ]);
    // The shard's leader coordinates every share group (`shards=1`); the others refuse a
    // heartbeat with NOT_COORDINATOR, and the client finds the leader through
    // FindCoordinator.
    let coordinator = leader(&mut cluster, "work");
    for id in cluster.ids() {
        let group = if id == coordinator { "probe" } else { "gq" };
        let code = share_heartbeat(&cluster.node(id).addr(), group).await;
        let expected = if id == coordinator {
            0
        } else {
            ResponseError::NotCoordinator.code()
        };
        assert_eq!(
            code, expected,
            "ShareGroupHeartbeat on node {id} (coordinator {coordinator})"
        );
    }
    run(&["produce", &bootstrap, "work", &SHARED.to_string()]);
    let mut holder = Running::start(&[
        "consume",
        &bootstrap,
        "gq",
        "work",
        "accept-then-hold",
        "30",
        "120",
        "40",
    ]);
    holder.wait_for("holding");
    let killed = leader(&mut cluster, "work");
    cluster.kill(killed).unwrap();
    let before = holder.kill();
    let accepted: BTreeSet<i64> = acked(&before, "1").into_iter().collect();
    let held: BTreeSet<i64> = got(&before)
        .iter()
        .map(|(o, _)| *o)
        .filter(|o| !accepted.contains(o))
        .collect();
    assert!(
        accepted.len() >= 40 && !held.is_empty(),
        "the first consumer accepted some records and held others: {before:?}"
    );

    let lines = run(&[
        "consume", &bootstrap, "gq", "work", "accept", "5", "120", "0",
    ]);
    let after = got(&lines);
    let after_set: BTreeSet<i64> = after.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        after.len(),
        after_set.len(),
        "delivered once after the leader change: {lines:?}"
    );
    assert!(
        accepted.is_disjoint(&after_set),
        "no accepted record is redelivered by the new leader: {:?}",
        accepted.intersection(&after_set).collect::<Vec<_>>()
    );
    assert!(
        held.is_subset(&after_set),
        "every held record is delivered again: missing {:?}",
        held.difference(&after_set).collect::<Vec<_>>()
    );
    for (offset, count) in &after {
        if held.contains(offset) {
            assert!(
                *count >= 2,
                "offset {offset} keeps its first delivery in its count: {lines:?}"
            );
        }
    }
    let all: BTreeSet<i64> = accepted.union(&after_set).copied().collect();
    assert_eq!(
        all,
        (0..SHARED).collect::<BTreeSet<i64>>(),
        "nothing is lost"
    );
}
