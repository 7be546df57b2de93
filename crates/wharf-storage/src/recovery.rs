//! Rebuilding a shard on start. Sealed segments load their index files (rescanned when the
//! file is missing or damaged); the active segment is scanned entry by entry, each envelope's
//! CRC-32C checked, and a torn or corrupt tail is truncated away and logged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::scan::scan_from;
use crate::segment::{self, Segment, SegmentEntry};
use crate::StorageError;

pub(crate) struct RecoveredShard {
    pub segments: BTreeMap<u64, Arc<Segment>>,
    /// Every entry, in segment order, with its segment.
    pub entries: Vec<(SegmentEntry, Arc<Segment>)>,
    /// Entries of the active (last) segment.
    pub active_entries: Vec<SegmentEntry>,
}

pub(crate) fn recover_shard(dir: &Path, shard_id: usize) -> Result<RecoveredShard, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    let mut ids = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let path = item.map_err(|e| StorageError::io(dir, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tmp"))
        {
            let _ = std::fs::remove_file(&path);
        } else if let Some(id) = name
            .strip_suffix(".log")
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut out = RecoveredShard {
        segments: BTreeMap::new(),
        entries: Vec::new(),
        active_entries: Vec::new(),
    };
    if ids.is_empty() {
        out.segments.insert(0, Arc::new(Segment::create(dir, 0)?));
        return Ok(out);
    }
    let last = ids.len() - 1;
    for (i, id) in ids.into_iter().enumerate() {
        let seg = Arc::new(Segment::open(dir, id)?);
        let is_active = i == last;
        let indexed = if is_active {
            None
        } else {
            segment::read_index(dir, id)
        };
        let entries = match indexed {
            Some(entries)
                if entries
                    .iter()
                    .all(|e| e.position + u64::from(e.len) <= seg.size()) =>
            {
                entries
            }
            _ => scan(&seg, shard_id)?,
        };
        for e in &entries {
            seg.note_offset(e.log_id, e.last_offset);
        }
        seg.sealed.store(!is_active, Ordering::Release);
        if is_active {
            out.active_entries.clone_from(&entries);
        }
        out.entries
            .extend(entries.into_iter().map(|e| (e, seg.clone())));
        out.segments.insert(id, seg);
    }
    Ok(out)
}

/// Reads every entry of a segment, checking each CRC; truncates at the first bad one.
fn scan(seg: &Segment, shard_id: usize) -> Result<Vec<SegmentEntry>, StorageError> {
    let size = seg.size();
    let scanned = scan_from(&seg.file, &seg.path, size, 0)?;
    if let Some(damage) = scanned.damage {
        tracing::warn!(
            shard = shard_id,
            segment = %seg.path.display(),
            position = damage.position,
            cut_bytes = size - damage.position,
            reason = damage.reason,
            "recovery truncated segment tail"
        );
        seg.file
            .set_len(damage.position)
            .and_then(|()| seg.file.sync_all())
            .map_err(|e| StorageError::io(&seg.path, e))?;
        seg.size.store(damage.position, Ordering::Release);
    }
    Ok(scanned.entries)
}
