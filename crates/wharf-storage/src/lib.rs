//! Shard logs: append-only segmented files holding the batches of many partitions, with an
//! in-memory index per partition log, group commit, recovery and retention.
//!
//! Storage knows shards, log ids (a partition as a number), offsets, batches and bytes — no
//! topic, group or wire protocol. The byte layout is in `docs/storage-format.md`.
//!
//! # Layout
//! - `storage`: [`Storage`], the entry point: open (recover), create and delete logs, shut down.
//! - `log`: [`Log`], one partition's handle: append, read, offsets, timestamps, delete records.
//! - `shard`: the single writer thread of a shard: group commit (one fdatasync for every
//!   pending durable append), offset assignment, segment roll.
//! - `segment`: one segment file and its sealed index file.
//! - `envelope`: the entry framing inside a segment (length, CRC-32C, log id).
//! - `recovery`: rebuilding indexes from sealed index files and scanning the active tail.
//! - `retention`: the housekeeping thread: retention by time and size, segment deletion.
//! - `checkpoint`: the persisted log start offsets.
//! - `scan`: entry-by-entry reading with checksum checks (recovery, verify).
//! - `verify`: offline verification of a data directory.
//!
//! ```text
//!  Log::append ──► shard channel ──► writer thread: assign offsets, one write, one fdatasync
//!                                        │
//!                                        ▼ index entries, high watermark, wake fetch waiters
//!  Log::read  ◄── per-log index (offset → segment, position) ◄── pread of the segment file
//! ```

mod checkpoint;
mod config;
mod envelope;
mod error;
mod log;
mod recovery;
mod retention;
mod scan;
mod segment;
mod shard;
mod storage;
mod verify;

pub use config::{LogConfig, StorageConfig};
pub use error::StorageError;
pub use log::{AppendInfo, Durability, Log, PendingAppend, ReadResult, TimestampMatch};
pub use scan::Damage;
pub use storage::{RecoveryStats, Storage};
pub use verify::{verify, DamagedRange, VerifyReport};

/// A partition's log, as the broker numbers it. Never reused.
pub type LogId = u64;

#[cfg(test)]
mod tests;
