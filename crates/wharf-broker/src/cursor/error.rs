use thiserror::Error;

/// Failures of cursor calls a client can see.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CursorError {
    /// Kafka's INVALID_RECORD_STATE: an acknowledgement of offsets the consumer does not hold.
    #[error("offsets {first}..={last}: {reason}")]
    InvalidRecordState {
        first: i64,
        last: i64,
        reason: &'static str,
    },
    /// The internal cursor log is not open or its record is malformed.
    #[error("cursor state: {0}")]
    State(String),
}
