use thiserror::Error;

/// Why a producer's batch or request is refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProducerError {
    #[error("producer {producer_id}: epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: sequence {first_seq} out of order, expected {expected}")]
    OutOfOrder {
        producer_id: i64,
        first_seq: i32,
        expected: i32,
    },
    #[error("transactions are not supported yet ({what})")]
    TransactionsUnsupported { what: String },
    #[error(
        "producer {producer_id}: the original of retried sequence {first_seq} failed: {reason}"
    )]
    OriginalFailed {
        producer_id: i64,
        first_seq: i32,
        reason: String,
    },
    #[error("producer state store {path}: {reason}")]
    Store { path: String, reason: String },
}
