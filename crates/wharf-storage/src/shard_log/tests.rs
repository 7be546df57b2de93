//! The shard-log conformance suite, run here against the local shard; a replicated shard log
//! runs the same `conformance` steps.

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader};

use super::{ShardEntry, ShardLog};
use crate::{Durability, LogConfig, Position, Storage, StorageConfig};

fn batch(value: &str) -> Bytes {
    let mut b = BatchBuilder::new(1);
    b.push(None, Some(value.as_bytes()), &[], 1);
    Bytes::from(b.build())
}

fn value_of(entry: &ShardEntry) -> String {
    let h = BatchHeader::parse_checked(&entry.batches).unwrap();
    let r = wharf_record::RecordIter::new(&h)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    String::from_utf8(r.value.unwrap().to_vec()).unwrap()
}

fn open(dir: &std::path::Path) -> Storage {
    let mut c = StorageConfig::new(dir);
    c.shards = 1;
    c.segment_bytes = 1024;
    Storage::open(c).unwrap()
}

/// append → positions in order; committed reaches each synced entry; read returns the entries
/// in order with their logs and offsets; truncate drops the rest and moves offsets back.
async fn conformance(storage: &Storage, shard: &impl ShardLog) {
    let logs = [
        storage.create_log(2, LogConfig::default()),
        storage.create_log(4, LogConfig::default()),
    ];
    let mut ends: Vec<Position> = Vec::new();
    for i in 0..30 {
        let log = &logs[i % 2];
        let info = shard
            .append(log, batch(&format!("v{i}")), Durability::Synced)
            .unwrap()
            .wait_appended()
            .await
            .unwrap();
        assert_eq!(info.info.base_offset, (i / 2) as i64);
        assert!(
            ends.last().is_none_or(|e| *e < info.position),
            "positions grow"
        );
        assert!(
            *shard.committed().borrow() >= info.position,
            "a synced entry is committed"
        );
        ends.push(info.position);
    }
    let all = shard.read(Position::default(), usize::MAX).unwrap();
    assert_eq!(all.len(), 30);
    for (i, entry) in all.iter().enumerate() {
        assert_eq!(entry.log_id, if i % 2 == 0 { 2 } else { 4 });
        assert_eq!(entry.base_offset, (i / 2) as i64);
        assert_eq!(entry.end, ends[i]);
        assert_eq!(value_of(entry), format!("v{i}"));
    }
    let tail = shard.read(ends[9], 1).unwrap();
    assert_eq!(tail.len(), 1, "at least one entry, even over max_bytes");
    assert_eq!(value_of(&tail[0]), "v10");
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
