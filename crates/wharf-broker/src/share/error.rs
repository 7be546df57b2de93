use thiserror::Error;

/// Share-group failures a client can see; front ends map each to their error code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShareError {
    #[error("unknown share-group member {0}")]
    UnknownMemberId(String),
    #[error("member {member_id}: epoch {sent} is fenced (current {current})")]
    FencedMemberEpoch {
        member_id: String,
        sent: i32,
        current: i32,
    },
    #[error("share session of member {0} not found")]
    SessionNotFound(String),
    #[error("share session of member {member_id}: epoch {sent}, expected {expected}")]
    InvalidSessionEpoch {
        member_id: String,
        sent: i32,
        expected: i32,
    },
    #[error("group {0} is not a share group")]
    NotShareGroup(String),
    #[error("share group {0} not found")]
    GroupNotFound(String),
    #[error("share group {0} has members: stop them first")]
    NonEmptyGroup(String),
    #[error("invalid share request: {0}")]
    InvalidRequest(String),
}
