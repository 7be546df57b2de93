//! One partition log's in-memory state: its index (offset → segment and position), offsets,
//! config and fetch waiters, shared by the shard writer (which appends) and readers.
//! Invariant: every offset below `next_offset` and at or above `log_start` is covered by an
//! index entry, pushed before `next_offset` moves past it.
//!
//! Readers never scan the index under its lock: entries carry a running maximum timestamp and
//! a running byte total, so timestamp and size queries are binary searches, and pruning drops
//! entries in bounded slices, so the writer's publish never waits long.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use tokio::sync::Notify;

use crate::segment::{Segment, SegmentEntry};
use crate::{LogConfig, LogId};

/// Entries dropped per write-lock hold when pruning.
const PRUNE_SLICE: usize = 4096;

#[derive(Clone)]
pub(crate) struct IndexEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Largest `max_timestamp` of this entry and every entry pushed before it.
    pub max_timestamp_so_far: i64,
    /// Batch bytes of this entry and every entry pushed before it.
    pub bytes_through: u64,
    pub segment: Arc<Segment>,
    pub position: u64,
    pub len: u32,
}

pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Appends index entries for batches of `segment` (in offset order).
    pub fn push(&self, entries: &[SegmentEntry], segment: &Arc<Segment>) {
        let mut index = write_lock(&self.index);
        let mut added = 0u64;
        for e in entries {
            let (so_far, through) = index
                .back()
                .map_or((i64::MIN, 0), |b| (b.max_timestamp_so_far, b.bytes_through));
            index.push_back(IndexEntry {
                base_offset: e.base_offset,
                last_offset: e.last_offset,
                max_timestamp: e.max_timestamp,
                max_timestamp_so_far: so_far.max(e.max_timestamp),
                bytes_through: through + u64::from(e.len),
                segment: segment.clone(),
                position: e.position,
                len: e.len,
            });
            added += u64::from(e.len);
        }
        self.bytes.fetch_add(added, Ordering::AcqRel);
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

    pub fn register_waiter(&self, notify: &Arc<Notify>) {
        let mut waiters = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        waiters.retain(|w| w.strong_count() > 0);
        waiters.push(Arc::downgrade(notify));
    }

    /// Drops index entries wholly below the log start offset, a slice per lock hold.
    pub fn prune_index(&self) {
        let start = self.log_start.load(Ordering::Acquire);
        loop {
            let mut index = write_lock(&self.index);
            let mut dropped = 0;
            while dropped < PRUNE_SLICE && index.front().is_some_and(|e| e.last_offset < start) {
                if let Some(e) = index.pop_front() {
                    self.bytes.fetch_sub(u64::from(e.len), Ordering::AcqRel);
                }
                dropped += 1;
            }
            if dropped < PRUNE_SLICE {
                return;
            }
        }
    }

    /// Forgets entries at or after `cut` in the shard log; the next offset moves back to the
    /// first one forgotten.
    pub fn truncate_from(&self, cut: crate::Position) {
        let mut index = write_lock(&self.index);
        let mut first_dropped = None;
        while let Some(back) = index.back() {
            let at = crate::Position {
                segment: back.segment.id,
                offset: back.position,
            };
            if at < cut {
                break;
            }
            first_dropped = Some(back.base_offset);
            self.bytes.fetch_sub(u64::from(back.len), Ordering::AcqRel);
            index.pop_back();
        }
        if let Some(base) = first_dropped {
            self.next_offset.fetch_min(base, Ordering::AcqRel);
            self.log_start.fetch_min(base, Ordering::AcqRel);
        }
    }

    /// The first entry at or above `start` holding a timestamp at or after `timestamp`.
    pub fn first_at_or_after(&self, timestamp: i64, start: i64) -> Option<IndexEntry> {
        let index = read_lock(&self.index);
        let from = index.partition_point(|e| e.last_offset < start);
        // Both conditions hold for a prefix of the index, so together they do too.
        let at =
            index.partition_point(|e| e.last_offset < start || e.max_timestamp_so_far < timestamp);
        match index.get(at) {
            // Every earlier entry's running maximum is below `timestamp`: exact.
            Some(e) if e.max_timestamp >= timestamp || at > from => index
                .range(at..)
                .find(|e| e.max_timestamp >= timestamp)
                .cloned(),
            // The running maximum came from a pruned entry; the retained ones are searched.
            Some(_) => index
                .range(from..)
                .find(|e| e.max_timestamp >= timestamp)
                .cloned(),
            None => None,
        }
    }

    /// The start offset retention allows (`retention.ms`, `retention.bytes` at `now`; none
    /// without the `delete` policy), never above the high watermark nor below the current start.
    pub fn retained_start(&self, now: i64) -> i64 {
        let cfg = self.config();
        let start = self.log_start.load(Ordering::Acquire);
        if !cfg.delete {
            return start;
        }
        let high_watermark = self.next_offset.load(Ordering::Acquire);
        let mut new_start = start;
        if cfg.retention_ms >= 0 {
            new_start = self
                .first_at_or_after(now.saturating_sub(cfg.retention_ms), start)
                .map_or(high_watermark, |e| e.base_offset.max(start));
        }
        if cfg.retention_bytes >= 0
            && self.bytes.load(Ordering::Acquire) > cfg.retention_bytes as u64
        {
            let limit = cfg.retention_bytes as u64;
            let index = read_lock(&self.index);
            if let Some(last) = index.back() {
                let total = last.bytes_through;
                // The first entry after which no more than `limit` bytes remain.
                let cut = index.partition_point(|e| total - e.bytes_through > limit);
                if let Some(e) = index.get(cut) {
                    new_start = new_start.max(e.last_offset + 1);
                }
            }
        }
        new_start.min(high_watermark).max(start)
    }
}
