//! The shard-log conformance suite (`conformance`), run here against the local shard, plus
//! truncation, which only a local shard offers to its caller.

use super::conformance::{append_and_read, batch, value_of};
use super::ShardLog;
use crate::{Durability, Position, Storage, StorageConfig};
use wharf_record::BatchHeader;

fn open(dir: &std::path::Path) -> Storage {
    let mut c = StorageConfig::new(dir);
    c.shards = 1;
    c.segment_bytes = 1024;
    Storage::open(c).unwrap()
}

/// The conformance steps, then: truncate drops the rest and moves offsets back.
async fn conformance(storage: &Storage, shard: &impl ShardLog) {
    let (logs, ends) = append_and_read(storage, shard).await;
    // Truncate after the 11th entry (index 10): log 2 keeps 0..=5, log 4 keeps 0..=4.
    shard.truncate(ends[10]).await.unwrap();
    assert_eq!(
        shard.read(Position::default(), usize::MAX).unwrap().len(),
        11
    );
    assert_eq!((logs[0].high_watermark(), logs[1].high_watermark()), (6, 5));
    assert_eq!(*shard.committed().borrow(), ends[10]);
    let info = shard
        .append(&logs[1], batch("after"), Durability::Synced)
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(info.base_offset, 5, "offsets continue from the truncation");
    let read = logs[1].read(5, 1 << 20).unwrap();
    let h = BatchHeader::parse_checked(&read.records).unwrap();
    assert_eq!(h.base_offset(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_shard_log_conforms_and_truncation_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let shard = storage.shard_log(0).unwrap();
    conformance(&storage, &shard).await;
    storage.shutdown();
    let storage = open(dir.path());
    assert_eq!(storage.log(2).unwrap().high_watermark(), 6);
    assert_eq!(storage.log(4).unwrap().high_watermark(), 6);
    let entries = storage
        .shard_log(0)
        .unwrap()
        .read(Position::default(), usize::MAX)
        .unwrap();
    assert_eq!(entries.len(), 12);
    assert_eq!(value_of(&entries[11]), "after");
    storage.shutdown();
}

/// A shard log is a replica's whole log: an entry for a log deleted meanwhile is still written
/// (a raft log store that lost one would break its index and stop), while a broker's own
/// append to a deleted log is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_log_writes_an_entry_of_a_deleted_log_and_the_broker_path_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let shard = storage.shard_log(0).unwrap();
    let log = storage.create_log(7, crate::LogConfig::default());
    shard
        .append(&log, batch("before"), Durability::Synced)
        .unwrap()
        .wait()
        .await
        .unwrap();
    storage.delete_logs([7]).unwrap();
    let refused = log
        .submit(batch("broker"), Durability::Synced)
        .unwrap()
        .wait()
        .await;
    assert!(
        matches!(refused, Err(crate::StorageError::UnknownLog { log_id: 7 })),
        "{refused:?}"
    );
    shard
        .append(&log, batch("replica"), Durability::Synced)
        .unwrap()
        .wait()
        .await
        .unwrap();
    let entries = shard.read(Position::default(), usize::MAX).unwrap();
    let values: Vec<String> = entries.iter().map(value_of).collect();
    assert_eq!(values, ["before", "replica"]);
    storage.shutdown();
}
