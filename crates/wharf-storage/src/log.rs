//! One partition's log: its in-memory index and offsets, shared by the shard writer (which
//! appends) and readers. Invariant: every offset below `next_offset` and at or above
//! `log_start` is covered by an index entry, pushed before `next_offset` moves past it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};
use wharf_record::{BatchHeader, RecordIter};

use crate::segment::Segment;
use crate::shard::{AppendRequest, ShardHandle};
use crate::storage::StorageInner;
use crate::{LogConfig, LogId, StorageError};

/// How durable an append must be before it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Complete once written to the OS (acks=0/1); flushed by the background interval.
    Written,
    /// Complete once fdatasync-ed (acks=all).
    Synced,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
}

/// An append handed to the shard writer.
pub struct PendingAppend {
    rx: oneshot::Receiver<Result<AppendInfo, StorageError>>,
}

impl PendingAppend {
    pub async fn wait(self) -> Result<AppendInfo, StorageError> {
        self.rx.await.map_err(|_| StorageError::ShutDown)?
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

#[derive(Clone)]
pub(crate) struct IndexEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub segment: Arc<Segment>,
    pub position: u64,
    pub len: u32,
}

pub(crate) struct LogShared {
    pub id: LogId,
    pub shard: usize,
    pub config: RwLock<LogConfig>,
    pub index: RwLock<VecDeque<IndexEntry>>,
    pub next_offset: AtomicI64,
    pub log_start: AtomicI64,
    pub bytes: AtomicU64,
    pub deleted: AtomicBool,
    waiters: Mutex<Vec<Weak<Notify>>>,
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LogShared {
    pub fn new(id: LogId, shard: usize, config: LogConfig) -> Self {
        Self {
            id,
            shard,
            config: RwLock::new(config),
            index: RwLock::new(VecDeque::new()),
            next_offset: AtomicI64::new(0),
            log_start: AtomicI64::new(0),
            bytes: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
        }
    }

    pub fn config(&self) -> LogConfig {
        *read_lock(&self.config)
    }

    /// Wakes every fetch parked on this log.
    pub fn wake(&self) {
        let waiters = std::mem::take(
            &mut *self
                .waiters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for w in waiters {
            if let Some(n) = w.upgrade() {
                n.notify_one();
            }
        }
    }

    /// Drops index entries wholly below the log start offset.
    pub fn prune_index(&self) {
        let start = self.log_start.load(Ordering::Acquire);
        let mut index = write_lock(&self.index);
        while index.front().is_some_and(|e| e.last_offset < start) {
            if let Some(e) = index.pop_front() {
                self.bytes.fetch_sub(u64::from(e.len), Ordering::AcqRel);
            }
        }
    }
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
    pub(crate) storage: Weak<StorageInner>,
}

impl Log {
    pub fn id(&self) -> LogId {
        self.shared.id
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
    /// Submitting several before waiting lets one group commit cover them all.
    pub fn submit(
        &self,
        batches: Bytes,
        durability: Durability,
    ) -> Result<PendingAppend, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.shard.send(AppendRequest {
            log: self.shared.clone(),
            batches,
            durability,
            reply,
        })?;
        Ok(PendingAppend { rx })
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
        let mut waiters = self
            .shared
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        waiters.retain(|w| w.strong_count() > 0);
        waiters.push(Arc::downgrade(notify));
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
        let mut picked: Vec<(Arc<Segment>, u64, u32)> = Vec::new();
        {
            let index = read_lock(&self.shared.index);
            let first = index.partition_point(|e| e.last_offset < offset);
            let mut total = 0usize;
            for e in index.range(first..) {
                if e.base_offset >= high_watermark
                    || (total > 0 && total + e.len as usize > max_bytes)
                {
                    break;
                }
                total += e.len as usize;
                // Adjacent batches of one segment are read with one pread.
                match picked.last_mut() {
                    Some((seg, pos, len))
                        if Arc::ptr_eq(seg, &e.segment) && *pos + u64::from(*len) == e.position =>
                    {
                        *len += e.len;
                    }
                    _ => picked.push((e.segment.clone(), e.position, e.len)),
                }
                if total >= max_bytes {
                    break;
                }
            }
        }
        let mut out = Vec::with_capacity(picked.iter().map(|p| p.2 as usize).sum());
        for (segment, position, len) in picked {
            let start = out.len();
            segment.read_into(position, len as usize, &mut out)?;
            verify_batches(&segment, position, &out[start..])?;
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
        let found = {
            let index = read_lock(&self.shared.index);
            index
                .iter()
                .find(|e| e.max_timestamp >= timestamp && e.last_offset >= start)
                .map(|e| (e.segment.clone(), e.position, e.len, e.max_timestamp))
        };
        let Some((segment, position, len, max_timestamp)) = found else {
            return Ok(None);
        };
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
            if let Some(storage) = self.storage.upgrade() {
                storage.persist_log_starts()?;
            }
        }
        Ok(self.log_start_offset())
    }
}
