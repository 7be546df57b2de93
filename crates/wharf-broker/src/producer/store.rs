//! The producer state snapshot, `producer_state.json` in the data directory: per log, the
//! offset it covers (every batch below it is reflected) and its producers. Written to a
//! temporary file, fsynced and renamed, so a crash leaves the old or the new snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use wharf_storage::{durable, FileSystem, LogId};

use super::state::ProducerSnapshot;
use super::ProducerError;
use crate::BrokerError;

pub const FILE_NAME: &str = "producer_state.json";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSnapshot {
    /// The log end offset when taken: replay starts here.
    pub offset: i64,
    pub producers: Vec<ProducerSnapshot>,
    /// Open and aborted transactions (absent in snapshots written before transactions).
    #[serde(default)]
    pub transactions: crate::txn::PartitionTxnIndex,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub version: u32,
    pub logs: BTreeMap<LogId, LogSnapshot>,
}

impl Default for SnapshotFile {
    fn default() -> Self {
        Self {
            version: VERSION,
            logs: BTreeMap::new(),
        }
    }
}

fn store_err(path: &Path, e: impl std::fmt::Display) -> BrokerError {
    ProducerError::Store {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
    .into()
}

/// The snapshot at `path`; empty when there is none. A snapshot that does not parse is
/// ignored (every log is then replayed in full), never fatal.
pub fn read(fs: &dyn FileSystem, path: &Path) -> Result<SnapshotFile, BrokerError> {
    match fs.read(path) {
        Ok(bytes) => match serde_json::from_slice::<SnapshotFile>(&bytes) {
            Ok(file) if file.version == VERSION => Ok(file),
            Ok(file) => {
                tracing::warn!(path = %path.display(), version = file.version,
                    "unknown producer snapshot version; replaying logs");
                Ok(SnapshotFile::default())
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error,
                    "unreadable producer snapshot; replaying logs");
                Ok(SnapshotFile::default())
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SnapshotFile::default()),
        Err(e) => Err(store_err(path, e)),
    }
}

pub fn write(fs: &dyn FileSystem, path: &Path, file: &SnapshotFile) -> Result<(), BrokerError> {
    let bytes = serde_json::to_vec(file).map_err(|e| store_err(path, e))?;
    durable::replace(fs, path, &bytes).map_err(|e| store_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_a_damaged_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(
            read(&wharf_storage::RealFs, &path).unwrap(),
            SnapshotFile::default()
        );
        let mut file = SnapshotFile::default();
        file.logs.insert(
            3,
            LogSnapshot {
                offset: 42,
                producers: vec![ProducerSnapshot {
                    producer_id: 9,
                    epoch: 1,
                    last_append_ms: 5,
                    batches: vec![(0, 4, 37, 41)],
                }],
                transactions: {
                    let mut index = crate::txn::PartitionTxnIndex::default();
                    index.on_data(9, 30);
                    index.on_marker(9, 35, false);
                    index.on_data(9, 37);
                    index
                },
            },
        );
        write(&wharf_storage::RealFs, &path, &file).unwrap();
        assert_eq!(read(&wharf_storage::RealFs, &path).unwrap(), file);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(
            read(&wharf_storage::RealFs, &path).unwrap(),
            SnapshotFile::default()
        );
    }

    #[test]
    fn a_snapshot_written_before_transactions_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            br#"{"version":1,"logs":{"3":{"offset":42,"producers":[{"producer_id":9,"epoch":1,"last_append_ms":5,"batches":[[0,4,37,41]]}]}}}"#,
        )
        .unwrap();
        let file = read(&wharf_storage::RealFs, &path).unwrap();
        let log = &file.logs[&3];
        assert_eq!(log.offset, 42);
        assert_eq!(log.producers[0].batches, vec![(0, 4, 37, 41)]);
        assert_eq!(log.transactions, crate::txn::PartitionTxnIndex::default());
    }
}
