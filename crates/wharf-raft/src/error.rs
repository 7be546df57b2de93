use std::net::SocketAddr;

use thiserror::Error;

/// Why a shard group or the cluster listener could not start.
#[derive(Debug, Error)]
pub enum RaftError {
    #[error("shard {shard_id}: no such shard in this storage")]
    UnknownShard { shard_id: usize },
    #[error("shard {shard_id}: raft state file {path}: {source}")]
    StateFile {
        shard_id: usize,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shard {shard_id}: cannot drop a half-written last entry: {source}")]
    Truncate {
        shard_id: usize,
        #[source]
        source: wharf_storage::StorageError,
    },
    #[error("shard {shard_id}: raft did not start: {source}")]
    Start {
        shard_id: usize,
        #[source]
        source: openraft::error::Fatal<u64>,
    },
    #[error("shard {shard_id}: raft config: {source}")]
    Config {
        shard_id: usize,
        #[source]
        source: openraft::ConfigError,
    },
    #[error("cluster listener {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
