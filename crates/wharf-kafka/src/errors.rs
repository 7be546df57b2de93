//! Broker errors as Kafka error codes: one exhaustive match.

use kafka_protocol::ResponseError;
use wharf_broker::{BrokerError, StorageError};

pub fn code(error: &BrokerError) -> i16 {
    kafka_error(error).code()
}

pub fn kafka_error(error: &BrokerError) -> ResponseError {
    match error {
        BrokerError::UnknownTopicOrPartition { .. } => ResponseError::UnknownTopicOrPartition,
        BrokerError::TopicAlreadyExists { .. } => ResponseError::TopicAlreadyExists,
        BrokerError::InvalidTopic { .. } => ResponseError::InvalidTopicException,
        BrokerError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
        BrokerError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        BrokerError::InvalidConfig { .. } => ResponseError::InvalidConfig,
        BrokerError::CorruptMessage { .. } => ResponseError::CorruptMessage,
        BrokerError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        BrokerError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        BrokerError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        BrokerError::Metadata(_) => ResponseError::UnknownServerError,
        BrokerError::Storage(s) => match s {
            StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            StorageError::UnknownLog { .. } => ResponseError::UnknownTopicOrPartition,
            StorageError::InvalidBatch { .. } => ResponseError::CorruptMessage,
            StorageError::Io { .. }
            | StorageError::Poisoned { .. }
            | StorageError::WriteFailed { .. }
            | StorageError::Corrupt { .. }
            | StorageError::ShutDown => ResponseError::KafkaStorageError,
        },
    }
}
