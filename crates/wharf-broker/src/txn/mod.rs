//! Kafka transactions (ADR 0008): the pure transaction coordinator, the records it keeps in
//! `__transaction_state`, control-record markers, and each partition's index of open and
//! aborted transactions (last stable offset).
//!
//! # Layout
//! - `coordinator`: [`TxnCoordinatorState`], the pure state machine of every transactional id.
//! - `records`: the byte layout of `__transaction_state` records and of commit/abort markers.
//! - `partition_index`: [`PartitionTxnIndex`], open transactions and aborted ranges of one
//!   partition; the last stable offset.
//! - `driver`: [`TxnCoordinator`]: persistence, markers, offsets, the timeout tick.
//! - `error`: [`TxnError`].

pub mod coordinator;
mod driver;
mod error;
pub mod partition_index;
pub mod records;

pub use coordinator::{
    Completion, InitOutcome, Marker, TxnCoordinatorState, TxnMetadata, TxnOffset, TxnPartition,
    TxnState,
};
pub use driver::{TxnConfig, TxnCoordinator};
pub use error::TxnError;
pub use partition_index::{AbortedTxn, PartitionTxnIndex};

/// The internal topic holding transaction state (Kafka's name).
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";
/// Partitions of [`TRANSACTION_STATE_TOPIC`]; fixed, as ids are placed by a hash.
pub const TRANSACTION_STATE_PARTITIONS: i32 = 8;
