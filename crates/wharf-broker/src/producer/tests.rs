//! The driver against a real broker on a temporary directory: duplicates, ids, restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use wharf_record::BatchBuilder;

use crate::{Acks, Broker, BrokerConfig, BrokerError, ProducerError, StorageConfig, TopicSpec};

fn open(dir: &std::path::Path) -> Arc<Broker> {
    let mut sc = StorageConfig::new(dir);
    sc.shards = 1;
    Broker::open(BrokerConfig::default(), sc).unwrap()
}

fn batch(producer_id: i64, epoch: i16, seq: i32, records: usize) -> Bytes {
    let mut b = BatchBuilder::new(1_000).producer(producer_id, epoch, seq);
    for i in 0..records {
        b.push(None, Some(format!("{seq}+{i}").as_bytes()), &[], 1_000);
    }
    Bytes::from(b.build())
}

fn create(b: &Broker) {
    let spec = TopicSpec {
        name: "t".into(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::new(),
    };
    b.create_topic(&spec, false).unwrap();
}

async fn produce(b: &Broker, records: Bytes) -> Result<i64, BrokerError> {
    b.produce("t", 0, records, Acks::All)
        .await
        .map(|o| o.base_offset)
}

#[tokio::test]
async fn a_retry_gets_the_original_offset_and_is_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b);
    let (pid, epoch) = b.init_producer_id(None).unwrap();
    assert_eq!(produce(&b, batch(pid, epoch, 0, 3)).await.unwrap(), 0);
    assert_eq!(produce(&b, batch(pid, epoch, 3, 2)).await.unwrap(), 3);
    assert_eq!(produce(&b, batch(pid, epoch, 0, 3)).await.unwrap(), 0);
    assert_eq!(b.partition("t", 0).unwrap().log.high_watermark(), 5);
    assert!(matches!(
        produce(&b, batch(pid, epoch, 9, 1)).await,
        Err(BrokerError::Producer(ProducerError::OutOfOrder {
            expected: 5,
            ..
        }))
    ));
    // A retry submitted while its original is in flight waits for it.
    let first = b
        .submit_produce("t", 0, batch(pid, epoch, 5, 1), Acks::All)
        .unwrap();
    let retry = b
        .submit_produce("t", 0, batch(pid, epoch, 5, 1), Acks::All)
        .unwrap();
    assert_eq!(retry.wait().await.unwrap().base_offset, 5);
    assert_eq!(first.wait().await.unwrap().base_offset, 5);
    assert_eq!(b.partition("t", 0).unwrap().log.high_watermark(), 6);
}

#[tokio::test]
async fn producer_ids_are_never_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let b = open(dir.path());
        let (a, _) = b.init_producer_id(None).unwrap();
        let (c, _) = b.init_producer_id(None).unwrap();
        assert!(c > a);
        c
    };
    let b = open(dir.path());
    assert!(b.init_producer_id(None).unwrap().0 > first);
    assert!(matches!(
        b.init_producer_id(Some("txn")),
        Err(BrokerError::Producer(
            ProducerError::TransactionsUnsupported { .. }
        ))
    ));
}

#[tokio::test]
async fn retries_are_recognised_after_a_crash_and_after_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let pid = {
        let b = open(dir.path());
        create(&b);
        let (pid, _) = b.init_producer_id(None).unwrap();
        for seq in 0..4 {
            produce(&b, batch(pid, 0, seq * 2, 2)).await.unwrap();
        }
        // Dropped without shutdown: no snapshot; the log is replayed.
        pid
    };
    {
        let b = open(dir.path());
        assert_eq!(produce(&b, batch(pid, 0, 6, 2)).await.unwrap(), 6);
        assert!(matches!(
            produce(&b, batch(pid, 0, 9, 1)).await,
            Err(BrokerError::Producer(ProducerError::OutOfOrder { .. }))
        ));
        assert_eq!(produce(&b, batch(pid, 0, 8, 1)).await.unwrap(), 8);
        b.shutdown().await;
    }
    assert!(dir.path().join("producer_state.json").exists());
    let b = open(dir.path());
    assert_eq!(produce(&b, batch(pid, 0, 8, 1)).await.unwrap(), 8);
    assert_eq!(produce(&b, batch(pid, 0, 9, 1)).await.unwrap(), 9);
    assert_eq!(b.partition("t", 0).unwrap().log.high_watermark(), 10);
}
