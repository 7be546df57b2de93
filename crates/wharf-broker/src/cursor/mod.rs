//! Cursors over logs (ARCHITECTURE decision 8): the queue semantics shared by Kafka share
//! groups and AMQP queues. A cursor, keyed by (owner, topic, partition), hands records of the
//! partition to consumers under a lock, takes per-offset acknowledgements (accept, release,
//! reject), gives expired locks back, counts deliveries, delays redelivery by a retry
//! backoff, archives a record rejected or delivered too often and hands it to a dead-letter
//! step exactly once. Its state is records in the internal log `__wharf_cursors`, replayed
//! at start. No wire protocol here: front ends name owners (a share group, a queue) and
//! translate.
//!
//! # Layout
//! - `core`: [`Cursor`], the pure state machine of one cursor, and [`CursorConfig`].
//! - `records`: the byte layout of `__wharf_cursors` records.
//! - `driver`: [`Cursors`] and the `Broker::cursor_*` calls: reads, persistence, lock
//!   expiry and the dead-letter step in the background, replay at start.
//! - `error`: [`CursorError`].
//!
//! ```text
//!  cursor_acquire ─► expire locks ─► available offsets (past backoff) ─► new batches from
//!                    next (≤ in-flight cap) ─► locked to the consumer ─► synced ─► records
//!  cursor_ack ─────► accept / release (backoff or archive) / reject (archive) ─► synced
//!  background ─────► lock expiry; archived ─► DeadLetterStep (once) ─► dead-letter topic
//! ```

mod core;
mod driver;
mod error;
mod records;
#[cfg(test)]
mod tests;

use std::fmt;

pub use self::core::{
    AckType, AcquiredRange, ArchiveReason, BatchKind, Cursor, CursorConfig, CursorTotals,
    DeadPending, Slot, SlotState, StartFrom,
};
pub use driver::{Cursors, CURSOR_TOPIC};
pub use error::CursorError;

/// Names a cursor: the owner (a share group, a queue) reading one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CursorKey {
    pub owner: String,
    pub topic: String,
    pub partition: i32,
}

impl CursorKey {
    pub fn new(owner: &str, topic: &str, partition: i32) -> Self {
        Self {
            owner: owner.to_string(),
            topic: topic.to_string(),
            partition,
        }
    }
}

impl fmt::Display for CursorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}[{}]", self.owner, self.topic, self.partition)
    }
}

/// What one acquisition locked.
#[derive(Debug, Clone, Default)]
pub struct Acquisition {
    /// Whole stored batches holding the acquired offsets; they may hold other offsets too,
    /// which the consumer must skip (only `ranges` are its to process).
    pub records: bytes::Bytes,
    pub ranges: Vec<AcquiredRange>,
    pub high_watermark: i64,
    pub log_start: i64,
}

/// A copy of a cursor's state, for describe commands and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorView {
    /// The first offset not settled.
    pub start: i64,
    /// The first offset never acquired.
    pub next: i64,
    pub in_flight: usize,
    pub acquired: usize,
    /// Offsets in the window available to acquire (not settled, not acquired); with the
    /// records from `next` to the high watermark, the exact backlog.
    pub available: usize,
    pub dead_letter_pending: usize,
    pub totals: CursorTotals,
}

/// A record as stored: what a dead-letter step may copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// An archived record handed to a dead-letter step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedRecord {
    pub cursor: CursorKey,
    pub offset: i64,
    pub delivery_count: u16,
    pub reason: ArchiveReason,
    /// The record, unless it is unreadable (deleted by retention, or in a compressed batch).
    pub record: Option<StoredRecord>,
}

/// The record a dead-letter step writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// What a front end does with archived records of its cursors (registered with
/// [`Cursors::register_dead_letter`]). The driver writes the records and makes the step
/// exactly once; the step only shapes them and recognises its own.
pub trait DeadLetterStep: Send + Sync {
    /// The dead-letter topic of `cursor` (created when missing), or `None`: archive only.
    fn topic(&self, cursor: &CursorKey) -> Option<String>;
    /// The record written for `archived`.
    fn record(&self, archived: &ArchivedRecord) -> DeadRecord;
    /// Whether a record with `headers` in the dead-letter topic was written for `offset`
    /// of `cursor` (used after a restart).
    fn written_for(
        &self,
        headers: &[(&[u8], Option<&[u8]>)],
        cursor: &CursorKey,
        offset: i64,
    ) -> bool;
}
