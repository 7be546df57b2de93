//! Kafka RecordBatch v2 as bytes: a header view, CRC-32C validation, varints and a small builder.
//!
//! No I/O. Batches are stored and served exactly as the producer sent them; the broker only
//! rewrites the fields it owns (base offset, and the max timestamp for `LogAppendTime`).
//!
//! # Layout
//! - `batch`: the fixed 61-byte header, validation, the fields the broker rewrites.
//! - `records`: iteration over the records of an uncompressed batch.
//! - `varint`: zig-zag varints as Kafka encodes them.
//! - `builder`: builds uncompressed batches (internal records, tests).
//! - `error`: what can be wrong with a batch.

mod batch;
mod builder;
mod error;
mod records;
mod varint;

pub use batch::{set_base_offset, set_log_append_time, split_batches, BatchHeader, HEADER_LEN};
pub use builder::BatchBuilder;
pub use error::RecordError;
pub use records::{first_value, record_ranges, Record, RecordIter};
