//! Three `wharf` processes form a cluster from `cluster_listen` / `cluster_peers` (ADR 0012):
//! the broker appends through replicated shard logs, so only the shard group's leader
//! acknowledges an acks=all produce, and every node then serves the same records.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use tempfile::TempDir;
use wharf_testkit::{free_port, BrokerProcess};

use crate::wharf_bin;

/// Starts nodes 1..=3 with one shard each on ephemeral ports.
fn start_cluster(dir: &TempDir) -> Vec<BrokerProcess> {
    let ports: Vec<u16> = (0..3).map(|_| free_port().unwrap()).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    (0..3)
        .map(|i| {
            let id = (i + 1).to_string();
            let listen = format!("127.0.0.1:{}", ports[i]);
            BrokerProcess::start(
                wharf_bin(),
                &dir.path().join(format!("n{id}")),
                &[
                    ("node_id", &id),
                    ("shards", "1"),
                    ("cluster_listen", &listen),
                    ("cluster_peers", &peers),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// Every value of partition 0 of `topic` on the node at `addr`, in offset order: at least
/// `at_least` of them, then whatever else arrives before the partition is quiet for a second.
fn values(addr: &str, topic: &str, at_least: usize) -> Vec<String> {
    let consumer = wharf_testkit::base_consumer(addr, &[]).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            assert_eq!(m.offset(), out.len() as i64, "offsets are dense on {addr}");
            out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            quiet_since = std::time::Instant::now();
        } else if out.len() >= at_least && quiet_since.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_acknowledges_and_every_node_serves_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(&dir);
    // Created once: the controller group commits it for every node.
    wharf_testkit::create_topic(&nodes[0].addr(), "t", 1, &[])
        .await
        .unwrap();
    // A node's Metadata names itself the leader (no cluster metadata yet), so a producer
    // bootstrapped on a node writes to that node: only the shard group's leader may ack.
    let mut acked = Vec::new();
    let mut refused = 0;
    for (i, node) in nodes.iter().enumerate() {
        let producer = wharf_testkit::producer(
            &node.addr(),
            &[("acks", "all"), ("message.timeout.ms", "5000")],
        )
        .unwrap();
        // Enqueued together, awaited in order: the refusals time out together.
        let values: Vec<String> = (0..20).map(|j| format!("node{i}-{j}")).collect();
        let deliveries: Vec<_> = values
            .iter()
            .map(|value| {
                producer
                    .send_result(FutureRecord::<(), _>::to("t").partition(0).payload(value))
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        for (value, delivery) in values.into_iter().zip(deliveries) {
            match delivery.await.unwrap() {
                Ok(_) => acked.push(value),
                Err(_) => refused += 1,
            }
        }
    }
    // Elections are timed, so under load leadership may move during the test: what is
    // checked is the safety claim, not who led. Followers refuse (a node whose shard log is
    // local would acknowledge all 60), every node holds the same records at the same dense
    // offsets, and every acknowledged record is among them, in order. A refused produce may
    // still have been committed by a leader that lost its leadership (Kafka's unknown
    // outcome), so a node may hold more than was acknowledged.
    assert!(!acked.is_empty(), "the leader acknowledges");
    assert!(
        refused > 0 && acked.len() < 60,
        "followers refuse produces (acked {}, refused {refused})",
        acked.len()
    );
    let first = values(&nodes[0].addr(), "t", acked.len());
    let mut rest = first.iter();
    for value in &acked {
        assert!(
            rest.any(|v| v == value),
            "acknowledged {value} missing or out of order: {first:?}"
        );
    }
    for node in &nodes[1..] {
        assert_eq!(
            values(&node.addr(), "t", first.len()),
            first,
            "{} serves other records than {}",
            node.addr(),
            nodes[0].addr()
        );
    }
}
