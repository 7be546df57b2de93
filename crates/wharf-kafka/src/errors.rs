//! Broker errors as Kafka error codes: one exhaustive match.

use kafka_protocol::ResponseError;
use wharf_broker::group::GroupError;
use wharf_broker::txn::TxnError;
use wharf_broker::{BrokerError, ProducerError, StorageError};

pub fn code(error: &BrokerError) -> i16 {
    kafka_error(error).code()
}

/// The error code of an optional group error (0 for none).
pub fn group_code(error: Option<&GroupError>) -> i16 {
    error.map_or(0, |e| group_error(e).code())
}

pub fn group_error(error: &GroupError) -> ResponseError {
    match error {
        GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupError::NotCoordinator { .. } => ResponseError::NotCoordinator,
        GroupError::CoordinatorNotAvailable { .. } => ResponseError::CoordinatorNotAvailable,
        GroupError::InvalidGroupId { .. } => ResponseError::InvalidGroupId,
        GroupError::UnknownMemberId { .. } => ResponseError::UnknownMemberId,
        GroupError::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
        GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress { .. } => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol { .. } => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout { .. } => ResponseError::InvalidSessionTimeout,
        GroupError::FencedInstanceId { .. } => ResponseError::FencedInstanceId,
        GroupError::GroupIdNotFound { .. } => ResponseError::GroupIdNotFound,
        GroupError::NonEmptyGroup { .. } => ResponseError::NonEmptyGroup,
        GroupError::GroupSubscribedToTopic { .. } => ResponseError::GroupSubscribedToTopic,
        GroupError::UnknownTopicOrPartition { .. } => ResponseError::UnknownTopicOrPartition,
        GroupError::OffsetMetadataTooLarge { .. } => ResponseError::OffsetMetadataTooLarge,
        GroupError::InvalidCommitOffset { .. } => ResponseError::OffsetOutOfRange,
        GroupError::FencedMemberEpoch { .. } => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch { .. } => ResponseError::StaleMemberEpoch,
        GroupError::UnsupportedAssignor { .. } => ResponseError::UnsupportedAssignor,
        GroupError::InvalidRequest { .. } => ResponseError::InvalidRequest,
        GroupError::InvalidRegularExpression { .. } => ResponseError::InvalidRegularExpression,
        GroupError::GroupMaxSizeReached { .. } => ResponseError::GroupMaxSizeReached,
    }
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
        BrokerError::InvalidRecord { .. } => ResponseError::InvalidRecord,
        BrokerError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        BrokerError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        BrokerError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        BrokerError::Metadata(_) => ResponseError::UnknownServerError,
        BrokerError::NotController(_) => ResponseError::NotController,
        BrokerError::Group(g) => group_error(g),
        BrokerError::Producer(p) => producer_error(p),
        BrokerError::Txn(t) => txn_error(t),
        BrokerError::Cursor(c) => cursor_error(c),
        BrokerError::Share(s) => share_error(s),
        BrokerError::Storage(s) => match s {
            StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            StorageError::UnknownLog { .. } => ResponseError::UnknownTopicOrPartition,
            StorageError::InvalidBatch { .. } => ResponseError::CorruptMessage,
            StorageError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
            StorageError::Io { .. }
            | StorageError::TruncateReplicated { .. }
            | StorageError::Poisoned { .. }
            | StorageError::WriteFailed { .. }
            | StorageError::Corrupt { .. }
            | StorageError::Damaged { .. }
            | StorageError::PositionOutOfRange { .. }
            | StorageError::ShutDown => ResponseError::KafkaStorageError,
        },
    }
}

pub fn cursor_error(error: &wharf_broker::cursor::CursorError) -> ResponseError {
    use wharf_broker::cursor::CursorError;
    match error {
        CursorError::InvalidRecordState { .. } => ResponseError::InvalidRecordState,
        CursorError::State(_) => ResponseError::UnknownServerError,
    }
}

pub fn share_error(error: &wharf_broker::share::ShareError) -> ResponseError {
    use wharf_broker::share::ShareError;
    match error {
        ShareError::UnknownMemberId(_) => ResponseError::UnknownMemberId,
        ShareError::FencedMemberEpoch { .. } => ResponseError::FencedMemberEpoch,
        ShareError::SessionNotFound(_) => ResponseError::ShareSessionNotFound,
        ShareError::InvalidSessionEpoch { .. } => ResponseError::InvalidShareSessionEpoch,
        ShareError::NotShareGroup(_) | ShareError::GroupNotFound(_) => {
            ResponseError::GroupIdNotFound
        }
        ShareError::NonEmptyGroup(_) => ResponseError::NonEmptyGroup,
        ShareError::InvalidRequest(_) => ResponseError::InvalidRequest,
    }
}

pub fn txn_error(error: &TxnError) -> ResponseError {
    match error {
        TxnError::NotCoordinator { .. } => ResponseError::NotCoordinator,
        TxnError::CoordinatorNotAvailable { .. } => ResponseError::CoordinatorNotAvailable,
        TxnError::InvalidTimeout { .. } => ResponseError::InvalidTransactionTimeout,
        TxnError::InvalidProducerIdMapping { .. } => ResponseError::InvalidProducerIdMapping,
        TxnError::ProducerFenced { .. } => ResponseError::ProducerFenced,
        TxnError::ConcurrentTransactions { .. } => ResponseError::ConcurrentTransactions,
        TxnError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
    }
}

pub fn producer_error(error: &ProducerError) -> ResponseError {
    match error {
        ProducerError::InvalidEpoch { .. } => ResponseError::InvalidProducerEpoch,
        ProducerError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
        // What Kafka answers while no transaction coordinator is available; FindCoordinator
        // answers transaction keys the same way.
        ProducerError::TransactionsUnsupported { .. } => ResponseError::CoordinatorNotAvailable,
        // Retriable: the client sends the batch again, and it is appended then.
        ProducerError::OriginalFailed { .. } | ProducerError::Store { .. } => {
            ResponseError::KafkaStorageError
        }
    }
}
