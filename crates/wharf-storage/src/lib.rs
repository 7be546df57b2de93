//! Shard logs: append-only segmented files holding the batches of many partitions, with an
//! in-memory index per partition log, group commit, recovery and retention.
//!
//! Storage knows shards, log ids (a partition as a number), offsets, batches and bytes — no
//! topic, group or wire protocol. The byte layout is in `docs/storage-format.md`.
//!
//! # Layout
//! Modules depend only on those listed before them:
//! - `fs`: the file seam ([`FileSystem`], [`StorageFile`]): real files, or `sim`'s simulated
//!   disk (feature `sim`) that cuts power and fails chosen writes and fsyncs.
//! - `durable`: creating and replacing files and directories so a crash keeps them whole.
//! - `clock`, `envelope`: wall-clock time; the entry framing (length, CRC-32C, log id).
//! - `segment`: one segment file and its sealed index file.
//! - `scan`: entry-by-entry reading with checksum checks (recovery, verify).
//! - `paging`: sealed segments' indexes loaded on demand from their index files, cached
//!   under a byte budget (ADR 0018).
//! - `index`: one partition log's index (a run per segment: the active one's batches in
//!   memory, sealed ones summarised and paged), offsets and fetch waiters.
//! - `checkpoint`, `registry`: every log by id; the persisted log start offsets.
//! - `shard`: the single writer thread of a shard: group commit (one fdatasync for every
//!   pending durable append), offset assignment, segment roll, truncation.
//! - `syncer`: a shard's fdatasync thread: the writer hands it written groups and goes on.
//! - `prealloc`: a shard's filler thread: zeros written and synced ahead of the writer, so
//!   appends' fdatasyncs land on blocks already allocated (ADR 0021).
//! - `log`: [`Log`], one partition's handle: append, read, offsets, timestamps, DeleteRecords.
//! - `shard_log`: the shard-log contract ([`ShardLog`]) replication implements a second time.
//! - `recovery`, `retention`: rebuilding a shard at start; retention and segment deletion.
//! - `compact`: the cleaner of `cleanup.policy=compact` logs: rewrites sealed segments with
//!   the latest record per key and swaps them in crash-safely.
//! - `storage`: [`Storage`], the entry point: open (recover), create and delete logs, shut down.
//! - `verify`: offline verification of a data directory.
//! - `stage`: stage stamps of the produce → fetch path (off unless enabled).
//!
//! ```text
//!  Log::append ──► shard channel ──► writer thread: assign offsets, one write, one fdatasync
//!                                        │
//!                                        ▼ index entries, high watermark, wake fetch waiters
//!  Log::read  ◄── per-log index (offset → segment, position) ◄── pread of the segment file
//! ```

mod checkpoint;
mod clock;
mod compact;
mod config;
pub mod durable;
mod envelope;
mod error;
mod fs;
mod id_map;
mod index;
mod log;
mod paging;
mod prealloc;
mod queue;
mod recovery;
mod registry;
mod retention;
mod scan;
mod segment;
mod shard;
mod shard_log;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod stage;
mod storage;
mod syncer;
mod verify;

pub use compact::{CompactionStats, SwapStep};
pub use config::{LogConfig, StorageConfig, DEFAULT_PREALLOCATE_BYTES, DEFAULT_SYNC_MIN_INTERVAL};
pub use error::StorageError;
pub use fs::{FileSystem, RealFs, StorageFile};
pub use log::{Log, PendingAppend, ReadResult, TimestampMatch};
pub use queue::WakeWritersLater;
pub use scan::Damage;
pub use shard::{AppendInfo, Appended, Durability, Position};
#[cfg(feature = "conformance")]
pub use shard_log::conformance;
pub use shard_log::{LocalShardLog, ShardEntry, ShardLog, Truncating};
pub use storage::{RecoveryStats, Storage};
pub use verify::{verify, DamagedRange, VerifyReport};

/// A partition's log, as the broker numbers it. Never reused.
pub type LogId = u64;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod paging_tests;
#[cfg(test)]
mod tests;
