//! Store now, visible later (ARCHITECTURE decision 12): delayed records of `delay` topics and
//! half (prepared) records of `transaction` topics wait in the internal log
//! `__wharf_scheduled`, indexed in memory, and are appended to their target partition when
//! due or committed. One engine serves both.
//!
//! # Layout
//! - `headers`: the `wharf-*` record headers, read by pure functions.
//! - `core`: [`Schedule`], the pure index of waiting records; check-back steps.
//! - `dedup`: [`dedup::DedupWindow`], message ids stored within a topic's dedup window.
//! - `records`: the byte layout of `__wharf_scheduled` records.
//! - `divert`: the produce side: classification of records, storing them to wait.
//! - `driver`: [`Scheduler`]: persistence, delivery, check-backs, recovery at start.
//!
//! ```text
//!  produce (typed topic) ─► records classified ─► all "now": ordinary append
//!         │ any delayed / half / commit / rollback
//!         ▼
//!  __wharf_scheduled (synced) ─► ack (offset -1) ─► due or committed ─► target partition,
//!                                                    engine producer id, next sequence
//!                                                   ─► tombstone in __wharf_scheduled
//! ```
//!
//! Delivery is exactly once: the engine appends with its own producer id, so a crash after a
//! delivery and before its tombstone is recognised at start from the target partition's
//! producer state (its last engine batches name the records they delivered), and at most
//! one delivery per partition is ever untombstoned.

pub mod core;
pub mod dedup;
mod divert;
mod driver;
pub mod headers;
pub mod records;

pub use core::{Entry, Half, HalfStep, Schedule};
pub(crate) use dedup::DedupPending;
pub(crate) use divert::{Diverted, Routed};
pub use driver::{
    Scheduler, ABANDONED_TOPIC, CHECK_TOPIC_PREFIX, ENGINE_PRODUCER_ID, SCHEDULED_TOPIC,
};

#[cfg(test)]
mod half_tests;
#[cfg(test)]
pub(crate) mod tests;
