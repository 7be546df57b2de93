use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "shard {shard_id} is poisoned after a failed fsync or write rollback; restart required"
    )]
    Poisoned { shard_id: usize },
    #[error("shard {shard_id}: write failed: {message}")]
    WriteFailed { shard_id: usize, message: String },
    #[error("log {log_id}: offset {offset} out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        log_id: u64,
        offset: i64,
        log_start: i64,
        high_watermark: i64,
    },
    #[error("log {log_id} does not exist")]
    UnknownLog { log_id: u64 },
    #[error("log {log_id}: batch is invalid: {source}")]
    InvalidBatch {
        log_id: u64,
        #[source]
        source: wharf_record::RecordError,
    },
    #[error("segment {path} at byte {position}: stored data failed its checksum")]
    Corrupt { path: PathBuf, position: u64 },
    #[error("storage is shut down")]
    ShutDown,
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
