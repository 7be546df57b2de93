//! Reading a segment entry by entry, checking every envelope and batch checksum. Recovery uses
//! it to find a torn tail and to tell one from damage in the middle; `verify` reports damaged
//! ranges with it.

use std::path::Path;

use wharf_record::BatchHeader;

use crate::envelope::{self, ENVELOPE_LEN};
use crate::fs::StorageFile;
use crate::segment::SegmentEntry;
use crate::StorageError;

/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;
/// The smallest RecordBatch v2 (header without records).
const MIN_BATCH: u64 = 61;

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

/// Positional reads through a buffer of `CHUNK` bytes.
struct ChunkReader<'a> {
    file: &'a dyn StorageFile,
    size: u64,
    buf: Vec<u8>,
    buf_at: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(file: &'a dyn StorageFile, size: u64) -> Self {
        Self {
            file,
            size,
            buf: Vec::new(),
            buf_at: 0,
        }
    }

    /// `len` bytes at `at` (within the file size).
    fn bytes(&mut self, at: u64, len: usize) -> std::io::Result<&[u8]> {
        let end = at + len as u64;
        if at < self.buf_at || end > self.buf_at + self.buf.len() as u64 {
            let want = (self.size - at).min(len.max(CHUNK) as u64) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, at)?;
            self.buf_at = at;
        }
        let from = (at - self.buf_at) as usize;
        Ok(&self.buf[from..from + len])
    }
}

/// What one entry at `pos` holds: its batches, or why it is bad.
enum Parsed {
    Entry {
        end: u64,
        entries: Vec<SegmentEntry>,
    },
    Bad {
        end: u64,
        reason: &'static str,
    },
}

fn parse_entry(reader: &mut ChunkReader<'_>, pos: u64, size: u64) -> std::io::Result<Parsed> {
    if size - pos < ENVELOPE_LEN as u64 {
        return Ok(Parsed::Bad {
            end: size,
            reason: "partial envelope header",
        });
    }
    let mut header = [0u8; ENVELOPE_LEN];
    header.copy_from_slice(reader.bytes(pos, ENVELOPE_LEN)?);
    let (len, crc, log_id) = envelope::parse_header(&header);
    let batches_len = u64::from(len).saturating_sub((ENVELOPE_LEN - 4) as u64);
    let end = pos + ENVELOPE_LEN as u64 + batches_len;
    if batches_len < MIN_BATCH || end > size {
        return Ok(Parsed::Bad {
            end: size,
            reason: "torn entry",
        });
    }
    // Cheap checks of the first batch's framing before reading and checksumming the body, so
    // a search through damaged bytes stays linear.
    let first = reader.bytes(pos + ENVELOPE_LEN as u64, MIN_BATCH as usize)?;
    let first_len = i32::from_be_bytes([first[8], first[9], first[10], first[11]]);
    if first[16] != 2 || first_len < 49 || i64::from(first_len) + 12 > batches_len as i64 {
        return Ok(Parsed::Bad {
            end,
            reason: "bad batch header inside an entry",
        });
    }
    let body = reader.bytes(pos + ENVELOPE_LEN as u64, batches_len as usize)?;
    if envelope::checksum(log_id, body) != crc {
        return Ok(Parsed::Bad {
            end,
            reason: "envelope checksum mismatch",
        });
    }
    let mut entries = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        let Ok(h) = BatchHeader::parse_checked(&body[at..]) else {
            return Ok(Parsed::Bad {
                end,
                reason: "bad batch inside a valid envelope",
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
    Ok(Parsed::Entry { end, entries })
}

/// Scans `[start, size)` of a segment; stops at the first damaged entry.
pub(crate) fn scan_from(
    file: &dyn StorageFile,
    path: &Path,
    size: u64,
    start: u64,
) -> Result<Scan, StorageError> {
    let mut reader = ChunkReader::new(file, size);
    let mut entries = Vec::new();
    let mut pos = start;
    while pos < size {
        match parse_entry(&mut reader, pos, size).map_err(|e| StorageError::io(path, e))? {
            Parsed::Entry {
                end,
                entries: found,
            } => {
                entries.extend(found);
                pos = end;
            }
            Parsed::Bad { end, reason } => {
                return Ok(Scan {
                    entries,
                    damage: Some(Damage {
                        position: pos,
                        end,
                        reason,
                    }),
                })
            }
        }
    }
    Ok(Scan {
        entries,
        damage: None,
    })
}

/// Whether `[start, size)` of a segment holds only zeros: the part filled ahead of the
/// writer (ADR 0021), where the entries end cleanly.
pub(crate) fn zeros_from(
    file: &dyn StorageFile,
    path: &Path,
    size: u64,
    start: u64,
) -> Result<bool, StorageError> {
    let mut buf = vec![0u8; CHUNK];
    let mut at = start;
    while at < size {
        let n = usize::try_from((size - at).min(CHUNK as u64)).unwrap_or(CHUNK);
        let chunk = &mut buf[..n];
        file.read_exact_at(chunk, at)
            .map_err(|e| StorageError::io(path, e))?;
        if chunk.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// The first position after `damage` where a whole valid entry starts, if any: damage
/// followed by valid data is not a torn tail.
pub(crate) fn next_valid_entry(
    file: &dyn StorageFile,
    path: &Path,
    size: u64,
    damage: &Damage,
) -> Result<Option<u64>, StorageError> {
    let mut reader = ChunkReader::new(file, size);
    let io = |e| StorageError::io(path, e);
    // A plausible length says where the next entry starts; otherwise every byte is a candidate.
    if damage.end < size {
        if let Parsed::Entry { .. } = parse_entry(&mut reader, damage.end, size).map_err(io)? {
            return Ok(Some(damage.end));
        }
    }
    for at in damage.position + 1..size.saturating_sub(ENVELOPE_LEN as u64) {
        if let Parsed::Entry { .. } = parse_entry(&mut reader, at, size).map_err(io)? {
            return Ok(Some(at));
        }
    }
    Ok(None)
}
