//! KIP-848's consumer group protocol (`group.protocol=consumer`) with librdkafka against a
//! real broker process: the coordinator assigns, three members split 12 partitions (a
//! joining member gets partitions only after their owner gives them up), every record is
//! consumed once with commits carrying the member epoch, a leaving member's partitions move
//! to the others with nothing lost, and a member keeps working across a kill -9 of the broker.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ListGroupsRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::{ClientConfig, Message};

use crate::{start_broker, wharf_bin};

const BROKER: &[(&str, &str)] = &[
    ("group_consumer_heartbeat_interval_ms", "200"),
    ("group_consumer_session_timeout_ms", "6000"),
];
const TOPIC: &str = "kip848";
const PARTITIONS: i32 = 12;

fn consumer(addr: &str, group: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("broker.address.family", "v4")
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    c
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(TopicPartitionListElem::partition)
                .collect()
        })
        .unwrap_or_default()
}

async fn produce(addr: &str, from: usize, to: usize) {
    let p = wharf_testkit::producer(addr, &[("acks", "all")]).unwrap();
    for i in from..to {
        let v = i.to_string();
        let partition = i32::try_from(i).unwrap() % PARTITIONS;
        p.send(
            FutureRecord::<str, str>::to(TOPIC)
                .partition(partition)
                .payload(&v),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
}

/// Polls every consumer, recording (consumer index, value) of each message and committing
/// it synchronously (the commit carries the member epoch), until `done` holds.
fn poll_until(
    consumers: &[&BaseConsumer],
    seen: &mut Vec<(usize, usize)>,
    what: &str,
    mut done: impl FnMut(&[BTreeSet<i32>], &[(usize, usize)]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for (i, c) in consumers.iter().enumerate() {
            if let Some(result) = c.poll(Duration::from_millis(20)) {
                // Transport errors (the broker restarting) are reported and retried by
                // librdkafka itself; what counts is what arrives.
                let m = match result {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("consumer {i}: {e}");
                        continue;
                    }
                };
                let v: usize = std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                seen.push((i, v));
                c.commit_message(&m, CommitMode::Sync).unwrap();
            }
        }
        let sets: Vec<_> = consumers.iter().map(|c| assigned(c)).collect();
        if done(&sets, seen) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}; assignments {sets:?}, {} seen",
            seen.len()
        );
    }
}

fn disjoint_cover(sets: &[BTreeSet<i32>]) -> bool {
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    total == PARTITIONS as usize && union == (0..PARTITIONS).collect()
}

fn values(seen: &[(usize, usize)]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for (_, v) in seen {
        *counts.entry(*v).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_protocol_members_share_partitions_and_hand_them_over() {
    let (_dir, mut broker) = start_broker(BROKER);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, TOPIC, PARTITIONS, &[])
        .await
        .unwrap();
    produce(&addr, 0, 300).await;

    let a = consumer(&addr, "g848");
    let mut seen = Vec::new();
    poll_until(&[&a], &mut seen, "a owns every partition", |sets, _| {
        sets[0].len() == PARTITIONS as usize
    });
    let b = consumer(&addr, "g848");
    let c = consumer(&addr, "g848");
    // While b and c join, no two members own the same partition (librdkafka's view).
    let mut overlap_free = true;
    poll_until(
        &[&a, &b, &c],
        &mut seen,
        "a, b and c split the partitions",
        |sets, _| {
            for (i, x) in sets.iter().enumerate() {
                for y in &sets[i + 1..] {
                    overlap_free &= x.is_disjoint(y);
                }
            }
            disjoint_cover(sets) && sets.iter().all(|s| s.len() == 4)
        },
    );
    assert!(
        overlap_free,
        "a partition was assigned to two members at once"
    );
    produce(&addr, 300, 600).await;
    poll_until(&[&a, &b, &c], &mut seen, "all 600 records", |_, seen| {
        values(seen).len() == 600
    });
    for who in 1..3 {
        assert!(
            seen.iter().any(|(i, _)| *i == who),
            "member {who} consumed nothing"
        );
    }

    // The coordinator's view, through ListGroups and DescribeGroups.
    let out = Command::new(wharf_bin())
        .args(["group", "--bootstrap-server", &addr, "list"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("g848") && l.contains("Stable") && l.contains("consumer")),
        "{listing}"
    );

    // ListGroups v5 types it `consumer`, not `classic`.
    let mut client = wharf_kafka::Client::connect(&addr).await.unwrap();
    let typed = |kind: &'static str| {
        ListGroupsRequest::default().with_types_filter(vec![StrBytes::from_static_str(kind)])
    };
    let consumer_groups = client.send(typed("consumer")).await.unwrap();
    assert!(
        consumer_groups
            .groups
            .iter()
            .any(|g| g.group_id.0.as_str() == "g848" && g.group_type.as_str() == "consumer"),
        "{consumer_groups:?}"
    );
    let classic_groups = client.send(typed("classic")).await.unwrap();
    assert!(
        !classic_groups
            .groups
            .iter()
            .any(|g| g.group_id.0.as_str() == "g848"),
        "{classic_groups:?}"
    );

    // `wharf group describe` shows each partition's owner from ConsumerGroupDescribe.
    let out = Command::new(wharf_bin())
        .args(["group", "--bootstrap-server", &addr, "describe", "g848"])
        .output()
        .unwrap();
    let described = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        described.contains("consumer protocol, uniform assignor"),
        "{described}"
    );
    let owned_rows = described
        .lines()
        .filter(|l| l.starts_with(TOPIC) && !l.trim_end().ends_with('-'))
        .count();
    assert_eq!(owned_rows, PARTITIONS as usize, "{described}");

    // c leaves: a and b take its partitions over and read what c would have.
    drop(c);
    poll_until(
        &[&a, &b],
        &mut seen,
        "a and b own every partition",
        |sets, _| disjoint_cover(sets) && sets.iter().all(|s| s.len() == 6),
    );
    produce(&addr, 600, 720).await;
    poll_until(&[&a, &b], &mut seen, "every record up to 720", |_, s| {
        values(s).len() == 720
    });
    let counts = values(&seen);
    assert!(
        counts.values().all(|n| *n == 1),
        "records consumed twice: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    drop(b);
    poll_until(&[&a], &mut seen, "a owns every partition", |sets, _| {
        sets[0].len() == PARTITIONS as usize
    });

    // kill -9 and restart: the member (its epoch persisted) carries on; nothing committed
    // is delivered again.
    broker.kill9().unwrap();
    broker.restart().unwrap();
    produce(&addr, 720, 840).await;
    let mut seen_after = Vec::new();
    poll_until(
        &[&a],
        &mut seen_after,
        "a reads records after the restart",
        |_, s| values(s).len() == 120,
    );
    assert!(
        seen_after.iter().all(|(_, v)| *v >= 720),
        "records committed before the kill were delivered again"
    );
}
