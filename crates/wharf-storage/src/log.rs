//! [`Log`], one partition's handle: append through its shard's writer, read stored batches,
//! offsets, timestamps, DeleteRecords. The state behind it is `index::LogShared`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};
use wharf_record::{BatchHeader, RecordIter};

use crate::index::{read_lock, write_lock, LogShared};
use crate::registry::Registry;
use crate::segment::Segment;
use crate::shard::{AppendInfo, AppendRequest, Appended, Durability, ShardHandle};
use crate::{LogConfig, LogId, StorageError};

/// An append handed to the shard writer.
pub struct PendingAppend {
    rx: oneshot::Receiver<Result<Appended, StorageError>>,
    /// With stage stamps on: when the writer replied, and where the wake-up is recorded.
    ack: Option<(Arc<OnceLock<Instant>>, metrics::Histogram)>,
}

impl PendingAppend {
    /// An append completed by another implementation of the shard-log contract (replication):
    /// the sender completes the returned handle.
    pub fn channel() -> (oneshot::Sender<Result<Appended, StorageError>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Self { rx, ack: None })
    }

    pub async fn wait(self) -> Result<AppendInfo, StorageError> {
        Ok(self.wait_appended().await?.info)
    }

    /// The offsets and the entry's end position in the shard log.
    pub async fn wait_appended(self) -> Result<Appended, StorageError> {
        let appended = self.rx.await.map_err(|_| StorageError::ShutDown)?;
        if let Some((replied, histogram)) = &self.ack {
            crate::stage::record_since(histogram, replied.get().copied());
        }
        appended
    }
}

/// Batches read from a log, stored bytes as they are.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// The first record at or after a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampMatch {
    pub offset: i64,
    pub timestamp: i64,
}

/// Checks the CRC-32C of every batch read from disk, so damaged bytes are never served.
fn verify_batches(segment: &Segment, position: u64, bytes: &[u8]) -> Result<(), StorageError> {
    // The active segment was checked entry by entry at recovery or written by this process;
    // sealed segments (cold data, loaded through their index files) are checked on read.
    if !segment.sealed.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(());
    }
    let mut at = 0usize;
    while at < bytes.len() {
        match BatchHeader::parse_checked(&bytes[at..]) {
            Ok(h) => at += h.len(),
            Err(error) => {
                let position = position + at as u64;
                tracing::error!(segment = %segment.path.display(), position, %error, "stored batch failed its checksum");
                return Err(StorageError::Corrupt {
                    path: segment.path.clone(),
                    position,
                });
            }
        }
    }
    Ok(())
}

/// A handle on one partition's log. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    pub(crate) shared: Arc<LogShared>,
    pub(crate) shard: ShardHandle,
    pub(crate) registry: Arc<Registry>,
}

impl Log {
    pub fn id(&self) -> LogId {
        self.shared.id
    }

    /// The shard whose log holds this partition's batches.
    pub fn shard_id(&self) -> usize {
        self.shared.shard
    }

    /// Appends one or more batches, already validated by the caller (CRC, magic). The writer
    /// assigns their base offsets. Completes per `durability`.
    pub async fn append(
        &self,
        batches: Bytes,
        durability: Durability,
    ) -> Result<AppendInfo, StorageError> {
        self.submit(batches, durability)?.wait().await
    }

    /// Hands batches to the shard writer now; the returned handle completes like `append`.
    /// Submitting several before waiting lets one group commit cover them all. On a shard
    /// routed through a replicated shard log ([`crate::Storage::route_appends`]) the batches
    /// go through it, so every writer of the shard (partitions, coordinators) is replicated.
    pub fn submit(
        &self,
        batches: Bytes,
        durability: Durability,
    ) -> Result<PendingAppend, StorageError> {
        match self.shard.state.route.get() {
            Some(route) => route.append(self, batches, durability),
            None => self.submit_local(batches, durability),
        }
    }

    /// [`Log::submit`] straight to this node's shard writer, whatever the route.
    pub fn submit_local(
        &self,
        batches: Bytes,
        durability: Durability,
    ) -> Result<PendingAppend, StorageError> {
        self.send_append(batches, durability, false)
    }

    /// The shard log implementations' write (a raft log store writing the entries it was
    /// handed): to this node's shard writer, written even if the log was deleted meanwhile.
    pub(crate) fn submit_entry(
        &self,
        batches: Bytes,
        durability: Durability,
    ) -> Result<PendingAppend, StorageError> {
        self.send_append(batches, durability, true)
    }

    fn send_append(
        &self,
        batches: Bytes,
        durability: Durability,
        even_if_deleted: bool,
    ) -> Result<PendingAppend, StorageError> {
        let (reply, rx) = oneshot::channel();
        let queued = crate::stage::now();
        let replied = queued.map(|_| Arc::new(OnceLock::new()));
        let ack = replied
            .clone()
            .map(|r| (r, self.shard.state.ack_seconds.clone()));
        self.shard.send(AppendRequest {
            log: self.shared.clone(),
            batches,
            durability,
            reply,
            queued,
            replied,
            even_if_deleted,
        })?;
        Ok(PendingAppend { rx, ack })
    }

    pub fn high_watermark(&self) -> i64 {
        self.shared.next_offset.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.shared.log_start.load(Ordering::Acquire)
    }

    /// Bytes of batches held for this log (not counting envelopes).
    pub fn size_bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Acquire)
    }

    pub fn config(&self) -> LogConfig {
        self.shared.config()
    }

    pub fn set_config(&self, config: LogConfig) {
        *write_lock(&self.shared.config) = config;
    }

    /// Registers a waiter woken at the next append to this log.
    pub fn register_waiter(&self, notify: &Arc<Notify>) {
        self.shared.register_waiter(notify);
    }

    /// Where this log's shard's publishes are now (`stage`): taken before parking a fetch.
    pub fn publish_mark(&self) -> crate::stage::PublishMark {
        crate::stage::PublishMark {
            shard: self.shared.shard,
            count: self.shard.state.publishes.count(),
        }
    }

    /// When this log was first published after `mark` (taken on a log of the same shard):
    /// the publish that woke a fetch parked on it. `None` when unknown (stamps off, or too
    /// many publishes since).
    pub fn first_publish_after(&self, mark: crate::stage::PublishMark) -> Option<Instant> {
        if mark.shard != self.shared.shard {
            return None;
        }
        self.shard
            .state
            .publishes
            .first_after(mark.count, &[self.shared.id])
    }

    /// Whether a read from `offset` touches nothing but this log's run in the shard's active
    /// segment (or nothing at all: `offset` is at or past the high watermark). Those bytes
    /// were written moments ago and are in the page cache, so a fetch reads them in place on
    /// its async worker instead of hopping to the blocking pool (ADR 0017).
    pub fn reads_only_active(&self, offset: i64) -> bool {
        if offset >= self.high_watermark() {
            return true;
        }
        read_lock(&self.shared.index).back().is_some_and(|run| {
            offset >= run.base_offset
                && run.slots.is_some()
                && !run.segment.sealed.load(Ordering::Acquire)
        })
    }

    /// Reads whole batches starting with the one holding `offset`, up to `max_bytes` (at least
    /// one batch, so a batch larger than `max_bytes` is never stuck). Blocking: file reads.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, StorageError> {
        let high_watermark = self.high_watermark();
        let log_start_offset = self.log_start_offset();
        if offset < log_start_offset || offset > high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                log_id: self.shared.id,
                offset,
                log_start: log_start_offset,
                high_watermark,
            });
        }
        let picked = self
            .shared
            .pick_for_read(offset, high_watermark, max_bytes)?;
        // Zeroed before the read overwrites it (a memset under mimalloc): still cheaper here
        // than a read into untouched memory (`bench/results/2026-11-28-prealloc-ab.md`, end).
        let mut out = vec![0u8; picked.iter().map(|p| p.2 as usize).sum()];
        let mut start = 0;
        for (segment, position, len) in picked {
            let end = start + len as usize;
            segment.read_exact_into(position, &mut out[start..end])?;
            verify_batches(&segment, position, &out[start..end])?;
            start = end;
        }
        Ok(ReadResult {
            records: Bytes::from(out),
            high_watermark,
            log_start_offset,
        })
    }

    /// The first record whose timestamp is at or after `timestamp`. Uncompressed batches are
    /// searched record by record; in a compressed batch the batch's first offset is returned.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<TimestampMatch>, StorageError> {
        let start = self.log_start_offset();
        let Some(found) = self.shared.first_at_or_after(timestamp, start)? else {
            return Ok(None);
        };
        let (segment, position, len, max_timestamp) = (
            found.segment,
            found.position,
            found.len,
            found.max_timestamp,
        );
        let mut bytes = Vec::with_capacity(len as usize);
        segment.read_into(position, len as usize, &mut bytes)?;
        let corrupt = || StorageError::Corrupt {
            path: segment.path.clone(),
            position,
        };
        let header = BatchHeader::parse(&bytes).map_err(|_| corrupt())?;
        let fallback = TimestampMatch {
            offset: header.base_offset().max(start),
            timestamp: max_timestamp,
        };
        let Ok(records) = RecordIter::new(&header) else {
            return Ok(Some(fallback));
        };
        for record in records {
            let record = record.map_err(|_| corrupt())?;
            if record.timestamp >= timestamp && record.offset >= start {
                return Ok(Some(TimestampMatch {
                    offset: record.offset,
                    timestamp: record.timestamp,
                }));
            }
        }
        Ok(Some(fallback))
    }

    /// Moves the log start offset to `offset` (Kafka's DeleteRecords); `-1` means the high
    /// watermark. Persisted before it returns.
    pub fn delete_records(&self, offset: i64) -> Result<i64, StorageError> {
        let high_watermark = self.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                log_id: self.shared.id,
                offset,
                log_start: self.log_start_offset(),
                high_watermark,
            });
        }
        let previous = self.shared.log_start.fetch_max(target, Ordering::AcqRel);
        if target > previous {
            self.shared.prune_index();
            self.registry.persist_log_starts()?;
        }
        Ok(self.log_start_offset())
    }
}
