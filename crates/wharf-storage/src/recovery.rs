//! Rebuilding a shard on start. Sealed segments load their index files (rescanned when the
//! file is missing or damaged); the active segment is scanned entry by entry, each envelope's
//! CRC-32C checked.
//!
//! Zeros from the end of the entries to the end of the file are the part filled ahead of the
//! writer (ADR 0021): the clean end, trimmed quietly.
//!
//! Damage that runs to the end of the active segment is a torn tail (a write the crash cut
//! short, never acknowledged as synced): it is truncated and logged. So is damage that runs to
//! the end of a rolled segment whose seal a crash cut short (one of the trailing segments
//! without an index file): its fdatasync never finished, and an ack waits for the seal of
//! every segment before its own, so nothing after it was acknowledged as durable. The
//! segments after it are removed (as Kafka deletes the segments after a truncated one), and
//! it becomes the active segment. Damage anywhere else, in a sealed segment or with valid
//! entries after it, may hold acknowledged data: recovery refuses to start unless the
//! operator asked to truncate (`truncate_damaged`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::fs::FileSystem;
use crate::scan::{next_valid_entry, scan_from, zeros_from, Damage};
use crate::segment::{self, Segment, SegmentEntry};
use crate::{durable, StorageError};

/// Called with each recovered segment, its entries, and whether it is sealed.
pub(crate) type EachSegment<'a> = dyn FnMut(&Arc<Segment>, &[SegmentEntry], bool) + 'a;

pub(crate) struct RecoveredShard {
    pub segments: BTreeMap<u64, Arc<Segment>>,
    /// Entries of the active (last) segment.
    pub active_entries: Vec<SegmentEntry>,
    /// Entries recovered, over all segments.
    pub batches: usize,
    /// Torn tails cut.
    pub torn_tails: usize,
    /// Zero bytes trimmed past the entries (filled ahead of the writer).
    pub zero_tail_bytes: u64,
}

/// Recovers a shard's segments; `each` gets every segment's entries in segment order, one
/// segment at a time (so only one segment's entries are ever held), and whether it is sealed.
/// A sealed segment rescanned because its index file was missing or damaged gets the file
/// rewritten (best effort), so later loads of its index (ADR 0018) need no rescan.
pub(crate) fn recover_shard(
    fs: &dyn FileSystem,
    dir: &Path,
    shard_id: usize,
    truncate_damaged: bool,
    each: &mut EachSegment<'_>,
) -> Result<RecoveredShard, StorageError> {
    durable::ensure_dir(fs, dir).map_err(|e| StorageError::io(dir, e))?;
    let mut ids = Vec::new();
    // Segments with an index file, from the same listing.
    let mut indexed_ids = std::collections::BTreeSet::new();
    for path in fs.list_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tmp"))
        {
            let _ = fs.remove_file(&path);
        } else if let Some(id) = name
            .strip_suffix(".log")
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        } else if let Some(id) = name
            .strip_suffix(".index")
            .and_then(|s| s.parse::<u64>().ok())
        {
            indexed_ids.insert(id);
        }
    }
    ids.sort_unstable();
    let mut out = RecoveredShard {
        segments: BTreeMap::new(),
        active_entries: Vec::new(),
        batches: 0,
        torn_tails: 0,
        zero_tail_bytes: 0,
    };
    if ids.is_empty() {
        out.segments
            .insert(0, Arc::new(Segment::create(fs, dir, 0)?));
        return Ok(out);
    }
    let mut last = ids.len() - 1;
    // Rolled segments whose seal a crash may have cut short: the trailing ones, the active
    // one aside, that have no index file (`shard::roll` writes it after the fdatasync).
    let sealing_from = ids[..last]
        .iter()
        .rposition(|id| indexed_ids.contains(id))
        .map_or(0, |i| i + 1);
    let mut i = 0;
    while i <= last {
        let id = ids[i];
        let seg = Arc::new(Segment::open(fs, dir, id)?);
        let mut is_active = i == last;
        let indexed = if is_active {
            None
        } else {
            segment::read_index_versioned(fs, dir, id)
        };
        let entries = match indexed {
            Some((version, entries))
                if entries
                    .iter()
                    .all(|e| e.position + u64::from(e.len) <= seg.size()) =>
            {
                if !segment::is_current(version) {
                    // Upgraded so one log's entries can be read alone (ADR 0018).
                    if let Err(error) = segment::write_index(fs, dir, id, &entries) {
                        tracing::warn!(shard = shard_id, segment = %seg.path.display(), %error, "cannot upgrade an index file; its index is read whole when loaded");
                    }
                }
                entries
            }
            _ => {
                let sealing = !is_active && i >= sealing_from;
                let scanned = scan(
                    &seg,
                    shard_id,
                    is_active || sealing,
                    truncate_damaged,
                    &mut out,
                )?;
                if sealing && scanned.torn {
                    // Its fdatasync never finished, so no ack depended on anything after it:
                    // an ack waits for the seal of every segment before its own.
                    remove_later(fs, dir, shard_id, &ids[i + 1..])?;
                    last = i;
                    is_active = true;
                }
                if let Some(at) = scanned.cut_at {
                    cut(&seg, at)?;
                }
                let entries = scanned.entries;
                if !is_active {
                    if let Err(error) = segment::write_index(fs, dir, id, &entries) {
                        tracing::warn!(shard = shard_id, segment = %seg.path.display(), %error, "cannot rewrite the index file of a rescanned sealed segment; its index is rescanned when loaded");
                    }
                }
                entries
            }
        };
        for e in &entries {
            seg.note_offset(e.log_id, e.last_offset);
        }
        // Index files keep entries by log: the segment's first batch is the lowest position.
        if let Some(first) = entries.iter().min_by_key(|e| e.position) {
            seg.created_ms.store(first.max_timestamp, Ordering::Release);
        }
        seg.sealed.store(!is_active, Ordering::Release);
        each(&seg, &entries, !is_active);
        out.batches += entries.len();
        if is_active {
            out.active_entries = entries;
        }
        out.segments.insert(id, seg);
        i += 1;
    }
    Ok(out)
}

/// Removes the segments after a torn one whose seal a crash cut short, newest first, so a
/// crash in between leaves the torn segment with fewer segments after it, never a cut one.
fn remove_later(
    fs: &dyn FileSystem,
    dir: &Path,
    shard_id: usize,
    later: &[u64],
) -> Result<(), StorageError> {
    let mut bytes = 0;
    for &id in later.iter().rev() {
        let path = segment::log_path(dir, id);
        bytes += fs
            .open(&path, false)
            .and_then(|file| file.size())
            .unwrap_or(0);
        let _ = fs.remove_file(&segment::index_path(dir, id));
        fs.remove_file(&path)
            .map_err(|e| StorageError::io(&path, e))?;
    }
    fs.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    tracing::warn!(
        shard = shard_id,
        segments = later.len(),
        bytes,
        "recovery removed the segments after a rolled segment whose seal a crash cut short (no ack depended on them)"
    );
    Ok(())
}

/// What a scan found: the entries, where to cut the file, and whether that is a torn tail.
struct Scanned {
    entries: Vec<SegmentEntry>,
    cut_at: Option<u64>,
    torn: bool,
}

/// Reads every entry of a segment, checking each CRC, and decides what damage means: damage
/// running to the end of a segment that `may_be_torn` (the active one, or one being sealed)
/// is a torn tail. The caller cuts the file.
fn scan(
    seg: &Segment,
    shard_id: usize,
    may_be_torn: bool,
    truncate_damaged: bool,
    counts: &mut RecoveredShard,
) -> Result<Scanned, StorageError> {
    let size = seg.size();
    let scanned = scan_from(&*seg.file, &seg.path, size, 0)?;
    let Some(damage) = scanned.damage else {
        return Ok(Scanned {
            entries: scanned.entries,
            cut_at: None,
            torn: false,
        });
    };
    if zeros_from(&*seg.file, &seg.path, size, damage.position)? {
        tracing::debug!(
            shard = shard_id,
            segment = %seg.path.display(),
            position = damage.position,
            zero_bytes = size - damage.position,
            "recovery trimmed the preallocated tail"
        );
        counts.zero_tail_bytes += size - damage.position;
        return Ok(Scanned {
            entries: scanned.entries,
            cut_at: Some(damage.position),
            torn: false,
        });
    }
    let valid_after = next_valid_entry(&*seg.file, &seg.path, size, &damage)?;
    let torn_tail = may_be_torn && valid_after.is_none();
    if !torn_tail && !truncate_damaged {
        let Damage {
            position,
            end,
            reason,
        } = damage;
        tracing::error!(shard = shard_id, segment = %seg.path.display(), start = position, end, reason, ?valid_after, "damaged segment: refusing to start");
        return Err(StorageError::Damaged {
            path: seg.path.clone(),
            start: position,
            end,
            valid_at: valid_after.unwrap_or(end),
            reason,
        });
    }
    if torn_tail {
        counts.torn_tails += 1;
        tracing::warn!(
            shard = shard_id,
            segment = %seg.path.display(),
            position = damage.position,
            cut_bytes = size - damage.position,
            reason = damage.reason,
            "recovery truncated a torn tail"
        );
    } else {
        tracing::error!(
            shard = shard_id,
            segment = %seg.path.display(),
            position = damage.position,
            cut_bytes = size - damage.position,
            reason = damage.reason,
            "recovery cut a damaged segment as the operator asked (recovery_truncate_damaged)"
        );
    }
    Ok(Scanned {
        entries: scanned.entries,
        cut_at: Some(damage.position),
        torn: torn_tail,
    })
}

/// Cuts a segment's file at `position`, durably.
fn cut(seg: &Segment, position: u64) -> Result<(), StorageError> {
    seg.file
        .set_len(position)
        .and_then(|()| seg.file.sync_data())
        .map_err(|e| StorageError::io(&seg.path, e))?;
    seg.size.store(position, Ordering::Release);
    Ok(())
}
