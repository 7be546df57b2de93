//! One partition log's in-memory state: its index (offset → segment and position), offsets,
//! config and fetch waiters, shared by the shard writer (which appends) and readers.
//! Invariant: every offset below `next_offset` and at or above `log_start` is covered by a
//! run, pushed before `next_offset` moves past it.
//!
//! The index is a list of *runs*, one per segment holding batches of the log, in offset
//! order. A run is a summary (first and last offset, largest timestamp, bytes); the run of
//! the active segment also holds its batches' places (slots) in memory. A sealed segment's
//! run is *paged*: its slots are read back from the segment's index file through the
//! [`Pager`] when needed (ADR 0018), so memory grows with segments, not with batches.
//!
//! Readers never scan slots under the index lock: slots carry a running maximum timestamp
//! and a running byte total within their run, so timestamp and size queries are binary
//! searches, pruning drops slots in bounded slices, and loads of paged runs happen outside
//! the lock, so the writer's publish never waits long.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use tokio::sync::Notify;

use crate::paging::{LoadedIndex, Pager, Slot};
use crate::segment::{Segment, SegmentEntry};
use crate::{LogConfig, LogId, StorageError};

/// Slots dropped per write-lock hold when pruning.
const PRUNE_SLICE: usize = 4096;

/// One batch with its segment, as the cleaner and searches hand it around.
#[derive(Clone)]
pub(crate) struct IndexEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub segment: Arc<Segment>,
    pub position: u64,
    pub len: u32,
}

impl IndexEntry {
    fn new(segment: &Arc<Segment>, s: &Slot) -> Self {
        Self {
            base_offset: s.base_offset,
            last_offset: s.last_offset,
            max_timestamp: s.max_timestamp,
            segment: segment.clone(),
            position: s.position,
            len: s.len,
        }
    }
}

/// A log's batches in one segment: a summary, and the slots when resident.
pub(crate) struct Run {
    pub segment: Arc<Segment>,
    /// Base offset of the first batch held (at or above the log start once pruned).
    pub base_offset: i64,
    pub last_offset: i64,
    /// Largest batch `max_timestamp` of the run (pruned batches included: an upper bound).
    pub max_timestamp: i64,
    /// Batch bytes held.
    pub bytes: u64,
    /// `max_timestamp` of the first batch held: retention by time needs no load when it is
    /// already recent enough.
    pub first_max_timestamp: i64,
    /// The slots, or `None` when paged out (sealed segment: read from its index file).
    pub slots: Option<VecDeque<Slot>>,
    /// CRC of the log's block in the segment's index file (every batch of the log there,
    /// pruned ones too: `segment::block_crc`), to check a block read alone; `None` when
    /// unknown (after a truncation), and the whole file is read and checked instead.
    pub block_crc: Option<u32>,
    /// Where the log's block starts in the index file (entry number; `u64::MAX` unknown),
    /// learnt at the first load so later ones skip the binary search. A stale value costs
    /// only the search: it is checked before use.
    pub block_at: Arc<AtomicU64>,
}

fn unknown_block() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(u64::MAX))
}

impl Run {
    fn resident(segment: Arc<Segment>) -> Self {
        Self {
            segment,
            base_offset: 0,
            last_offset: -1,
            max_timestamp: i64::MIN,
            bytes: 0,
            first_max_timestamp: i64::MIN,
            slots: Some(VecDeque::new()),
            block_crc: Some(0),
            block_at: unknown_block(),
        }
    }

    /// Recomputes the summary of a resident run from its slots (after a repoint or cut).
    fn resummarize(&mut self) {
        let Some(slots) = &self.slots else { return };
        self.base_offset = slots.front().map_or(0, |s| s.base_offset);
        self.first_max_timestamp = slots.front().map_or(i64::MIN, |s| s.max_timestamp);
        self.last_offset = slots.back().map_or(-1, |s| s.last_offset);
        self.max_timestamp = slots
            .iter()
            .map(|s| s.max_timestamp)
            .max()
            .unwrap_or(i64::MIN);
        self.bytes = slots.iter().map(|s| u64::from(s.len)).sum();
    }

    fn is_empty(&self) -> bool {
        self.slots.as_ref().is_some_and(VecDeque::is_empty) || self.last_offset < self.base_offset
    }
}

/// Rebuilds running values of slots in order.
fn rechain(slots: impl IntoIterator<Item = Slot>) -> VecDeque<Slot> {
    let mut out: VecDeque<Slot> = VecDeque::new();
    for s in slots {
        let e = SegmentEntry {
            log_id: 0,
            base_offset: s.base_offset,
            last_offset: s.last_offset,
            max_timestamp: s.max_timestamp,
            position: s.position,
            len: s.len,
        };
        let next = Slot::after(out.back(), &e);
        out.push_back(next);
    }
    out
}

/// Slot access shared by resident (`VecDeque`) and loaded (slice) slots.
trait Slots {
    fn count(&self) -> usize;
    fn at(&self, i: usize) -> &Slot;

    fn partition_point(&self, pred: impl Fn(&Slot) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.at(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

impl Slots for VecDeque<Slot> {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> &Slot {
        &self[i]
    }
}

impl Slots for [Slot] {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> &Slot {
        &self[i]
    }
}

/// The first slot with `last_offset >= start` and `max_timestamp >= timestamp`.
fn search_timestamp<S: Slots + ?Sized>(slots: &S, timestamp: i64, start: i64) -> Option<Slot> {
    let from = slots.partition_point(|e| e.last_offset < start);
    // Both conditions hold for a prefix of the run, so together they do too.
    let at = slots.partition_point(|e| e.last_offset < start || e.max_timestamp_so_far < timestamp);
    let scan_from = match slots.count().checked_sub(1) {
        Some(last) if at <= last => {
            // Every earlier slot's running maximum is below `timestamp`: exact. Otherwise the
            // running maximum came from a slot below `start`; those at or above are searched.
            if slots.at(at).max_timestamp >= timestamp || at > from {
                at
            } else {
                from
            }
        }
        _ => return None,
    };
    (scan_from..slots.count())
        .map(|i| slots.at(i))
        .find(|e| e.max_timestamp >= timestamp)
        .copied()
}

/// Picks slots for a read from `from` on, adding to `picked` and `total`; true when the read
/// is complete (the byte budget is reached or the high watermark passed).
fn pick<S: Slots + ?Sized>(
    slots: &S,
    segment: &Arc<Segment>,
    from: i64,
    high_watermark: i64,
    max_bytes: usize,
    picked: &mut Vec<(Arc<Segment>, u64, u32)>,
    total: &mut usize,
) -> bool {
    let first = slots.partition_point(|e| e.last_offset < from);
    for e in (first..slots.count()).map(|i| slots.at(i)) {
        if e.base_offset >= high_watermark || (*total > 0 && *total + e.len as usize > max_bytes) {
            return true;
        }
        *total += e.len as usize;
        // Adjacent batches of one segment are read with one pread.
        match picked.last_mut() {
            Some((seg, pos, len))
                if Arc::ptr_eq(seg, segment) && *pos + u64::from(*len) == e.position =>
            {
                *len += e.len;
            }
            _ => picked.push((segment.clone(), e.position, e.len)),
        }
        if *total >= max_bytes {
            return true;
        }
    }
    false
}

pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A paged run as seen under the lock, to load outside it.
struct PagedRun {
    segment: Arc<Segment>,
    base_offset: i64,
    last_offset: i64,
    bytes: u64,
    block_crc: Option<u32>,
    block_at: Arc<AtomicU64>,
}

impl PagedRun {
    fn of(run: &Run) -> Self {
        Self {
            segment: run.segment.clone(),
            base_offset: run.base_offset,
            last_offset: run.last_offset,
            bytes: run.bytes,
            block_crc: run.block_crc,
            block_at: run.block_at.clone(),
        }
    }

    fn same(&self, run: &Run) -> bool {
        Arc::ptr_eq(&self.segment, &run.segment)
            && run.slots.is_none()
            && (run.base_offset, run.last_offset, run.bytes)
                == (self.base_offset, self.last_offset, self.bytes)
    }
}

pub(crate) struct LogShared {
    pub id: LogId,
    pub shard: usize,
    pub config: RwLock<LogConfig>,
    pub index: RwLock<VecDeque<Run>>,
    pub next_offset: AtomicI64,
    pub log_start: AtomicI64,
    pub bytes: AtomicU64,
    pub deleted: AtomicBool,
    pub pager: Arc<Pager>,
    waiters: Mutex<Vec<Weak<Notify>>>,
}

impl LogShared {
    pub fn new(id: LogId, shard: usize, config: LogConfig, pager: Arc<Pager>) -> Self {
        Self {
            id,
            shard,
            config: RwLock::new(config),
            index: RwLock::new(VecDeque::new()),
            next_offset: AtomicI64::new(0),
            log_start: AtomicI64::new(0),
            bytes: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            pager,
            waiters: Mutex::new(Vec::new()),
        }
    }

    pub fn config(&self) -> LogConfig {
        *read_lock(&self.config)
    }

    /// Appends slots for batches of `segment` (in offset order). The run before the last is
    /// paged out once its segment is sealed: when the next segment's run starts, or at a
    /// later push, since the syncer seals a rolled segment behind the writer (ADR 0022).
    pub fn push(&self, entries: &[SegmentEntry], segment: &Arc<Segment>) {
        if entries.is_empty() {
            return;
        }
        let mut index = write_lock(&self.index);
        let same = index
            .back()
            .is_some_and(|r| Arc::ptr_eq(&r.segment, segment) && r.slots.is_some());
        if !same {
            index.push_back(Run::resident(segment.clone()));
        }
        if let Some(prev) = index.len().checked_sub(2).and_then(|i| index.get_mut(i)) {
            if prev.slots.is_some() && prev.segment.sealed.load(Ordering::Acquire) {
                prev.slots = None;
            }
        }
        let Some(run) = index.back_mut() else { return };
        let Some(slots) = run.slots.as_mut() else {
            return;
        };
        let mut added = 0u64;
        for e in entries {
            if slots.is_empty() {
                run.base_offset = e.base_offset;
                run.first_max_timestamp = e.max_timestamp;
            }
            let slot = Slot::after(slots.back(), e);
            slots.push_back(slot);
            run.last_offset = e.last_offset;
            run.max_timestamp = run.max_timestamp.max(e.max_timestamp);
            run.block_crc = run
                .block_crc
                .map(|crc| crate::segment::block_crc_append(crc, e));
            added += u64::from(e.len);
        }
        run.bytes += added;
        self.bytes.fetch_add(added, Ordering::AcqRel);
    }

    /// Appends a paged run: the log's batches in sealed `segment` (recovery), not kept.
    pub fn push_paged(&self, entries: &[SegmentEntry], segment: &Arc<Segment>) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let bytes: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
        let run = Run {
            segment: segment.clone(),
            base_offset: first.base_offset,
            last_offset: last.last_offset,
            max_timestamp: entries
                .iter()
                .map(|e| e.max_timestamp)
                .max()
                .unwrap_or(i64::MIN),
            bytes,
            first_max_timestamp: first.max_timestamp,
            slots: None,
            block_crc: Some(crate::segment::block_crc(entries)),
            block_at: unknown_block(),
        };
        write_lock(&self.index).push_back(run);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Drops the slots of runs whose segment is sealed (their index file holds them).
    pub fn page_out(&self) {
        let mut index = write_lock(&self.index);
        for run in index.iter_mut() {
            if run.slots.is_some() && run.segment.sealed.load(Ordering::Acquire) {
                run.slots = None;
            }
        }
    }

    /// The first offset of the index (0 when empty).
    pub fn first_offset(&self) -> i64 {
        read_lock(&self.index).front().map_or(0, |r| r.base_offset)
    }

    /// Runs held, and how many of them have their slots in memory.
    #[cfg(test)]
    pub fn run_counts(&self) -> (usize, usize) {
        let index = read_lock(&self.index);
        let resident = index.iter().filter(|r| r.slots.is_some()).count();
        (index.len(), resident)
    }

    /// The slots of a paged run (cached or loaded), and the index of its first held slot.
    /// The loaded slots must end where the run does: anything else is refused, never served.
    fn paged_slots(
        &self,
        run: &PagedRun,
        epoch: u64,
    ) -> Result<(Arc<LoadedIndex>, usize), StorageError> {
        let hint = Some(run.block_at.load(Ordering::Relaxed)).filter(|&at| at != u64::MAX);
        let loaded = self
            .pager
            .load(&run.segment, self.id, run.block_crc, hint, epoch)?;
        if let Some(at) = loaded.block_at {
            run.block_at.store(at, Ordering::Relaxed);
        }
        let slots = loaded.slots(self.id);
        let first = slots.partition_point(|s| s.base_offset < run.base_offset);
        let fits = slots
            .get(first)
            .is_some_and(|s| s.base_offset == run.base_offset)
            && slots
                .last()
                .is_some_and(|s| s.last_offset == run.last_offset);
        if !fits {
            self.pager.evict(&run.segment);
            tracing::error!(log_id = self.id, segment = %run.segment.path.display(), "sealed segment index does not match the log's batches; not served");
            return Err(StorageError::Corrupt {
                path: crate::segment::index_path(
                    run.segment
                        .path
                        .parent()
                        .unwrap_or(std::path::Path::new(".")),
                    run.segment.id,
                ),
                position: 0,
            });
        }
        Ok((loaded, first))
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

    /// Drops batches wholly below the log start offset: whole runs, then slots of the first
    /// run a slice per lock hold (a paged run's are loaded outside the lock).
    pub fn prune_index(&self) {
        loop {
            let start = self.log_start.load(Ordering::Acquire);
            let epoch = self.pager.epoch();
            let paged = {
                let mut index = write_lock(&self.index);
                while index.front().is_some_and(|r| r.last_offset < start) {
                    if let Some(r) = index.pop_front() {
                        self.bytes.fetch_sub(r.bytes, Ordering::AcqRel);
                    }
                }
                let Some(run) = index.front_mut() else { return };
                if run.base_offset >= start {
                    return;
                }
                match run.slots.as_mut() {
                    Some(slots) => {
                        let mut dropped = 0;
                        let mut freed = 0u64;
                        while dropped < PRUNE_SLICE
                            && slots.front().is_some_and(|e| e.last_offset < start)
                        {
                            if let Some(e) = slots.pop_front() {
                                freed += u64::from(e.len);
                            }
                            dropped += 1;
                        }
                        run.bytes -= freed;
                        self.bytes.fetch_sub(freed, Ordering::AcqRel);
                        if let Some(front) = slots.front() {
                            run.base_offset = front.base_offset;
                            run.first_max_timestamp = front.max_timestamp;
                        }
                        if dropped < PRUNE_SLICE {
                            return;
                        }
                        continue;
                    }
                    None => PagedRun::of(run),
                }
            };
            let (loaded, first) = match self.paged_slots(&paged, epoch) {
                Ok(found) => found,
                Err(error) => {
                    tracing::warn!(log_id = self.id, %error, "cannot load a sealed index to prune; its size stays counted");
                    return;
                }
            };
            let slots = &loaded.slots(self.id)[first..];
            let keep = slots.partition_point(|e| e.last_offset < start);
            let freed: u64 = slots[..keep].iter().map(|e| u64::from(e.len)).sum();
            let mut index = write_lock(&self.index);
            if let (Some(run), Some(kept)) = (index.front_mut(), slots.get(keep)) {
                if paged.same(run) {
                    run.base_offset = kept.base_offset;
                    run.first_max_timestamp = kept.max_timestamp;
                    run.bytes -= freed;
                    self.bytes.fetch_sub(freed, Ordering::AcqRel);
                }
            }
            return;
        }
    }

    /// Forgets batches at or after `cut` in the shard log; the next offset moves back to the
    /// first one forgotten. The cut segment becomes active again: its run is made resident
    /// (its index file is about to go) and cached loads of it and later segments are dropped.
    pub fn truncate_from(&self, cut: crate::Position) {
        let mut index = write_lock(&self.index);
        let mut first_dropped = None;
        let mut target = None;
        while let Some(back) = index.back_mut() {
            if back.segment.id < cut.segment {
                break;
            }
            if back.segment.id > cut.segment {
                first_dropped = Some(back.base_offset);
                self.bytes.fetch_sub(back.bytes, Ordering::AcqRel);
                self.pager.evict(&back.segment);
                index.pop_back();
                continue;
            }
            // Never paged out again: it will be the active segment.
            back.segment.sealed.store(false, Ordering::Release);
            back.block_at = unknown_block();
            target = Some(back.segment.clone());
            if back.slots.is_none() {
                let paged = PagedRun::of(back);
                match self.paged_slots(&paged, self.pager.epoch()) {
                    Ok((loaded, first)) => {
                        let all = loaded.slots(self.id);
                        back.slots = Some(rechain(all[first..].iter().copied()));
                        // The block the next roll writes: every batch before the cut.
                        back.block_crc = Some(
                            all.iter()
                                .filter(|s| s.position < cut.offset)
                                .fold(0, |crc, s| {
                                    crate::segment::block_crc_append(crc, &self.entry_of(s))
                                }),
                        );
                    }
                    Err(error) => {
                        tracing::error!(log_id = self.id, %error, "cannot load the truncated segment's index; its batches of this log are forgotten");
                        back.slots = Some(VecDeque::new());
                        back.block_crc = None;
                    }
                }
            } else {
                // Batches pruned from the front are not held: the block's CRC is unknown.
                back.block_crc = None;
            }
            let Some(slots) = back.slots.as_mut() else {
                break;
            };
            while slots.back().is_some_and(|s| s.position >= cut.offset) {
                if let Some(s) = slots.pop_back() {
                    first_dropped = Some(s.base_offset);
                }
            }
            let before = back.bytes;
            back.resummarize();
            self.bytes
                .fetch_sub(before.saturating_sub(back.bytes), Ordering::AcqRel);
            if back.is_empty() {
                if let Some(s) = index.pop_back() {
                    first_dropped = first_dropped.or(Some(s.base_offset));
                }
            }
            break;
        }
        if let Some(segment) = target {
            self.pager.evict(&segment);
        }
        if let Some(base) = first_dropped {
            self.next_offset.fetch_min(base, Ordering::AcqRel);
            self.log_start.fetch_min(base, Ordering::AcqRel);
        }
    }

    fn entry_of(&self, s: &Slot) -> SegmentEntry {
        SegmentEntry {
            log_id: self.id,
            base_offset: s.base_offset,
            last_offset: s.last_offset,
            max_timestamp: s.max_timestamp,
            position: s.position,
            len: s.len,
        }
    }

    /// Reads the places of batches from `offset` on, up to `max_bytes` (at least one batch),
    /// stopping at the high watermark. Paged runs are loaded outside the index lock.
    pub fn pick_for_read(
        &self,
        offset: i64,
        high_watermark: i64,
        max_bytes: usize,
    ) -> Result<Vec<(Arc<Segment>, u64, u32)>, StorageError> {
        let epoch = self.pager.epoch();
        let mut picked = Vec::new();
        let mut total = 0usize;
        let mut from = offset;
        loop {
            let paged = {
                let index = read_lock(&self.index);
                let first = index.partition_point(|r| r.last_offset < from);
                let mut paged = None;
                for run in index.range(first..) {
                    match &run.slots {
                        None => {
                            paged = Some(PagedRun::of(run));
                            break;
                        }
                        Some(slots) => {
                            let done = pick(
                                slots,
                                &run.segment,
                                from,
                                high_watermark,
                                max_bytes,
                                &mut picked,
                                &mut total,
                            );
                            if done {
                                return Ok(picked);
                            }
                            from = from.max(run.last_offset + 1);
                        }
                    }
                }
                paged
            };
            let Some(paged) = paged else {
                return Ok(picked);
            };
            let (loaded, first) = self.paged_slots(&paged, epoch)?;
            let slots = &loaded.slots(self.id)[first..];
            if pick(
                slots,
                &paged.segment,
                from,
                high_watermark,
                max_bytes,
                &mut picked,
                &mut total,
            ) {
                return Ok(picked);
            }
            from = from.max(paged.last_offset + 1);
        }
    }

    /// The first batch at or above `start` holding a timestamp at or after `timestamp`.
    pub fn first_at_or_after(
        &self,
        timestamp: i64,
        start: i64,
    ) -> Result<Option<IndexEntry>, StorageError> {
        let epoch = self.pager.epoch();
        let mut after = start;
        loop {
            let paged = {
                let index = read_lock(&self.index);
                let first = index.partition_point(|r| r.last_offset < after);
                let mut paged = None;
                for run in index.range(first..) {
                    if run.max_timestamp < timestamp {
                        continue;
                    }
                    let Some(slots) = &run.slots else {
                        paged = Some(PagedRun::of(run));
                        break;
                    };
                    if let Some(s) = search_timestamp(slots, timestamp, start) {
                        return Ok(Some(IndexEntry::new(&run.segment, &s)));
                    }
                }
                paged
            };
            let Some(paged) = paged else { return Ok(None) };
            let (loaded, first) = self.paged_slots(&paged, epoch)?;
            if let Some(s) = search_timestamp(&loaded.slots(self.id)[first..], timestamp, start) {
                return Ok(Some(IndexEntry::new(&paged.segment, &s)));
            }
            after = paged.last_offset + 1;
        }
    }

    /// Every batch held, with its segment, in offset order (the cleaner's view); paged runs
    /// are loaded outside the lock.
    pub fn materialize(&self) -> Result<Vec<IndexEntry>, StorageError> {
        enum Part {
            Resident(Vec<IndexEntry>),
            Paged(PagedRun),
        }
        let epoch = self.pager.epoch();
        let parts: Vec<Part> = read_lock(&self.index)
            .iter()
            .map(|run| match &run.slots {
                Some(slots) => Part::Resident(
                    slots
                        .iter()
                        .map(|s| IndexEntry::new(&run.segment, s))
                        .collect(),
                ),
                None => Part::Paged(PagedRun::of(run)),
            })
            .collect();
        let mut out = Vec::new();
        for part in parts {
            match part {
                Part::Resident(entries) => out.extend(entries),
                Part::Paged(run) => {
                    let (loaded, first) = self.paged_slots(&run, epoch)?;
                    out.extend(
                        loaded.slots(self.id)[first..]
                            .iter()
                            .map(|s| IndexEntry::new(&run.segment, s)),
                    );
                }
            }
        }
        Ok(out)
    }

    /// Points the log's batches in `old` at their place in `new` (the cleaner rewrote it):
    /// `positions` maps every old position of the log's batches there to the new entry, or
    /// `None` when the batch went.
    pub fn repoint(
        &self,
        old: &Arc<Segment>,
        new: &Arc<Segment>,
        positions: &std::collections::HashMap<u64, Option<SegmentEntry>>,
    ) {
        let mut index = write_lock(&self.index);
        let mut freed = 0u64;
        let mut block: Vec<&SegmentEntry> = positions.values().flatten().collect();
        block.sort_unstable_by_key(|e| e.base_offset);
        let block_crc = crate::segment::block_crc(block.iter().copied());
        for run in index.iter_mut().filter(|r| Arc::ptr_eq(&r.segment, old)) {
            run.segment = new.clone();
            run.block_crc = Some(block_crc);
            run.block_at = unknown_block();
            let before = run.bytes;
            if let Some(slots) = run.slots.take() {
                let kept = slots
                    .into_iter()
                    .filter_map(|mut s| match positions.get(&s.position) {
                        Some(Some(moved)) => {
                            s.position = moved.position;
                            s.len = moved.len;
                            Some(s)
                        }
                        Some(None) => None,
                        None => Some(s),
                    });
                run.slots = Some(rechain(kept));
                run.resummarize();
            } else {
                let mut survivors: Vec<&SegmentEntry> = positions
                    .values()
                    .flatten()
                    .filter(|e| e.base_offset >= run.base_offset)
                    .collect();
                survivors.sort_unstable_by_key(|e| e.base_offset);
                if let (Some(first), Some(last)) = (survivors.first(), survivors.last()) {
                    run.base_offset = first.base_offset;
                    run.first_max_timestamp = first.max_timestamp;
                    run.last_offset = last.last_offset;
                    run.max_timestamp = survivors
                        .iter()
                        .map(|e| e.max_timestamp)
                        .max()
                        .unwrap_or(i64::MIN);
                    run.bytes = survivors.iter().map(|e| u64::from(e.len)).sum();
                } else {
                    run.last_offset = run.base_offset - 1;
                    run.bytes = 0;
                }
            }
            freed += before.saturating_sub(run.bytes);
        }
        index.retain(|r| !r.is_empty());
        self.bytes.fetch_sub(freed, Ordering::AcqRel);
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
        let horizon = now.saturating_sub(cfg.retention_ms);
        // The first batch held is recent enough: it is the answer, found without a load.
        let first_recent = read_lock(&self.index)
            .iter()
            .find(|r| r.last_offset >= start)
            .filter(|r| r.base_offset >= start && r.first_max_timestamp >= horizon)
            .map(|r| r.base_offset);
        if let (true, Some(base)) = (cfg.retention_ms >= 0, first_recent) {
            new_start = base;
        } else if cfg.retention_ms >= 0 {
            match self.first_at_or_after(horizon, start) {
                Ok(found) => {
                    new_start = found.map_or(high_watermark, |e| e.base_offset.max(start));
                }
                Err(error) => {
                    tracing::warn!(log_id = self.id, %error, "retention by time skipped: a sealed index cannot be read");
                }
            }
        }
        if cfg.retention_bytes >= 0
            && self.bytes.load(Ordering::Acquire) > cfg.retention_bytes as u64
        {
            match self.size_cut(cfg.retention_bytes as u64) {
                Ok(Some(cut)) => new_start = new_start.max(cut),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(log_id = self.id, %error, "retention by size skipped: a sealed index cannot be read");
                }
            }
        }
        new_start.min(high_watermark).max(start)
    }

    /// The start offset after dropping the oldest batches until no more than `limit` bytes
    /// remain: one past the first batch after which no more than `limit` remain.
    fn size_cut(&self, limit: u64) -> Result<Option<i64>, StorageError> {
        let epoch = self.pager.epoch();
        let (paged, after, total) = {
            let index = read_lock(&self.index);
            let total: u64 = index.iter().map(|r| r.bytes).sum();
            let mut through = 0u64;
            let mut found = None;
            for run in index.iter() {
                through += run.bytes;
                let after = total - through;
                if after <= limit {
                    found = Some((run, after));
                    break;
                }
            }
            let Some((run, after)) = found else {
                return Ok(None);
            };
            match &run.slots {
                Some(slots) => return Ok(Self::cut_in(slots, after, limit)),
                None => (PagedRun::of(run), after, total),
            }
        };
        let (loaded, first) = self.paged_slots(&paged, epoch)?;
        let cut = Self::cut_in(&loaded.slots(self.id)[first..], after, limit);
        // Only if nothing moved meanwhile: a stale answer could drop more than allowed.
        let index = read_lock(&self.index);
        let unchanged = index.iter().map(|r| r.bytes).sum::<u64>() == total
            && index.iter().any(|r| paged.same(r));
        Ok(cut.filter(|_| unchanged))
    }

    /// In one run's held slots, with `after` bytes held after the run: one past the first
    /// slot after which no more than `limit` bytes remain.
    fn cut_in<S: Slots + ?Sized>(slots: &S, after: u64, limit: u64) -> Option<i64> {
        let last = slots.count().checked_sub(1)?;
        let run_total = slots.at(last).bytes_through;
        let i = slots.partition_point(|e| after + (run_total - e.bytes_through) > limit);
        (i <= last).then(|| slots.at(i).last_offset + 1)
    }
}
