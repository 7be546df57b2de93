//! Reading a segment entry by entry, checking every envelope and batch checksum. Recovery uses
//! it to find a torn tail; `verify` uses it to report damaged ranges.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use wharf_record::BatchHeader;

use crate::envelope::{self, ENVELOPE_LEN};
use crate::segment::SegmentEntry;
use crate::StorageError;

/// Where a scan stopped on bad bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// First byte of the bad entry.
    pub position: u64,
    /// End of the bad entry when its length field is plausible, else the end of the file.
    pub end: u64,
    pub reason: &'static str,
}

pub(crate) struct Scan {
    pub entries: Vec<SegmentEntry>,
    pub damage: Option<Damage>,
}

/// Scans `[start, size)` of a segment; stops at the first damaged entry.
pub(crate) fn scan_from(
    file: &File,
    path: &Path,
    size: u64,
    start: u64,
) -> Result<Scan, StorageError> {
    let io = |e| StorageError::io(path, e);
    let mut file = file.try_clone().map_err(io)?;
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut entries = Vec::new();
    let mut pos = start;
    let mut body = Vec::new();
    let damage = |position: u64, end: u64, reason| Scan {
        entries: Vec::new(),
        damage: Some(Damage {
            position,
            end,
            reason,
        }),
    };
    loop {
        if pos == size {
            return Ok(Scan {
                entries,
                damage: None,
            });
        }
        if size - pos < ENVELOPE_LEN as u64 {
            return Ok(Scan {
                entries,
                ..damage(pos, size, "partial envelope header")
            });
        }
        let mut header = [0u8; ENVELOPE_LEN];
        reader.read_exact(&mut header).map_err(io)?;
        let (len, crc, log_id) = envelope::parse_header(&header);
        let batches_len = u64::from(len).saturating_sub((ENVELOPE_LEN - 4) as u64);
        let end = pos + ENVELOPE_LEN as u64 + batches_len;
        if (len as usize) < ENVELOPE_LEN - 4 || batches_len == 0 || end > size {
            return Ok(Scan {
                entries,
                ..damage(pos, size, "torn entry")
            });
        }
        body.resize(batches_len as usize, 0);
        reader.read_exact(&mut body).map_err(io)?;
        if envelope::checksum(log_id, &body) != crc {
            return Ok(Scan {
                entries,
                ..damage(pos, end, "envelope checksum mismatch")
            });
        }
        let first = entries.len();
        let mut at = 0usize;
        while at < body.len() {
            let Ok(h) = BatchHeader::parse_checked(&body[at..]) else {
                entries.truncate(first);
                return Ok(Scan {
                    entries,
                    ..damage(pos, end, "bad batch inside a valid envelope")
                });
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
        pos = end;
    }
}
