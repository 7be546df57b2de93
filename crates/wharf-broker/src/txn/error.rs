use thiserror::Error;

/// Why the transaction coordinator refuses a request. Each maps to one Kafka error code.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TxnError {
    #[error("transactional id {transactional_id:?}: this node is not its coordinator")]
    NotCoordinator { transactional_id: String },
    #[error("transaction coordinator not available: {reason}")]
    CoordinatorNotAvailable { reason: String },
    #[error("transactional id {transactional_id:?}: transaction.timeout.ms {timeout_ms} is not in 1..={max_ms}")]
    InvalidTimeout {
        transactional_id: String,
        timeout_ms: i32,
        max_ms: i32,
    },
    #[error("transactional id {transactional_id:?}: producer id {producer_id} does not own it")]
    InvalidProducerIdMapping {
        transactional_id: String,
        producer_id: i64,
    },
    #[error("transactional id {transactional_id:?}: epoch {epoch} is fenced by epoch {current}")]
    ProducerFenced {
        transactional_id: String,
        epoch: i16,
        current: i16,
    },
    #[error("transactional id {transactional_id:?}: a transaction is completing ({state})")]
    ConcurrentTransactions {
        transactional_id: String,
        state: &'static str,
    },
    #[error("transactional id {transactional_id:?}: {request} is invalid in state {state}")]
    InvalidTxnState {
        transactional_id: String,
        request: &'static str,
        state: &'static str,
    },
}
