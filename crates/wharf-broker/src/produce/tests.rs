//! Produce validation against a real broker on a temporary directory: a batch whose record
//! count disagrees with its offset range is refused as corrupt and nothing is written.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use wharf_record::{BatchBuilder, RecordError};

use crate::{Acks, Broker, BrokerConfig, BrokerError, StorageConfig, TopicSpec};

fn open(dir: &std::path::Path) -> Arc<Broker> {
    let mut sc = StorageConfig::new(dir);
    sc.shards = 1;
    let b = Broker::open(BrokerConfig::default(), sc).unwrap();
    let spec = TopicSpec {
        name: "t".into(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::new(),
    };
    b.create_topic(&spec, false).unwrap();
    b
}

fn batch(records: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(1_000);
    for i in 0..records {
        b.push(None, Some(format!("v{i}").as_bytes()), &[], 1_000);
    }
    b.build()
}

/// A batch of `records` records whose records count field says `count`, with the CRC
/// recomputed so the count is the only thing wrong (count at byte 57; the CRC at 17 covers
/// byte 21 onwards).
fn batch_claiming(records: usize, count: i32) -> Bytes {
    let mut bytes = batch(records);
    bytes[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

/// Produces `records`; expects CORRUPT_MESSAGE for `expected`, then checks nothing was
/// written: the next good batch lands at offset 0.
async fn refused_and_nothing_written(records: Bytes, expected: RecordError) {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let result = b.produce("t", 0, records, Acks::All).await;
    assert!(
        matches!(&result, Err(BrokerError::CorruptMessage { source, .. }) if *source == expected),
        "expected CorruptMessage ({expected}), got {result:?}"
    );
    let good = b
        .produce("t", 0, Bytes::from(batch(2)), Acks::All)
        .await
        .unwrap();
    assert_eq!(good.base_offset, 0);
    b.shutdown().await;
}

#[tokio::test]
async fn a_batch_claiming_zero_records_is_corrupt() {
    refused_and_nothing_written(
        batch_claiming(1, 0),
        RecordError::InvalidRecordsCount { records_count: 0 },
    )
    .await;
}

#[tokio::test]
async fn a_batch_claiming_more_records_than_its_offset_range_is_corrupt() {
    // last_offset_delta is 2: three records; the count claims four.
    refused_and_nothing_written(
        batch_claiming(3, 4),
        RecordError::RecordsCountMismatch {
            records_count: 4,
            last_offset_delta: 2,
        },
    )
    .await;
}

#[tokio::test]
async fn a_batch_claiming_fewer_records_than_its_offset_range_is_corrupt() {
    refused_and_nothing_written(
        batch_claiming(3, 2),
        RecordError::RecordsCountMismatch {
            records_count: 2,
            last_offset_delta: 2,
        },
    )
    .await;
}

#[tokio::test]
async fn the_second_of_two_batches_is_checked_too() {
    let mut both = batch(2);
    both.extend_from_slice(&batch_claiming(2, 3));
    refused_and_nothing_written(
        Bytes::from(both),
        RecordError::RecordsCountMismatch {
            records_count: 3,
            last_offset_delta: 1,
        },
    )
    .await;
}

/// A local shard log that counts appends and reports a high watermark one short of the log's:
/// shows that produce appends through, and consumers' high watermark comes from, the shard
/// logs handed to `open_with_shard_logs`.
struct Counting {
    inner: wharf_storage::LocalShardLog,
    appends: Arc<std::sync::atomic::AtomicUsize>,
}

impl wharf_storage::ShardLog for Counting {
    fn append(
        &self,
        log: &wharf_storage::Log,
        batches: Bytes,
        durability: wharf_storage::Durability,
    ) -> Result<wharf_storage::PendingAppend, wharf_storage::StorageError> {
        self.appends
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.append(log, batches, durability)
    }
    fn committed(&self) -> tokio::sync::watch::Receiver<wharf_storage::Position> {
        self.inner.committed()
    }
    fn high_watermark(&self, log: &wharf_storage::Log) -> i64 {
        self.inner.high_watermark(log) - 1
    }
    fn read(
        &self,
        from: wharf_storage::Position,
        max_bytes: usize,
    ) -> Result<Vec<wharf_storage::ShardEntry>, wharf_storage::StorageError> {
        self.inner.read(from, max_bytes)
    }
    fn truncate(&self, at: wharf_storage::Position) -> wharf_storage::Truncating {
        self.inner.truncate(at)
    }
}

#[tokio::test]
async fn produce_appends_through_the_shard_logs_handed_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut sc = StorageConfig::new(dir.path());
    sc.shards = 2;
    let appends = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = appends.clone();
    let b = Broker::open_with_shard_logs(
        BrokerConfig::default(),
        sc,
        Box::new(move |storage| {
            Ok((0..storage.config().shards)
                .map(|shard| {
                    Arc::new(Counting {
                        inner: storage.shard_log(shard).unwrap(),
                        appends: counted.clone(),
                    }) as Arc<dyn wharf_storage::ShardLog>
                })
                .collect())
        }),
    )
    .unwrap();
    let spec = TopicSpec {
        name: "t".into(),
        partitions: 2,
        replication_factor: 1,
        configs: BTreeMap::new(),
    };
    b.create_topic(&spec, false).unwrap();
    let before = appends.load(std::sync::atomic::Ordering::SeqCst);
    for partition in 0..2 {
        b.produce("t", partition, Bytes::from(batch(3)), Acks::All)
            .await
            .unwrap();
    }
    assert_eq!(
        appends.load(std::sync::atomic::Ordering::SeqCst),
        before + 2
    );
    let t = b.topic("t").unwrap();
    assert_eq!(b.high_watermark(&t.partitions[0].log), 2);
    b.shutdown().await;
}

#[tokio::test]
async fn a_factory_with_the_wrong_shard_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sc = StorageConfig::new(dir.path());
    sc.shards = 2;
    let result = Broker::open_with_shard_logs(
        BrokerConfig::default(),
        sc,
        Box::new(|storage| Ok(vec![Arc::new(storage.shard_log(0).unwrap()) as _])),
    );
    assert!(matches!(result, Err(BrokerError::Metadata(_))));
}
