//! The shard-log conformance steps every [`ShardLog`] implementation runs: the local shard in
//! this crate's tests, the replicated shard log in `wharf-raft`'s (feature `conformance`).

#![allow(clippy::unwrap_used)] // test steps: a failed step is a failed test

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader};

use super::{ShardEntry, ShardLog};
use crate::{Durability, Log, LogConfig, Position, Storage};

/// A one-record batch holding `value`.
pub fn batch(value: &str) -> Bytes {
    let mut b = BatchBuilder::new(1);
    b.push(None, Some(value.as_bytes()), &[], 1);
    Bytes::from(b.build())
}

/// The value of the first record of an entry.
pub fn value_of(entry: &ShardEntry) -> String {
    let h = BatchHeader::parse_checked(&entry.batches).unwrap();
    let r = wharf_record::RecordIter::new(&h)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    String::from_utf8(r.value.unwrap().to_vec()).unwrap()
}

/// append → positions in order; committed reaches each synced entry; read returns the entries
/// in order with their logs and offsets, from the start and from any entry end. `storage` is
/// the storage under `shard` (logs 2 and 4 are created in it, in shard 0 of `shards` = 1 or 2).
/// Returns the two logs and the 30 entry ends.
pub async fn append_and_read(
    storage: &Storage,
    shard: &impl ShardLog,
) -> ([Log; 2], Vec<Position>) {
    let logs = [
        storage.create_log(2, LogConfig::default()),
        storage.create_log(4, LogConfig::default()),
    ];
    let before = shard.read(Position::default(), usize::MAX).unwrap().len();
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
    assert_eq!(
        (
            shard.high_watermark(&logs[0]),
            shard.high_watermark(&logs[1])
        ),
        (15, 15),
        "every committed record is below the high watermark"
    );
    let all: Vec<ShardEntry> = shard
        .read(Position::default(), usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.log_id == 2 || e.log_id == 4)
        .collect();
    assert_eq!(all.len(), 30);
    assert!(
        shard.read(Position::default(), usize::MAX).unwrap().len() >= before + 30,
        "every append is one entry"
    );
    for (i, entry) in all.iter().enumerate() {
        assert_eq!(entry.log_id, if i % 2 == 0 { 2 } else { 4 });
        assert_eq!(entry.base_offset, (i / 2) as i64);
        assert_eq!(entry.end, ends[i]);
        assert_eq!(value_of(entry), format!("v{i}"));
    }
    // Appends submitted together (one group commit) each get their own entry end.
    let pending: Vec<_> = (30..36)
        .map(|i| {
            shard
                .append(&logs[i % 2], batch(&format!("v{i}")), Durability::Synced)
                .unwrap()
        })
        .collect();
    let mut group_ends = Vec::new();
    for p in pending {
        group_ends.push(p.wait_appended().await.unwrap().position);
    }
    let read_back: Vec<Position> = shard
        .read(ends[29], usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.log_id == 2 || e.log_id == 4)
        .map(|e| e.end)
        .collect();
    assert_eq!(read_back, group_ends, "each append's own end position");
    let tail = shard.read(ends[9], 1).unwrap();
    assert_eq!(tail.len(), 1, "at least one entry, even over max_bytes");
    assert_eq!(value_of(&tail[0]), "v10");
    (logs, ends)
}
