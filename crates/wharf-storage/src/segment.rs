//! One segment file of a shard log and, once sealed, its index file.
//! Invariant: bytes below `size` are whole entries; the writer thread alone appends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::fs::{FileSystem, StorageFile};
use crate::id_map::IdMap;
use crate::{clock, durable, LogId, StorageError};

const INDEX_MAGIC: &[u8; 4] = b"WIDX";
/// Version 2 sorts entries by log, then offset (version 1, still read, kept segment order),
/// so one log's entries are found by a binary search and read alone (ADR 0018).
const INDEX_VERSION: u32 = 2;
const INDEX_VERSION_1: u32 = 1;
const INDEX_ENTRY_LEN: usize = 44;

/// Where one batch lives: written to a sealed segment's index file as 44 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentEntry {
    pub log_id: LogId,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Byte position of the batch (not the envelope) in the segment.
    pub position: u64,
    pub len: u32,
}

pub struct Segment {
    pub id: u64,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    pub size: AtomicU64,
    /// Epoch ms its age (`segment.ms`) counts from: creation, or for a recovered segment its
    /// first batch's timestamp, so a restart does not make old data young again.
    pub created_ms: AtomicI64,
    pub sealed: AtomicBool,
    /// Highest offset each log has in this segment: a segment is deletable once every log's
    /// start offset has passed its entry here.
    pub last_offsets: Mutex<IdMap<i64>>,
    /// Set by the cleaner before it replaces this segment's files: its index file may then
    /// describe the replacement, so a load for this (old) segment scans its own file instead.
    pub retired: AtomicBool,
}

pub fn log_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.log"))
}
pub fn index_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.index"))
}

impl Segment {
    /// Creates a segment file and makes its name durable before anything is written to it.
    pub fn create(fs: &dyn FileSystem, dir: &Path, id: u64) -> Result<Self, StorageError> {
        let path = log_path(dir, id);
        // A roll that failed after creating the file is retried: an empty file is reused.
        let file = durable::create_file(fs, &path).map_err(|e| StorageError::io(&path, e))?;
        let size = file.size().map_err(|e| StorageError::io(&path, e))?;
        if size != 0 {
            let exists = std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "new segment file is not empty",
            );
            return Err(StorageError::io(&path, exists));
        }
        Ok(Self::from_file(id, path, file, 0))
    }

    pub fn open(fs: &dyn FileSystem, dir: &Path, id: u64) -> Result<Self, StorageError> {
        let path = log_path(dir, id);
        let file = fs
            .open(&path, false)
            .map_err(|e| StorageError::io(&path, e))?;
        let size = file.size().map_err(|e| StorageError::io(&path, e))?;
        Ok(Self::from_file(id, path, file, size))
    }

    fn from_file(id: u64, path: PathBuf, file: Arc<dyn StorageFile>, size: u64) -> Self {
        Self {
            id,
            path,
            file,
            size: AtomicU64::new(size),
            created_ms: AtomicI64::new(clock::now_ms()),
            sealed: AtomicBool::new(false),
            last_offsets: Mutex::new(IdMap::default()),
            retired: AtomicBool::new(false),
        }
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn age_ms(&self, now: i64) -> i64 {
        now.saturating_sub(self.created_ms.load(Ordering::Acquire))
    }

    pub fn note_offset(&self, log_id: LogId, last_offset: i64) {
        let mut map = self
            .last_offsets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = map.entry(log_id).or_insert(last_offset);
        *slot = (*slot).max(last_offset);
    }

    /// Fills `out` with the bytes at `position`.
    pub fn read_exact_into(&self, position: u64, out: &mut [u8]) -> Result<(), StorageError> {
        self.file
            .read_exact_at(out, position)
            .map_err(|e| StorageError::io(&self.path, e))
    }

    /// Reads `len` bytes at `position` into `out`.
    pub fn read_into(
        &self,
        position: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        let start = out.len();
        out.resize(start + len, 0);
        self.read_exact_into(position, &mut out[start..])
    }
}

/// The 44 bytes of an index entry.
fn encode_entry(e: &SegmentEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.log_id.to_le_bytes());
    out.extend_from_slice(&e.base_offset.to_le_bytes());
    out.extend_from_slice(&e.last_offset.to_le_bytes());
    out.extend_from_slice(&e.max_timestamp.to_le_bytes());
    out.extend_from_slice(&e.position.to_le_bytes());
    out.extend_from_slice(&e.len.to_le_bytes());
}

fn decode_entry(e: &[u8]) -> Option<SegmentEntry> {
    let u64_at = |i: usize| e.get(i..i + 8)?.try_into().ok().map(u64::from_le_bytes);
    Some(SegmentEntry {
        log_id: u64_at(0)?,
        base_offset: u64_at(8)? as i64,
        last_offset: u64_at(16)? as i64,
        max_timestamp: u64_at(24)? as i64,
        position: u64_at(32)?,
        len: u32::from_le_bytes(e.get(40..44)?.try_into().ok()?),
    })
}

/// CRC-32C of one log's block of a version-2 index file: its entries (in offset order) as
/// they are written there. A log keeps it per sealed segment to check a block read alone.
pub fn block_crc<'a>(entries: impl IntoIterator<Item = &'a SegmentEntry>) -> u32 {
    entries.into_iter().fold(0, block_crc_append)
}

/// [`block_crc`] of a block grown by one entry.
pub fn block_crc_append(crc: u32, e: &SegmentEntry) -> u32 {
    let mut buf = [0u8; INDEX_ENTRY_LEN];
    buf[0..8].copy_from_slice(&e.log_id.to_le_bytes());
    buf[8..16].copy_from_slice(&e.base_offset.to_le_bytes());
    buf[16..24].copy_from_slice(&e.last_offset.to_le_bytes());
    buf[24..32].copy_from_slice(&e.max_timestamp.to_le_bytes());
    buf[32..40].copy_from_slice(&e.position.to_le_bytes());
    buf[40..44].copy_from_slice(&e.len.to_le_bytes());
    crc32c::crc32c_append(crc, &buf)
}

/// Writes the index file of a sealed segment: magic, version, count, entries sorted by log
/// then offset, CRC-32C of all before it. Replaced durably, so a reader sees all of it or none.
pub fn write_index(
    fs: &dyn FileSystem,
    dir: &Path,
    id: u64,
    entries: &[SegmentEntry],
) -> Result<(), StorageError> {
    let mut buf = Vec::with_capacity(16 + entries.len() * INDEX_ENTRY_LEN);
    buf.extend_from_slice(INDEX_MAGIC);
    buf.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    buf.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for i in index_order(entries) {
        encode_entry(&entries[i], &mut buf);
    }
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let path = index_path(dir, id);
    durable::replace(fs, &path, &buf).map_err(|e| StorageError::io(&path, e))
}

/// The positions of `entries` sorted by log, then base offset (ties keep their order).
///
/// A segment's entries come in write order, many logs interleaved, each log's in offset
/// order. A sort of the whole list (about a million entries in a 1 GiB segment of 1 KiB
/// batches) took 200 ms of the writer's time at a roll; a counting sort by log does the
/// same in a tenth of that: each log's entries are counted, the logs are sorted, and every
/// entry is placed after its log's earlier ones. A log whose offsets are not increasing in
/// write order (none is expected) sends the whole list to the general sort.
fn index_order(entries: &[SegmentEntry]) -> Vec<usize> {
    let mut slot_of: IdMap<usize> = IdMap::default();
    let mut ids: Vec<LogId> = Vec::new();
    let slots: Vec<usize> = entries
        .iter()
        .map(|e| {
            *slot_of.entry(e.log_id).or_insert_with(|| {
                ids.push(e.log_id);
                ids.len() - 1
            })
        })
        .collect();
    let mut counts = vec![0usize; ids.len()];
    for &slot in &slots {
        counts[slot] += 1;
    }
    let mut by_id: Vec<usize> = (0..ids.len()).collect();
    by_id.sort_unstable_by_key(|&slot| ids[slot]);
    // Where each log's next entry goes.
    let mut next = vec![0usize; ids.len()];
    let mut sum = 0;
    for slot in by_id {
        next[slot] = sum;
        sum += counts[slot];
    }
    let mut order = vec![0usize; entries.len()];
    let mut last = vec![i64::MIN; ids.len()];
    let mut increasing = true;
    for (i, (&slot, e)) in slots.iter().zip(entries).enumerate() {
        increasing &= e.base_offset >= last[slot];
        last[slot] = e.base_offset;
        order[next[slot]] = i;
        next[slot] += 1;
    }
    if !increasing {
        order.sort_by_key(|&i| (entries[i].log_id, entries[i].base_offset));
    }
    order
}

/// One log's entries in a version-2 index file, found by a binary search (or at `hint`, the
/// entry number where an earlier read found them, when it is still their start) and read
/// alone, with the entry number they start at. Not checked against the file's CRC: the caller
/// checks them against [`block_crc`]. `None` when the file is missing, not version 2, or
/// unreadable.
pub fn read_log_block(
    fs: &dyn FileSystem,
    dir: &Path,
    id: u64,
    log_id: LogId,
    hint: Option<u64>,
) -> Option<(u64, Vec<SegmentEntry>)> {
    let file = fs.open(&index_path(dir, id), false).ok()?;
    let size = file.size().ok()?;
    let mut head = [0u8; 16];
    file.read_exact_at(&mut head, 0).ok()?;
    let version = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let count = u64::from_le_bytes(head[8..16].try_into().ok()?);
    if &head[0..4] != INDEX_MAGIC
        || version != INDEX_VERSION
        || Some(size) != count.checked_mul(INDEX_ENTRY_LEN as u64)?.checked_add(20)
    {
        return None;
    }
    let at = |i: u64| 16 + i * INDEX_ENTRY_LEN as u64;
    let mut entry = [0u8; INDEX_ENTRY_LEN];
    let mut log_at = |i: u64| -> Option<LogId> {
        file.read_exact_at(&mut entry[..8], at(i)).ok()?;
        Some(u64::from_le_bytes(entry[..8].try_into().ok()?))
    };
    let hinted = hint.filter(|&h| {
        h < count
            && log_at(h) == Some(log_id)
            && (h == 0 || log_at(h - 1).is_some_and(|prev| prev < log_id))
    });
    let (mut lo, mut hi) = hinted.map_or((0u64, count), |h| (h, h));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if log_at(mid)? < log_id {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let start = lo;
    let mut out = Vec::new();
    let mut buf = vec![0u8; INDEX_ENTRY_LEN * 256];
    let mut i = lo;
    while i < count {
        let n = (count - i).min(256);
        let chunk = &mut buf[..usize::try_from(n).ok()? * INDEX_ENTRY_LEN];
        file.read_exact_at(chunk, at(i)).ok()?;
        for raw in chunk.chunks_exact(INDEX_ENTRY_LEN) {
            let e = decode_entry(raw)?;
            if e.log_id != log_id {
                return Some((start, out));
            }
            out.push(e);
        }
        i += n;
        // Larger reads as the block proves long.
        if buf.len() < INDEX_CHUNK {
            buf.resize(buf.len() * 2, 0);
        }
    }
    Some((start, out))
}

/// Reads a sealed segment's index file; `None` when absent or damaged (the caller rescans).
pub fn read_index(fs: &dyn FileSystem, dir: &Path, id: u64) -> Option<Vec<SegmentEntry>> {
    read_index_versioned(fs, dir, id).map(|(_, entries)| entries)
}

/// [`read_index`] and the file's version.
pub fn read_index_versioned(
    fs: &dyn FileSystem,
    dir: &Path,
    id: u64,
) -> Option<(u32, Vec<SegmentEntry>)> {
    let mut out = Vec::new();
    let version = for_each_index_entry(fs, dir, id, |e| out.push(e))?;
    Some((version, out))
}

/// Whether an index file of this version keeps each log's entries together.
pub fn is_current(version: u32) -> bool {
    version == INDEX_VERSION
}

/// Index file bytes read per positional read when streaming.
const INDEX_CHUNK: usize = INDEX_ENTRY_LEN * 16_384;

/// Streams a sealed segment's index file entry by entry, without holding the file in memory;
/// returns its version. `None` when it is absent or damaged: entries already passed to `each`
/// must then be discarded, since the CRC is checked only at the end.
pub fn for_each_index_entry(
    fs: &dyn FileSystem,
    dir: &Path,
    id: u64,
    mut each: impl FnMut(SegmentEntry),
) -> Option<u32> {
    let file = fs.open(&index_path(dir, id), false).ok()?;
    let size = file.size().ok()?;
    if size < 20 {
        return None;
    }
    let mut head = [0u8; 16];
    file.read_exact_at(&mut head, 0).ok()?;
    let version = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let count = u64::from_le_bytes(head[8..16].try_into().ok()?);
    if &head[0..4] != INDEX_MAGIC
        || (version != INDEX_VERSION && version != INDEX_VERSION_1)
        || Some(size) != count.checked_mul(INDEX_ENTRY_LEN as u64)?.checked_add(20)
    {
        return None;
    }
    let mut crc = crc32c::crc32c(&head);
    let body_end = size - 4;
    let mut at = 16u64;
    let mut buf = vec![0u8; INDEX_CHUNK];
    while at < body_end {
        let n = usize::try_from((body_end - at).min(INDEX_CHUNK as u64)).ok()?;
        let chunk = &mut buf[..n];
        file.read_exact_at(chunk, at).ok()?;
        crc = crc32c::crc32c_append(crc, chunk);
        for e in chunk.chunks_exact(INDEX_ENTRY_LEN) {
            each(decode_entry(e)?);
        }
        at += n as u64;
    }
    let mut tail = [0u8; 4];
    file.read_exact_at(&mut tail, body_end).ok()?;
    (crc.to_le_bytes() == tail).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log's block read alone matches the CRC kept for it, in a file with other logs.
    #[test]
    fn a_log_block_is_found_alone_and_matches_its_crc() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |log_id, base_offset| SegmentEntry {
            log_id,
            base_offset,
            last_offset: base_offset,
            max_timestamp: 1,
            position: 16 + 100 * base_offset as u64,
            len: 90,
        };
        let entries: Vec<_> = (0..30).map(|i| entry(i % 3 + 1, i as i64)).collect();
        let fs = crate::fs::RealFs;
        write_index(&fs, dir.path(), 7, &entries).unwrap();
        for log_id in 1..=3 {
            let (start, block) = read_log_block(&fs, dir.path(), 7, log_id, None).unwrap();
            let expected: Vec<_> = entries
                .iter()
                .filter(|e| e.log_id == log_id)
                .copied()
                .collect();
            assert_eq!(block, expected);
            assert_eq!(start, (log_id - 1) * 10);
            // A right hint finds the same block; a wrong one falls back to the search.
            for hint in [Some(start), Some(start + 1), Some(0), Some(999)] {
                let found = read_log_block(&fs, dir.path(), 7, log_id, hint).unwrap();
                assert_eq!(found, (start, expected.clone()), "hint {hint:?}");
            }
            // The kept CRC is the CRC of the block's bytes as the file holds them.
            let mut bytes = Vec::new();
            for e in &expected {
                encode_entry(e, &mut bytes);
            }
            assert_eq!(block_crc(&block), crc32c::crc32c(&bytes));
        }
        assert!(read_log_block(&fs, dir.path(), 7, 9, None)
            .unwrap()
            .1
            .is_empty());
    }

    /// The counting sort gives the order of a stable sort by (log, base offset), for logs
    /// interleaved in write order, reserved ids among them, and a log whose offsets go back.
    #[test]
    fn index_order_is_by_log_then_offset() {
        let entry = |log_id, base_offset, position| SegmentEntry {
            log_id,
            base_offset,
            last_offset: base_offset,
            max_timestamp: 0,
            position,
            len: 1,
        };
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut offsets = vec![0i64; 300];
        let mut entries = Vec::new();
        for position in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let log = (x % 300) as usize;
            let id = if log < 5 {
                (1 << 40) + log as u64
            } else {
                900 - log as u64
            };
            entries.push(entry(id, offsets[log], position));
            offsets[log] += 1 + (x % 3) as i64;
        }
        let expected = |entries: &[SegmentEntry]| {
            let mut sorted: Vec<usize> = (0..entries.len()).collect();
            sorted.sort_by_key(|&i| (entries[i].log_id, entries[i].base_offset));
            sorted
        };
        assert_eq!(index_order(&entries), expected(&entries));
        // Offsets that go back within a log (not expected) still sort by offset.
        entries.push(entry(900 - 7, 3, 20_000));
        entries.push(entry(900 - 7, 3, 20_001));
        let order = index_order(&entries);
        assert_eq!(order, expected(&entries));
        assert!(order
            .windows(2)
            .all(|w| (entries[w[0]].log_id, entries[w[0]].base_offset)
                <= (entries[w[1]].log_id, entries[w[1]].base_offset)));
        assert!(index_order(&[]).is_empty());
    }

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![SegmentEntry {
            log_id: 3,
            base_offset: 10,
            last_offset: 19,
            max_timestamp: 5,
            position: 16,
            len: 100,
        }];
        let fs = crate::fs::RealFs;
        write_index(&fs, dir.path(), 7, &entries).unwrap();
        assert_eq!(read_index(&fs, dir.path(), 7).unwrap(), entries);
        let path = index_path(dir.path(), 7);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(read_index(&fs, dir.path(), 7).is_none());
    }
}
