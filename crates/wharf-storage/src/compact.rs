//! Compaction of `cleanup.policy=compact` logs: the latest record per key is kept, older
//! ones and expired tombstones go, offsets never change (gaps appear, as in Kafka).
//!
//! A shard log holds many partitions, so the cleaner rewrites whole sealed segments: every
//! batch of every other log is copied as it is, the compacted logs' batches are filtered. It
//! runs on the housekeeping thread, never on the shard writer, and touches only sealed
//! segments at or below the durable (committed) position. Readers are never blocked: an
//! index entry holds its segment, so a read that started before the swap finishes on the old
//! file (still open), and each log's index is repointed under its lock in one short step.
//!
//! ```text
//!  N.log.tmp ◄─ surviving batches ─ fdatasync
//!  remove N.index ─ fsync dir          (a crash now: old N.log, rescanned at recovery)
//!  rename N.log.tmp ─► N.log ─ fsync dir (a crash now: old or new N.log, rescanned)
//!  write N.index (durable::replace)    then swap the segment in memory, repoint indexes
//! ```
//!
//! Invariants: a log's last batch and every batch at or above its first uncleanable offset
//! (active segment, `min.compaction.lag.ms`, not yet durable) are never touched, so the high
//! watermark recovered after a restart never goes back; data of a transaction aborted in the
//! cleaned range goes, that of a committed one is compacted like any other, that of an open
//! one and every control batch (marker) is copied whole, and so are compressed batches
//! (no codecs here); the last batch of each producer id in the cleaned
//! range and the log's first batch are kept (emptied if none of their records survive), so
//! producer state replays and the log start recovered after a restart stays where it was.
//! A segment left with nothing is deleted (index file first).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use wharf_record::{record_ranges, BatchHeader, RecordIter};

use crate::envelope::{self, ENVELOPE_LEN};
use crate::index::{read_lock, write_lock, IndexEntry, LogShared};
use crate::paging::Pager;
use crate::registry::Registry;
use crate::segment::{self, Segment, SegmentEntry};
use crate::shard::{Position, ShardHandle, ShardState};
use crate::{durable, LogId, StorageError};

/// A step of the segment swap, where tests stop or crash the cleaner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapStep {
    /// The new segment is written and fdatasync-ed under its temporary name.
    Written,
    /// The old index file is removed (and the directory synced).
    IndexRemoved,
    /// The new segment is renamed onto the old name (and the directory synced).
    Renamed,
}

impl SwapStep {
    /// Parses the setting's value (`written`, `index_removed`, `renamed`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "written" => Some(Self::Written),
            "index_removed" => Some(Self::IndexRemoved),
            "renamed" => Some(Self::Renamed),
            _ => None,
        }
    }
}

/// What one cleaner pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub logs_cleaned: usize,
    pub segments_rewritten: usize,
    /// Bytes of the rewritten segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
}

/// Per-log cleaner progress, in memory: after a restart every log is dirty once.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// The first offset not yet cleaned.
    cleaned_through: i64,
    /// Timestamp of the oldest tombstone the last clean kept: it goes once it is older than
    /// `delete.retention.ms` (read at each pass, so a changed config applies at once).
    oldest_tombstone_ms: Option<i64>,
}

#[derive(Default)]
pub(crate) struct Cleaner {
    progress: Mutex<HashMap<LogId, Progress>>,
}

/// What to do with one log in this pass.
struct Plan {
    /// Batches at or above this offset are copied whole.
    clean_end: i64,
    /// Key → offset of its latest record below `clean_end`.
    latest: HashMap<Vec<u8>, i64>,
    /// Producer id → base offset of its last batch below `clean_end`.
    last_of_producer: HashMap<i64, i64>,
    /// Tombstones older than this (record timestamp) are removed.
    tombstone_horizon: i64,
    /// Base offset of the log's first batch: it stays (emptied if need be), so recovery,
    /// which takes a log's start from its first batch, keeps the start where it is.
    first_batch: i64,
    /// Base offsets of transactional batches whose transaction was aborted in the range:
    /// their records all go (Kafka's cleaner removes aborted data).
    aborted: HashSet<i64>,
    /// Base offsets of transactional batches whose transaction committed in the range: they
    /// are compacted like any other batch.
    committed: HashSet<i64>,
}

/// A transactional batch whose marker has not been seen yet.
struct PendingBatch {
    base_offset: i64,
    keys: Vec<(Vec<u8>, i64)>,
}

impl Plan {
    fn note_latest(&mut self, key: &[u8], offset: i64) {
        let slot = self.latest.entry(key.to_vec()).or_insert(offset);
        *slot = (*slot).max(offset);
    }

    /// Adds a batch of the cleanable range (read in offset order) to the key map; a
    /// transaction's records count once its commit marker is seen, an abort marks its
    /// batches for removal, an open one stays whole.
    fn note_batch(
        &mut self,
        header: &BatchHeader<'_>,
        pending: &mut HashMap<i64, Vec<PendingBatch>>,
    ) {
        let records = RecordIter::new(header);
        if header.is_control() {
            // A control record's key: version i16, type i16 (0 abort, 1 commit).
            let commit = records.ok().and_then(|mut r| {
                let key = r.next()?.ok()?.key?;
                Some(i16::from_be_bytes([*key.get(2)?, *key.get(3)?]) == 1)
            });
            let batches = pending.remove(&header.producer_id()).unwrap_or_default();
            match commit {
                Some(true) => {
                    for batch in batches {
                        self.committed.insert(batch.base_offset);
                        for (key, offset) in batch.keys {
                            self.note_latest(&key, offset);
                        }
                    }
                }
                Some(false) => self.aborted.extend(batches.iter().map(|b| b.base_offset)),
                None => {}
            }
            return;
        }
        let keys: Vec<(Vec<u8>, i64)> = match records {
            Ok(records) => records
                .flatten()
                .filter_map(|r| Some((r.key?.to_vec(), r.offset)))
                .collect(),
            Err(_) => Vec::new(), // compressed: its keys unknown, kept whole unless aborted
        };
        if header.is_transactional() {
            pending
                .entry(header.producer_id())
                .or_default()
                .push(PendingBatch {
                    base_offset: header.base_offset(),
                    keys,
                });
            return;
        }
        for (key, offset) in keys {
            self.note_latest(&key, offset);
        }
    }
}

/// What filtering left of one batch.
enum Filtered {
    Whole,
    Gone,
    Rewritten(Vec<u8>),
}

#[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
fn ratio(part: u64, whole: u64) -> f64 {
    part as f64 / whole.max(1) as f64
}

fn end_of(seg: &Segment) -> Position {
    Position {
        segment: seg.id,
        offset: seg.size(),
    }
}

impl Cleaner {
    /// One pass at `now` (epoch ms). `step` runs after each swap step (tests crash there).
    pub(crate) fn run_once(
        &self,
        registry: &Registry,
        shards: &[ShardHandle],
        pager: &Pager,
        now: i64,
        step: &dyn Fn(SwapStep),
    ) -> Result<CompactionStats, StorageError> {
        let mut stats = CompactionStats::default();
        let mut plans: HashMap<LogId, Plan> = HashMap::new();
        let mut next_progress: HashMap<LogId, Progress> = HashMap::new();
        // Segments to rewrite, per shard.
        let mut targets: BTreeMap<usize, BTreeMap<u64, Arc<Segment>>> = BTreeMap::new();
        for log in registry.snapshot() {
            let cfg = log.config();
            if !cfg.compact || log.deleted.load(Ordering::Acquire) || shards.is_empty() {
                continue;
            }
            let shard = &shards[log.shard % shards.len()].state;
            let durable = *shard.durable.borrow();
            let entries: Vec<IndexEntry> = match log.materialize() {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(log_id = log.id, %error, "log not compacted: a sealed index cannot be read");
                    continue;
                }
            };
            let lag_horizon = now.saturating_sub(cfg.min_compaction_lag_ms);
            // The log's last batch stays: it carries the high watermark across a restart.
            let cleanable = entries
                .iter()
                .take(entries.len().saturating_sub(1))
                .take_while(|e| {
                    e.segment.sealed.load(Ordering::Acquire)
                        && end_of(&e.segment) <= durable
                        && e.max_timestamp <= lag_horizon
                })
                .count();
            let Some(end_entry) = entries.get(cleanable).filter(|_| cleanable > 0) else {
                continue;
            };
            let clean_end = end_entry.base_offset;
            let progress = self.progress(log.id);
            let cleaned = &entries[..cleanable];
            let total: u64 = cleaned.iter().map(|e| u64::from(e.len)).sum();
            let dirty_entries: Vec<&IndexEntry> = cleaned
                .iter()
                .filter(|e| e.last_offset >= progress.cleaned_through)
                .collect();
            let dirty: u64 = dirty_entries.iter().map(|e| u64::from(e.len)).sum();
            let overdue = cfg.max_compaction_lag_ms < i64::MAX
                && dirty_entries
                    .iter()
                    .any(|e| e.max_timestamp < now.saturating_sub(cfg.max_compaction_lag_ms));
            let tombstones_due = progress
                .oldest_tombstone_ms
                .is_some_and(|t| t < now.saturating_sub(cfg.delete_retention_ms));
            let due = (dirty > 0
                && (ratio(dirty, total) >= cfg.min_cleanable_dirty_ratio || overdue))
                || tombstones_due;
            if !due {
                continue;
            }
            let mut plan = Plan {
                clean_end,
                latest: HashMap::new(),
                last_of_producer: HashMap::new(),
                tombstone_horizon: now.saturating_sub(cfg.delete_retention_ms),
                first_batch: cleaned[0].base_offset,
                aborted: HashSet::new(),
                committed: HashSet::new(),
            };
            let mut buf = Vec::new();
            // Producer id → its open transaction's batches: (base offset, keyed offsets).
            let mut pending: HashMap<i64, Vec<PendingBatch>> = HashMap::new();
            for e in cleaned {
                buf.clear();
                e.segment.read_into(e.position, e.len as usize, &mut buf)?;
                let header =
                    BatchHeader::parse_checked(&buf).map_err(|_| StorageError::Corrupt {
                        path: e.segment.path.clone(),
                        position: e.position,
                    })?;
                if header.producer_id() >= 0 && !header.is_control() {
                    plan.last_of_producer
                        .insert(header.producer_id(), header.base_offset());
                }
                plan.note_batch(&header, &mut pending);
            }
            // Transactions still open at the end of the range stay whole.
            drop(pending);
            for e in cleaned {
                targets
                    .entry(shard.id)
                    .or_default()
                    .insert(e.segment.id, e.segment.clone());
            }
            next_progress.insert(
                log.id,
                Progress {
                    cleaned_through: clean_end,
                    oldest_tombstone_ms: None,
                },
            );
            plans.insert(log.id, plan);
        }
        if plans.is_empty() {
            return Ok(stats);
        }
        for (shard_id, segments) in targets {
            let Some(shard) = shards.iter().find(|s| s.state.id == shard_id) else {
                continue;
            };
            for seg in segments.into_values() {
                // Retention may have deleted it meanwhile.
                if !read_lock(&shard.state.segments).contains_key(&seg.id) {
                    continue;
                }
                let rewritten = rewrite_segment(
                    &shard.state,
                    registry,
                    pager,
                    &seg,
                    &plans,
                    &mut next_progress,
                    step,
                )?;
                if let Some((before, after, removed)) = rewritten {
                    stats.segments_rewritten += 1;
                    stats.bytes_before += before;
                    stats.bytes_after += after;
                    stats.records_removed += removed;
                }
            }
        }
        stats.logs_cleaned = plans.len();
        let mut progress = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        progress.extend(next_progress);
        if stats.segments_rewritten > 0 {
            metrics::counter!("wharf_storage_compaction_segments_rewritten_total")
                .increment(stats.segments_rewritten as u64);
            metrics::counter!("wharf_storage_compaction_bytes_reclaimed_total")
                .increment(stats.bytes_before.saturating_sub(stats.bytes_after));
            tracing::info!(
                logs = stats.logs_cleaned,
                segments = stats.segments_rewritten,
                bytes_before = stats.bytes_before,
                bytes_after = stats.bytes_after,
                records_removed = stats.records_removed,
                "compaction pass"
            );
        }
        Ok(stats)
    }

    fn progress(&self, log_id: LogId) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&log_id)
            .copied()
            .unwrap_or_default()
    }
}

/// Filters one batch of a compacted log by `plan`; counts removed records in `removed` and
/// notes the oldest tombstone kept in `oldest_tombstone`.
fn filter_batch(
    bytes: &[u8],
    plan: &Plan,
    removed: &mut u64,
    oldest_tombstone: &mut Option<i64>,
) -> Filtered {
    let Ok(header) = BatchHeader::parse(bytes) else {
        return Filtered::Whole;
    };
    let base = header.base_offset();
    let aborted = header.is_transactional() && plan.aborted.contains(&base);
    if base >= plan.clean_end
        || header.is_control()
        || (header.is_transactional() && !aborted && !plan.committed.contains(&base))
    {
        return Filtered::Whole;
    }
    let (Ok(records), Ok(ranges)) = (RecordIter::new(&header), record_ranges(&header)) else {
        // Compressed: whole, unless aborted and not needed for producer state.
        let pinned = plan.last_of_producer.get(&header.producer_id()) == Some(&base);
        if aborted && !pinned && base != plan.first_batch {
            *removed += u64::try_from(header.records_count()).unwrap_or(0);
            return Filtered::Gone;
        }
        return Filtered::Whole;
    };
    let mut kept = Vec::new();
    for (record, range) in records.zip(ranges) {
        let Ok(record) = record else {
            return Filtered::Whole;
        };
        let latest = record
            .key
            .and_then(|k| plan.latest.get(k))
            .is_some_and(|&o| o == record.offset);
        let keep = !aborted
            && latest
            && (record.value.is_some() || record.timestamp >= plan.tombstone_horizon);
        if keep && record.value.is_none() {
            let ts = record.timestamp;
            *oldest_tombstone = Some(oldest_tombstone.map_or(ts, |t| t.min(ts)));
        }
        if keep {
            kept.push(range);
        } else {
            *removed += 1;
        }
    }
    let count = header.records_count().max(0) as usize;
    if kept.len() == count {
        return Filtered::Whole;
    }
    let producer_keeps = header.producer_id() >= 0
        && plan.last_of_producer.get(&header.producer_id()) == Some(&header.base_offset());
    if kept.is_empty() && !producer_keeps && header.base_offset() != plan.first_batch {
        return Filtered::Gone;
    }
    // Same base offset, last offset delta, timestamps and producer fields: only the records
    // count, the length and the CRC change (Kafka keeps a v2 batch's offsets the same way).
    let mut out = bytes[..wharf_record::HEADER_LEN].to_vec();
    for range in &kept {
        out.extend_from_slice(&bytes[range.clone()]);
    }
    let length = i32::try_from(out.len() - 12).unwrap_or(i32::MAX);
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let count = i32::try_from(kept.len()).unwrap_or(i32::MAX);
    out[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Filtered::Rewritten(out)
}

/// Rewrites one sealed segment; `None` when nothing in it can go. Returns bytes before and
/// after, and records removed.
fn rewrite_segment(
    state: &ShardState,
    registry: &Registry,
    pager: &Pager,
    seg: &Arc<Segment>,
    plans: &HashMap<LogId, Plan>,
    progress: &mut HashMap<LogId, Progress>,
    step: &dyn Fn(SwapStep),
) -> Result<Option<(u64, u64, u64)>, StorageError> {
    let fs = &*state.fs;
    let entries = if let Some(mut entries) = segment::read_index(fs, &state.dir, seg.id) {
        // The index file keeps entries by log; the segment is rewritten in its own order.
        entries.sort_unstable_by_key(|e| e.position);
        entries
    } else {
        let scanned = crate::scan::scan_from(&*seg.file, &seg.path, seg.size(), 0)?;
        if scanned.damage.is_some() {
            tracing::warn!(
                shard = state.id,
                segment = seg.id,
                "damaged segment not compacted"
            );
            return Ok(None);
        }
        scanned.entries
    };
    let mut out: Vec<u8> = Vec::with_capacity(seg.size() as usize);
    let mut kept: Vec<SegmentEntry> = Vec::with_capacity(entries.len());
    // (log, old position) → new entry, or None when the batch went.
    let mut moved: HashMap<LogId, HashMap<u64, Option<SegmentEntry>>> = HashMap::new();
    let mut removed = 0u64;
    let mut batch = Vec::new();
    for e in &entries {
        let log = registry.get(e.log_id);
        let expired = log
            .as_ref()
            .is_none_or(|l| e.last_offset < l.log_start.load(Ordering::Acquire));
        let filtered = if expired {
            Filtered::Gone
        } else {
            batch.clear();
            seg.read_into(e.position, e.len as usize, &mut batch)?;
            match plans.get(&e.log_id) {
                Some(plan) => {
                    let oldest = &mut progress.entry(e.log_id).or_default().oldest_tombstone_ms;
                    filter_batch(&batch, plan, &mut removed, oldest)
                }
                None => Filtered::Whole,
            }
        };
        let bytes: &[u8] = match &filtered {
            Filtered::Gone => {
                moved.entry(e.log_id).or_default().insert(e.position, None);
                continue;
            }
            Filtered::Whole => &batch,
            Filtered::Rewritten(b) => b,
        };
        let at = out.len();
        out.extend_from_slice(&[0u8; ENVELOPE_LEN]);
        out.extend_from_slice(bytes);
        let (header, body) = out[at..].split_at_mut(ENVELOPE_LEN);
        envelope::write_header(header, e.log_id, body);
        let entry = SegmentEntry {
            position: (at + ENVELOPE_LEN) as u64,
            len: bytes.len() as u32,
            ..*e
        };
        kept.push(entry);
        moved
            .entry(e.log_id)
            .or_default()
            .insert(e.position, Some(entry));
    }
    let before = seg.size();
    if out.len() as u64 >= before {
        return Ok(None);
    }
    if kept.is_empty() {
        retire(seg, pager);
        remove_segment(state, registry, seg, &moved)?;
        return Ok(Some((before, 0, removed)));
    }
    // Crash-safe swap (module comment): old or new survives, never neither.
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |e| StorageError::io(&path, e)
    };
    let tmp = durable::temp_path(&seg.path);
    let file = fs.open(&tmp, true).map_err(io(&tmp))?;
    file.set_len(0).map_err(io(&tmp))?;
    file.write_all_at(&out, 0).map_err(io(&tmp))?;
    file.sync_data().map_err(io(&tmp))?;
    drop(file);
    step(SwapStep::Written);
    retire(seg, pager);
    let index = segment::index_path(&state.dir, seg.id);
    match fs.remove_file(&index) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(StorageError::io(&index, e))
        }
        _ => {}
    }
    fs.sync_dir(&state.dir).map_err(io(&state.dir))?;
    step(SwapStep::IndexRemoved);
    fs.rename(&tmp, &seg.path).map_err(io(&seg.path))?;
    fs.sync_dir(&state.dir).map_err(io(&state.dir))?;
    step(SwapStep::Renamed);
    segment::write_index(fs, &state.dir, seg.id, &kept)?;
    let new = Arc::new(Segment::open(fs, &state.dir, seg.id)?);
    new.created_ms
        .store(seg.created_ms.load(Ordering::Acquire), Ordering::Release);
    new.sealed.store(true, Ordering::Release);
    for e in &kept {
        new.note_offset(e.log_id, e.last_offset);
    }
    write_lock(&state.segments).insert(seg.id, new.clone());
    for (log_id, positions) in &moved {
        if let Some(log) = registry.get(*log_id) {
            repoint(&log, seg, &new, positions);
        }
    }
    Ok(Some((before, out.len() as u64, removed)))
}

/// From here the segment's index file may describe its replacement: loads of its index scan
/// its own (still open) file instead, and what was cached for it goes.
fn retire(seg: &Segment, pager: &Pager) {
    seg.retired.store(true, Ordering::Release);
    pager.evict(seg);
}

/// Deletes a segment nothing in which survives: its index file first, so a crash between the
/// two removals leaves the old segment, rescanned.
fn remove_segment(
    state: &ShardState,
    registry: &Registry,
    seg: &Arc<Segment>,
    moved: &HashMap<LogId, HashMap<u64, Option<SegmentEntry>>>,
) -> Result<(), StorageError> {
    let fs = &*state.fs;
    for path in [segment::index_path(&state.dir, seg.id), seg.path.clone()] {
        match fs.remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StorageError::io(&path, e));
            }
            _ => {}
        }
    }
    fs.sync_dir(&state.dir)
        .map_err(|e| StorageError::io(&state.dir, e))?;
    write_lock(&state.segments).remove(&seg.id);
    for (log_id, positions) in moved {
        if let Some(log) = registry.get(*log_id) {
            repoint(&log, seg, seg, positions);
        }
    }
    Ok(())
}

/// Points a log's index entries of `old` at their place in `new` and drops those that went.
fn repoint(
    log: &LogShared,
    old: &Arc<Segment>,
    new: &Arc<Segment>,
    positions: &HashMap<u64, Option<SegmentEntry>>,
) {
    log.repoint(old, new, positions);
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
