//! Kafka's client-visible contract, as librdkafka's own test suite checks it.

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::start_broker;

/// librdkafka sends OffsetCommit and OffsetFetch to the coordinator on one connection: a
/// `committed()` right after an asynchronous commit must see that commit.
#[tokio::test(flavor = "multi_thread")]
async fn committed_sees_the_async_commit_sent_before_it() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.addr();
    wharf_testkit::create_topic(&addr, "ordered", 1, &[])
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let consumer =
            wharf_testkit::base_consumer(&addr, &[("group.id", "ordered-group")]).unwrap();
        // Once the coordinator is known: librdkafka defers a commit made before that, and a
        // committed() meanwhile is not ordered after it by the client itself.
        let mut first = TopicPartitionList::new();
        first
            .add_partition_offset("ordered", 0, Offset::Offset(0))
            .unwrap();
        consumer.commit(&first, CommitMode::Sync).unwrap();
        for offset in 1..=100 {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("ordered", 0, Offset::Offset(offset))
                .unwrap();
            consumer.commit(&tpl, CommitMode::Async).unwrap();
            let committed = consumer
                .committed_offsets(tpl, Duration::from_secs(10))
                .unwrap();
            assert_eq!(
                committed.elements()[0].offset(),
                Offset::Offset(offset),
                "committed() after the asynchronous commit of {offset}"
            );
        }
    })
    .await
    .unwrap();
}
