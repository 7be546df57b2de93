//! What the group APIs take and return, free of any wire protocol: front ends translate
//! their requests into these and these into their responses.

use bytes::Bytes;

use crate::group::GroupError;

/// One protocol (assignor) a member supports, with its metadata (subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty on a first join.
    pub member_id: String,
    /// Static membership (`group.instance.id`).
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a first join gets MEMBER_ID_REQUIRED and must rejoin with the id.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol; only the leader gets them.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    pub fn error(error: GroupError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation_id: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Set by the leader: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: GroupError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One member of a LeaveGroup request (v3+ batches them).
#[derive(Debug, Clone)]
pub struct LeaveMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// The consumer a TxnOffsetCommit speaks for (v3+, KIP-447); `generation_id` -1 with an
/// empty member id when the client sent none.
#[derive(Debug, Clone)]
pub struct TxnCommitMember {
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

impl TxnCommitMember {
    pub fn none() -> Self {
        Self {
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    /// -1 with an empty member id: a commit from outside the group protocol (tools,
    /// `assign()` consumers); allowed only while the group has no members.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<CommitPartition>,
}

/// A committed offset as OffsetFetch returns it; `offset` -1 when none is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// ListGroups v5's group type: `classic` or `consumer` (KIP-848).
    pub group_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the group's protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub generation_id: i32,
    pub members: Vec<MemberDescription>,
}

/// ConsumerGroupHeartbeat (KIP-848), with topics by name (front ends map topic ids).
#[derive(Debug, Clone, Default)]
pub struct ConsumerHeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    /// 0 joins, -1 leaves, -2 leaves as a static member that will come back.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1 when unchanged.
    pub rebalance_timeout_ms: i32,
    /// `None` when unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// `None` when unchanged; empty clears it.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns; `None` when unchanged since its last heartbeat.
    pub owned: Option<Vec<(String, Vec<i32>)>>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerHeartbeatResponse {
    pub error: Option<GroupError>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's whole assignment, when it changed (or the request was a full one).
    pub assignment: Option<Vec<(String, Vec<i32>)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Vec<(String, Vec<i32>)>,
    pub target_assignment: Vec<(String, Vec<i32>)>,
}

/// ConsumerGroupDescribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberDescription>,
}
