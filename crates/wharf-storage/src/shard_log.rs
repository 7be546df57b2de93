//! The shard-log contract: what a partition's owner needs from the log its batches go into,
//! whether that log is one local shard (here) or a shard replicated as a raft log (later).
//!
//! ```text
//!  append(log, batches) ──► Position (end of the entry)     committed() ──► watch<Position>
//!  read(from, max_bytes) ──► entries after a position       truncate(at) ──► drop the rest
//! ```
//!
//! Positions are ordered as the log is; an entry is committed once the committed position is
//! at or past its end (locally: fdatasync-ed).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::watch;

use crate::index::read_lock;
use crate::scan::scan_from;
use crate::shard::{Durability, Position, ShardHandle};
use crate::{Log, LogId, PendingAppend, StorageError};

/// One entry of a shard log: batches of one partition log, with where the entry ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    pub log_id: LogId,
    pub base_offset: i64,
    pub last_offset: i64,
    /// The stored batches, offsets assigned.
    pub batches: Bytes,
    pub end: Position,
}

pub trait ShardLog: Send + Sync {
    /// Appends batches of `log` (which must live in this shard); completes per `durability`
    /// with the offsets and the entry's end position (`PendingAppend::wait_appended`).
    fn append(
        &self,
        log: &Log,
        batches: Bytes,
        durability: Durability,
    ) -> Result<PendingAppend, StorageError>;

    /// The committed position, watched: entries ending at or before it are committed.
    fn committed(&self) -> watch::Receiver<Position>;

    /// The high watermark of `log` (a log of this shard) as consumers may see it: the offset
    /// after its last committed record. Locally that is the last written one (ADR 0003);
    /// replicated, the last one a majority holds.
    fn high_watermark(&self, log: &Log) -> i64;

    /// Entries starting at `from` (an entry end, or the default position for the start of
    /// the oldest retained segment), about `max_bytes` of them but at least one if any.
    fn read(&self, from: Position, max_bytes: usize) -> Result<Vec<ShardEntry>, StorageError>;

    /// Drops every entry at or after `at` (an entry end), with the offsets they held.
    fn truncate(&self, at: Position) -> Truncating;
}

/// The future of [`ShardLog::truncate`], boxed so the broker can hold a `dyn ShardLog`.
pub type Truncating = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send>>;

/// One local shard as a [`ShardLog`]: committed means fdatasync-ed.
#[derive(Clone)]
pub struct LocalShardLog {
    shard: ShardHandle,
}

impl LocalShardLog {
    pub(crate) fn new(shard: ShardHandle) -> Self {
        Self { shard }
    }

    pub fn shard_id(&self) -> usize {
        self.shard.state.id
    }

    /// The start of the oldest retained segment: truncating here empties the shard.
    pub fn start(&self) -> Position {
        read_lock(&self.shard.state.segments)
            .keys()
            .next()
            .map(|&segment| Position { segment, offset: 0 })
            .unwrap_or_default()
    }
}

impl ShardLog for LocalShardLog {
    fn append(
        &self,
        log: &Log,
        batches: Bytes,
        durability: Durability,
    ) -> Result<PendingAppend, StorageError> {
        if log.shared.shard != self.shard.state.id {
            return Err(StorageError::UnknownLog {
                log_id: log.shared.id,
            });
        }
        log.submit_entry(batches, durability)
    }

    fn committed(&self) -> watch::Receiver<Position> {
        self.shard.state.durable.subscribe()
    }

    fn high_watermark(&self, log: &Log) -> i64 {
        log.high_watermark()
    }

    fn read(&self, from: Position, max_bytes: usize) -> Result<Vec<ShardEntry>, StorageError> {
        let segments: Vec<_> = read_lock(&self.shard.state.segments)
            .range(from.segment..)
            .map(|(_, s)| s.clone())
            .collect();
        let mut out: Vec<ShardEntry> = Vec::new();
        let mut total = 0usize;
        for segment in segments {
            let start = if segment.id == from.segment {
                from.offset
            } else {
                0
            };
            let scanned = scan_from(&*segment.file, &segment.path, segment.size(), start)?;
            // Batches of one entry are adjacent; entries are separated by their envelopes.
            let mut groups: Vec<Vec<crate::segment::SegmentEntry>> = Vec::new();
            for e in scanned.entries {
                match groups.last_mut() {
                    Some(g)
                        if g.last().is_some_and(|l| {
                            l.log_id == e.log_id && l.position + u64::from(l.len) == e.position
                        }) =>
                    {
                        g.push(e);
                    }
                    _ => groups.push(vec![e]),
                }
            }
            for group in groups {
                let (Some(first), Some(last)) = (group.first(), group.last()) else {
                    continue;
                };
                let len = (last.position + u64::from(last.len) - first.position) as usize;
                if total > 0 && total + len > max_bytes {
                    return Ok(out);
                }
                let mut bytes = Vec::with_capacity(len);
                segment.read_into(first.position, len, &mut bytes)?;
                total += len;
                out.push(ShardEntry {
                    log_id: first.log_id,
                    base_offset: first.base_offset,
                    last_offset: last.last_offset,
                    batches: Bytes::from(bytes),
                    end: Position {
                        segment: segment.id,
                        offset: last.position + u64::from(last.len),
                    },
                });
            }
        }
        Ok(out)
    }

    fn truncate(&self, at: Position) -> Truncating {
        let shard = self.shard.clone();
        Box::pin(async move { shard.truncate(at).await })
    }
}

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(test)]
mod tests;
