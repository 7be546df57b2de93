//! Rebuilding a shard on start. Sealed segments load their index files (rescanned when the
//! file is missing or damaged); the active segment is scanned entry by entry, each envelope's
//! CRC-32C checked, and a torn or corrupt tail is truncated away and logged.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use wharf_record::BatchHeader;

use crate::envelope::{self, ENVELOPE_LEN};
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
    let file = seg
        .file
        .try_clone()
        .map_err(|e| StorageError::io(&seg.path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut entries = Vec::new();
    let mut pos: u64 = 0;
    let mut body = Vec::new();
    let cut_reason = loop {
        if pos == size {
            break None;
        }
        if size - pos < ENVELOPE_LEN as u64 {
            break Some("partial envelope header");
        }
        let mut header = [0u8; ENVELOPE_LEN];
        reader
            .read_exact(&mut header)
            .map_err(|e| StorageError::io(&seg.path, e))?;
        let (len, crc, log_id) = envelope::parse_header(&header);
        let batches_len = (len as u64).saturating_sub((ENVELOPE_LEN - 4) as u64);
        if (len as usize) < ENVELOPE_LEN - 4
            || batches_len == 0
            || pos + ENVELOPE_LEN as u64 + batches_len > size
        {
            break Some("torn entry");
        }
        body.resize(batches_len as usize, 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| StorageError::io(&seg.path, e))?;
        if envelope::checksum(log_id, &body) != crc {
            break Some("envelope checksum mismatch");
        }
        let first = entries.len();
        let mut at = 0usize;
        let mut ok = true;
        while at < body.len() {
            let Ok(h) = BatchHeader::parse(&body[at..]) else {
                ok = false;
                break;
            };
            entries.push(SegmentEntry {
                log_id,
                base_offset: h.base_offset(),
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp(),
                position: pos + (ENVELOPE_LEN + at) as u64,
                len: h.len() as u32,
            });
            at += h.len();
        }
        if !ok {
            entries.truncate(first);
            break Some("malformed batch inside a valid envelope");
        }
        pos += ENVELOPE_LEN as u64 + batches_len;
    };
    if let Some(reason) = cut_reason {
        tracing::warn!(
            shard = shard_id,
            segment = %seg.path.display(),
            position = pos,
            cut_bytes = size - pos,
            reason,
            "recovery truncated segment tail"
        );
        seg.file
            .set_len(pos)
            .and_then(|()| seg.file.sync_all())
            .map_err(|e| StorageError::io(&seg.path, e))?;
        seg.size.store(pos, Ordering::Release);
    }
    Ok(entries)
}
