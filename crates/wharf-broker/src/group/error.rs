//! Group coordinator errors: each is one Kafka error code a client acts on.

use thiserror::Error;

/// A failure of a group API call, for the whole request or one of its items.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GroupError {
    #[error("the coordinator is still loading group state")]
    CoordinatorLoadInProgress,
    #[error("group {group}: this node is not its coordinator (its partition's leader moved)")]
    NotCoordinator { group: String },
    #[error("the coordinator is not available: {reason}")]
    CoordinatorNotAvailable { reason: String },
    #[error("invalid group id {group:?}")]
    InvalidGroupId { group: String },
    #[error("group {group}: unknown member {member}")]
    UnknownMemberId { group: String, member: String },
    #[error("group {group}: a member id is required; rejoin with the one given")]
    MemberIdRequired { group: String },
    #[error("group {group}: generation {generation} is not the current generation {current}")]
    IllegalGeneration {
        group: String,
        generation: i32,
        current: i32,
    },
    #[error("group {group} is rebalancing")]
    RebalanceInProgress { group: String },
    #[error("group {group}: protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol { group: String },
    #[error("session timeout {timeout_ms} ms is outside {min}..={max}")]
    InvalidSessionTimeout { timeout_ms: i32, min: i32, max: i32 },
    #[error("group {group}: instance {instance} is now owned by another member")]
    FencedInstanceId { group: String, instance: String },
    #[error("group {group} does not exist")]
    GroupIdNotFound { group: String },
    #[error("group {group} has members")]
    NonEmptyGroup { group: String },
    #[error("group {group} is subscribed to topic {topic}")]
    GroupSubscribedToTopic { group: String, topic: String },
    #[error("unknown topic or partition {topic}[{partition}]")]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    #[error("commit metadata of {size} bytes exceeds {max}")]
    OffsetMetadataTooLarge { size: usize, max: usize },
    #[error("invalid commit offset {offset} for {topic}[{partition}]")]
    InvalidCommitOffset {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("group {group}: member {member} epoch {epoch} is fenced (current {current}); rejoin")]
    FencedMemberEpoch {
        group: String,
        member: String,
        epoch: i32,
        current: i32,
    },
    #[error("group {group}: member {member} epoch {epoch} is stale (current {current})")]
    StaleMemberEpoch {
        group: String,
        member: String,
        epoch: i32,
        current: i32,
    },
    #[error("unsupported assignor {name:?}; supported: uniform, range")]
    UnsupportedAssignor { name: String },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("invalid regular expression {regex:?}: {reason}")]
    InvalidRegularExpression { regex: String, reason: String },
    #[error("group {group} has reached its maximum size {max}")]
    GroupMaxSizeReached { group: String, max: usize },
}
