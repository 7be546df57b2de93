//! Three `wharf` processes form a cluster from `cluster_listen` / `cluster_peers` (ADR 0012):
//! the broker appends through replicated shard logs, so exactly one node (the shard group's
//! leader) acknowledges an acks=all produce, and every node then serves the same records.

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

/// Every value of partition 0 of `topic` on the node at `addr`, in offset order.
fn values(addr: &str, topic: &str, expected: usize) -> Vec<String> {
    let consumer = wharf_testkit::base_consumer(addr, &[]).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.len() < expected && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            assert_eq!(m.offset(), out.len() as i64, "offsets are dense on {addr}");
            out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert!(
        consumer.poll(Duration::from_millis(500)).is_none(),
        "more records than produced on {addr}"
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_acknowledges_and_every_node_serves_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(&dir);
    // No controller group yet: each node learns the topic from its own CreateTopics.
    for node in &nodes {
        wharf_testkit::create_topic(&node.addr(), "t", 1, &[])
            .await
            .unwrap();
    }
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
    assert_eq!(
        acked.len(),
        20,
        "exactly one node (the leader) acknowledges"
    );
    assert_eq!(refused, 40, "the two followers refuse every produce");
    for node in &nodes {
        assert_eq!(
            values(&node.addr(), "t", acked.len()),
            acked,
            "{}",
            node.addr()
        );
    }
}
