use thiserror::Error;
use wharf_record::RecordError;
use wharf_storage::StorageError;

/// Every failure a client can see. Front ends map each to their protocol's error code.
#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("unknown topic or partition: {topic}[{partition}]")]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    #[error("topic {topic} already exists")]
    TopicAlreadyExists { topic: String },
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: String },
    #[error("invalid partitions for {topic}: {reason}")]
    InvalidPartitions { topic: String, reason: String },
    #[error("invalid replication factor {factor}: this broker is a single node")]
    InvalidReplicationFactor { factor: i32 },
    #[error("invalid config {key}={value}: {reason}")]
    InvalidConfig {
        key: String,
        value: String,
        reason: String,
    },
    #[error("corrupt message for {topic}[{partition}]: {source}")]
    CorruptMessage {
        topic: String,
        partition: i32,
        #[source]
        source: RecordError,
    },
    /// Kafka's INVALID_RECORD: a record the topic's type cannot accept.
    #[error("invalid record for {topic}[{partition}]: {reason}")]
    InvalidRecord {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("batch of {size} bytes exceeds max.message.bytes {max} of {topic}")]
    MessageTooLarge {
        topic: String,
        size: usize,
        max: usize,
    },
    #[error("{topic}[{partition}]: offset {offset} out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        log_start: i64,
        high_watermark: i64,
    },
    #[error("{topic}: min.insync.replicas {required} cannot be met by a single replica")]
    NotEnoughReplicas { topic: String, required: i32 },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("metadata store error: {0}")]
    Metadata(String),
    /// In a cluster: no controller could take the metadata change now (Kafka's
    /// NOT_CONTROLLER; clients retry).
    #[error("no controller: {0}")]
    NotController(String),
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    #[error(transparent)]
    Producer(#[from] crate::producer::ProducerError),
    #[error(transparent)]
    Txn(#[from] crate::txn::TxnError),
    #[error(transparent)]
    Cursor(#[from] crate::cursor::CursorError),
    #[error(transparent)]
    Share(#[from] crate::share::ShareError),
}
