//! Sealed-segment indexes on demand (ADR 0018). A log keeps only a small summary per sealed
//! segment in memory; the batches' places are read back from the segment's index file when a
//! read, a timestamp or size search, pruning or the cleaner needs them, and kept in a cache
//! bounded by a byte budget (least recently used goes first).
//!
//! A load streams the whole index file (its CRC covers all of it) and groups its entries by
//! log, so readers of other logs of the same segment hit the cache. When that is larger than
//! the budget only the asked log's batches are kept. A missing or damaged index file is never
//! trusted: the segment itself is scanned (every entry's CRC checked) and a damaged segment
//! is refused, as at recovery. Index files are written only by the roll, the cleaner and
//! recovery; a load never writes one (it could race the cleaner's swap).
//!
//! Cache entries hold their segment, so an entry can never describe another segment that
//! reused its address. Every invalidation (truncation, cleaner swap, deletion) bumps an epoch;
//! a load that started before one is returned to its caller but not cached, so a load racing
//! an invalidation never leaves a stale entry behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::fs::FileSystem;
use crate::scan::scan_from;
use crate::segment::{self, Segment, SegmentEntry};
use crate::{LogId, StorageError};

/// One batch of a log, in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Largest `max_timestamp` of this slot and the slots before it in its run.
    pub max_timestamp_so_far: i64,
    /// Batch bytes of this slot and the slots before it in its run.
    pub bytes_through: u64,
    /// Byte position of the batch in its segment.
    pub position: u64,
    pub len: u32,
}

impl Slot {
    /// The slot of `e` following `prev` in the same run.
    pub fn after(prev: Option<&Slot>, e: &SegmentEntry) -> Self {
        let (so_far, through) =
            prev.map_or((i64::MIN, 0), |p| (p.max_timestamp_so_far, p.bytes_through));
        Self {
            base_offset: e.base_offset,
            last_offset: e.last_offset,
            max_timestamp: e.max_timestamp,
            max_timestamp_so_far: so_far.max(e.max_timestamp),
            bytes_through: through + u64::from(e.len),
            position: e.position,
            len: e.len,
        }
    }
}

/// The batches of one sealed segment, by log: every log's, or one log's (over budget).
#[derive(Debug, Default)]
pub(crate) struct LoadedIndex {
    logs: HashMap<LogId, Vec<Slot>>,
    /// For one log's block read alone: the entry number it starts at in the index file.
    pub block_at: Option<u64>,
}

impl LoadedIndex {
    fn push(&mut self, e: &SegmentEntry) {
        let slots = self.logs.entry(e.log_id).or_default();
        let slot = Slot::after(slots.last(), e);
        slots.push(slot);
    }

    /// The log's batches in the segment, in offset order (also any below its start).
    pub fn slots(&self, log_id: LogId) -> &[Slot] {
        self.logs.get(&log_id).map_or(&[], Vec::as_slice)
    }

    fn bytes(&self) -> u64 {
        let slots: usize = self.logs.values().map(Vec::capacity).sum();
        (slots * size_of::<Slot>() + self.logs.capacity() * 48) as u64
    }

    fn shrink(&mut self) {
        for slots in self.logs.values_mut() {
            slots.shrink_to_fit();
        }
        self.logs.shrink_to_fit();
    }

    fn only(mut self, log_id: LogId) -> Self {
        let mut logs = HashMap::new();
        if let Some(mut slots) = self.logs.remove(&log_id) {
            slots.shrink_to_fit();
            logs.insert(log_id, slots);
        }
        Self {
            logs,
            block_at: None,
        }
    }
}

/// A cache key: the segment's address, and `None` for every log or the one log kept.
type Key = (usize, Option<LogId>);

struct Cached {
    /// Keeps the segment (and so its address) alive while cached.
    _segment: Arc<Segment>,
    index: Arc<LoadedIndex>,
    bytes: u64,
    used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Cached>,
    /// Last use → key: the least recently used first.
    order: BTreeMap<u64, Key>,
    bytes: u64,
    tick: u64,
}

impl Cache {
    fn remove(&mut self, key: &Key) {
        if let Some(gone) = self.entries.remove(key) {
            self.order.remove(&gone.used);
            self.bytes -= gone.bytes;
        }
    }
}

/// Loaded sealed-segment indexes of one storage, under a byte budget.
pub(crate) struct Pager {
    fs: Arc<dyn FileSystem>,
    budget: u64,
    epoch: AtomicU64,
    cache: Mutex<Cache>,
}

fn key_of(segment: &Segment) -> usize {
    std::ptr::from_ref(segment) as usize
}

impl Pager {
    pub fn new(fs: Arc<dyn FileSystem>, budget: u64) -> Self {
        Self {
            fs,
            budget,
            epoch: AtomicU64::new(0),
            cache: Mutex::new(Cache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Read before looking up the run that a load is for (see the module comment).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Bytes of loaded indexes held now.
    #[cfg(test)]
    pub fn cached_bytes(&self) -> u64 {
        self.cache().bytes
    }

    /// The batches of sealed `segment` for `log_id` (with every other log's when they fit the
    /// budget), from the cache or loaded. `epoch` is [`Pager::epoch`] read before the caller
    /// found the segment in a log's index.
    pub fn load(
        &self,
        segment: &Arc<Segment>,
        log_id: LogId,
        block_crc: Option<u32>,
        block_at: Option<u64>,
        epoch: u64,
    ) -> Result<Arc<LoadedIndex>, StorageError> {
        let ptr = key_of(segment);
        {
            let mut cache = self.cache();
            cache.tick += 1;
            let tick = cache.tick;
            for key in [(ptr, None), (ptr, Some(log_id))] {
                if let Some(hit) = cache.entries.get_mut(&key) {
                    let before = std::mem::replace(&mut hit.used, tick);
                    let index = hit.index.clone();
                    cache.order.remove(&before);
                    cache.order.insert(tick, key);
                    metrics::counter!("wharf_storage_sealed_index_hits_total").increment(1);
                    return Ok(index);
                }
            }
        }
        metrics::counter!("wharf_storage_sealed_index_loads_total").increment(1);
        let (loaded, key) =
            if let Some(block) = self.read_block(segment, log_id, block_crc, block_at) {
                (block, (ptr, Some(log_id)))
            } else {
                let loaded = self.read(segment)?;
                if loaded.bytes() > self.budget {
                    (loaded.only(log_id), (ptr, Some(log_id)))
                } else {
                    (loaded, (ptr, None))
                }
            };
        let index = Arc::new(loaded);
        let bytes = index.bytes();
        let mut cache = self.cache();
        // Not cached: over budget, invalidated meanwhile, or no longer sealed (truncated).
        if bytes > self.budget
            || self.epoch.load(Ordering::Acquire) != epoch
            || !segment.sealed.load(Ordering::Acquire)
        {
            return Ok(index);
        }
        cache.remove(&key);
        while cache.bytes + bytes > self.budget {
            let Some((_, oldest)) = cache.order.first_key_value().map(|(t, k)| (*t, *k)) else {
                break;
            };
            cache.remove(&oldest);
        }
        cache.tick += 1;
        let used = cache.tick;
        cache.bytes += bytes;
        cache.order.insert(used, key);
        cache.entries.insert(
            key,
            Cached {
                _segment: segment.clone(),
                index: index.clone(),
                bytes,
                used,
            },
        );
        Self::report(&cache);
        Ok(index)
    }

    fn report(cache: &Cache) {
        #[allow(clippy::cast_precision_loss)] // bytes ≪ 2^52
        metrics::gauge!("wharf_storage_sealed_index_cache_bytes").set(cache.bytes as f64);
    }

    /// Forgets what is cached for `segment` (truncated, replaced or deleted).
    pub fn evict(&self, segment: &Segment) {
        let ptr = key_of(segment);
        let mut cache = self.cache();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let keys: Vec<Key> = cache
            .entries
            .keys()
            .filter(|k| k.0 == ptr)
            .copied()
            .collect();
        for k in keys {
            cache.remove(&k);
        }
        Self::report(&cache);
    }

    /// Forgets everything cached (tests).
    #[cfg(test)]
    pub fn clear(&self) {
        let mut cache = self.cache();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        cache.entries.clear();
        cache.order.clear();
        cache.bytes = 0;
    }

    /// The log's block of the index file alone (binary search), when it matches the CRC the
    /// log kept for it; `None` sends the caller to the whole file.
    fn read_block(
        &self,
        segment: &Segment,
        log_id: LogId,
        block_crc: Option<u32>,
        hint: Option<u64>,
    ) -> Option<LoadedIndex> {
        let expected = block_crc?;
        if segment.retired.load(Ordering::Acquire) {
            return None;
        }
        let dir = segment.path.parent().unwrap_or(std::path::Path::new("."));
        let (start, block) = segment::read_log_block(&*self.fs, dir, segment.id, log_id, hint)?;
        let size = segment.size();
        let fits = block.iter().all(|e| e.position + u64::from(e.len) <= size);
        if !fits
            || segment::block_crc(&block) != expected
            || segment.retired.load(Ordering::Acquire)
        {
            tracing::warn!(segment = %segment.path.display(), log_id, "index file block does not match the log; reading the whole index file");
            return None;
        }
        let mut loaded = LoadedIndex::default();
        for e in &block {
            loaded.push(e);
        }
        loaded.shrink();
        loaded.block_at = Some(start);
        Some(loaded)
    }

    /// The index file's entries, or the segment's own when the file is missing, damaged, does
    /// not fit the segment, or may describe a replacement (retired).
    fn read(&self, segment: &Segment) -> Result<LoadedIndex, StorageError> {
        let dir = segment.path.parent().unwrap_or(std::path::Path::new("."));
        let size = segment.size();
        if !segment.retired.load(Ordering::Acquire) {
            let mut loaded = LoadedIndex::default();
            let mut fits = true;
            let whole = segment::for_each_index_entry(&*self.fs, dir, segment.id, |e| {
                fits &= e.position + u64::from(e.len) <= size;
                loaded.push(&e);
            });
            // Retired after the read started: the file may be the replacement's.
            if whole.is_some() && fits && !segment.retired.load(Ordering::Acquire) {
                loaded.shrink();
                return Ok(loaded);
            }
            tracing::warn!(segment = %segment.path.display(), "sealed segment index file missing or damaged; scanning the segment");
        }
        let scanned = scan_from(&*segment.file, &segment.path, size, 0)?;
        if let Some(damage) = scanned.damage {
            tracing::error!(segment = %segment.path.display(), start = damage.position, end = damage.end, reason = damage.reason, "damaged sealed segment: its batches are not served");
            return Err(StorageError::Corrupt {
                path: segment.path.clone(),
                position: damage.position,
            });
        }
        let mut loaded = LoadedIndex::default();
        for e in &scanned.entries {
            loaded.push(e);
        }
        loaded.shrink();
        Ok(loaded)
    }
}
