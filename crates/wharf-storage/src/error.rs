use std::path::PathBuf;
use std::sync::Arc;

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
    /// A write or fdatasync failed; the cause (ENOSPC, EIO, ...) is the source. Shared by
    /// every append the failed group commit covered.
    #[error("shard {shard_id}: write failed: {source}")]
    WriteFailed {
        shard_id: usize,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("log {log_id}: offset {offset} out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        log_id: u64,
        offset: i64,
        log_start: i64,
        high_watermark: i64,
    },
    #[error("shard {shard_id}: position {segment}:{offset} is not in the log")]
    PositionOutOfRange {
        shard_id: usize,
        segment: u64,
        offset: u64,
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
    #[error(
        "segment {path}: bytes {start}..{end} are damaged ({reason}) and valid entries follow \
         at byte {valid_at}, so this is not a torn tail and acknowledged data may be lost; \
         restore the data, or start with recovery_truncate_damaged=true to cut the segment at \
         byte {start} (`wharf storage verify` lists every damaged range)"
    )]
    Damaged {
        path: PathBuf,
        start: u64,
        end: u64,
        valid_at: u64,
        reason: &'static str,
    },
    #[error("storage is shut down")]
    ShutDown,
    /// A replicated shard log on a node that is not the shard's leader (NOT_LEADER_OR_FOLLOWER).
    #[error("shard {shard_id}: this node is not the leader (leader: {leader:?})")]
    NotLeader {
        shard_id: usize,
        leader: Option<u64>,
    },
    /// A replicated shard log cut only by its consensus; committed entries are never dropped.
    #[error("shard {shard_id}: a replicated shard log is truncated by consensus only")]
    TruncateReplicated { shard_id: usize },
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A copy for each waiter of a failed group commit (the writer's own errors only).
    pub(crate) fn clone_for_waiter(&self) -> Self {
        match self {
            Self::WriteFailed { shard_id, source } => Self::WriteFailed {
                shard_id: *shard_id,
                source: source.clone(),
            },
            Self::Poisoned { shard_id } | Self::PositionOutOfRange { shard_id, .. } => {
                Self::Poisoned {
                    shard_id: *shard_id,
                }
            }
            _ => Self::ShutDown,
        }
    }

    /// The operating system's error number behind a failure, if one is known (ENOSPC, EIO).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Io { source, .. } => source.raw_os_error(),
            Self::WriteFailed { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
