//! Offline verification (`wharf storage verify`): every entry of every segment is checked, and
//! damaged byte ranges are reported. Reads only; the broker must not be running.

use std::path::{Path, PathBuf};

use crate::scan::{scan_from, zeros_from, Damage};
use crate::{RealFs, StorageError};

/// One damaged range of a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    pub segment: PathBuf,
    pub start: u64,
    pub end: u64,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub segments: usize,
    pub batches: usize,
    pub bytes: u64,
    pub damaged: Vec<DamagedRange>,
}

/// Verifies every segment under `data_dir/shards`.
pub fn verify(data_dir: &Path) -> Result<VerifyReport, StorageError> {
    let shards = data_dir.join("shards");
    let mut report = VerifyReport::default();
    let mut segments = Vec::new();
    for shard in std::fs::read_dir(&shards).map_err(|e| StorageError::io(&shards, e))? {
        let shard = shard.map_err(|e| StorageError::io(&shards, e))?.path();
        if !shard.is_dir() {
            continue;
        }
        for item in std::fs::read_dir(&shard).map_err(|e| StorageError::io(&shard, e))? {
            let path = item.map_err(|e| StorageError::io(&shard, e))?.path();
            if path.extension().is_some_and(|e| e == "log") {
                segments.push(path);
            }
        }
    }
    segments.sort();
    for path in segments {
        let file = RealFs::open_read_only(&path).map_err(|e| StorageError::io(&path, e))?;
        let size = file.size().map_err(|e| StorageError::io(&path, e))?;
        report.segments += 1;
        report.bytes += size;
        let mut start = 0;
        while start < size {
            let scan = scan_from(&*file, &path, size, start)?;
            report.batches += scan.entries.len();
            match scan.damage {
                None => break,
                // Zeros to the end: filled ahead of the writer (ADR 0021), not damage.
                Some(Damage { position, .. }) if zeros_from(&*file, &path, size, position)? => {
                    report.bytes -= size - position;
                    break;
                }
                Some(Damage {
                    position,
                    end,
                    reason,
                }) => {
                    report.damaged.push(DamagedRange {
                        segment: path.clone(),
                        start: position,
                        end,
                        reason,
                    });
                    start = end;
                }
            }
        }
    }
    Ok(report)
}
