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

#[test]
fn a_snapshot_is_due_after_the_interval_or_after_enough_bytes() {
    use std::time::Duration;

    use super::{snapshot_due, SnapshotPolicy, SNAPSHOT_BYTES, SNAPSHOT_INTERVAL};
    let policy = SnapshotPolicy::default();
    let (second, quick) = (Duration::from_secs(1), Duration::from_millis(5));
    assert!(!snapshot_due(policy, second, 0, quick));
    assert!(!snapshot_due(policy, second, SNAPSHOT_BYTES - 1, quick));
    assert!(snapshot_due(policy, second, SNAPSHOT_BYTES, quick));
    assert!(snapshot_due(policy, SNAPSHOT_INTERVAL, 0, quick));
    // A snapshot that took 200 ms is not repeated for the bytes within 2 s.
    let slow = Duration::from_millis(200);
    assert!(!snapshot_due(policy, second, SNAPSHOT_BYTES, slow));
    assert!(snapshot_due(policy, 2 * second, SNAPSHOT_BYTES, slow));
    assert!(snapshot_due(policy, SNAPSHOT_INTERVAL, 0, 10 * second));
}

/// With the interval at an hour, a snapshot can only come from the bytes written: the file
/// appears, and after a crash (no shutdown snapshot) the producer's sequence continues from
/// that snapshot and the replay of what followed it.
#[tokio::test(flavor = "multi_thread")]
async fn enough_bytes_written_bring_a_snapshot_before_the_interval() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let policy = super::SnapshotPolicy {
        interval: Duration::from_secs(3600),
        bytes: 4 << 10,
    };
    let open_with = |policy| {
        let mut sc = StorageConfig::new(dir.path());
        sc.shards = 1;
        let config = BrokerConfig {
            producer_snapshot: policy,
            ..BrokerConfig::default()
        };
        Broker::open(config, sc).unwrap()
    };
    let path = dir.path().join("producer_state.json");
    let pid = {
        let b = open_with(policy);
        create(&b);
        assert!(!path.exists(), "no snapshot at open");
        let (pid, _) = b.init_producer_id(None).unwrap();
        // 50 idempotent batches of about 350 bytes: more than the 4 KiB threshold.
        for seq in 0..50 {
            produce(&b, batch(pid, 0, seq * 20, 20)).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "no snapshot after 60 s of an hour's interval"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Dropped without shutdown: only the byte-triggered snapshot is on disk.
        pid
    };
    let file = super::store::read(&wharf_storage::RealFs, &path).unwrap();
    let covered = file.logs.values().map(|l| l.offset).max().unwrap_or(0);
    assert!(covered > 0, "the snapshot covers written batches");
    let b = open_with(policy);
    // The producer's sequence continues across the crash (state from snapshot + replay).
    assert_eq!(produce(&b, batch(pid, 0, 1000, 1)).await.unwrap(), 1000);
}

#[tokio::test]
async fn written_bytes_count_what_the_writers_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    create(&b);
    let before = b.storage().written_bytes();
    let records = batch(-1, -1, -1, 100);
    let len = records.len() as u64;
    produce(&b, records).await.unwrap();
    let written = b.storage().written_bytes() - before;
    // The batch and its envelope, nothing else.
    assert!(
        written > len && written < len + 256,
        "{written} bytes written for a batch of {len}"
    );
}
