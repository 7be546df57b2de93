//! The openraft type configuration of a shard group.

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use wharf_storage::{AppendInfo, Position};

pub type NodeId = u64;

/// A raft entry's payload: batches for one partition log of the shard (one shard-log entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub log_id: u64,
    pub batches: Vec<u8>,
    /// Non-zero for a write acknowledged after the leader's own write (Kafka's acks=1): the
    /// leader's log store completes the writer registered under it once the entry is on its
    /// disk. Not stored in the shard log (entries read back have 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_ack: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What applying an entry returns to the writer: its offsets and where it ends in the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    pub segment: u64,
    pub offset: u64,
}

impl Response {
    pub fn info(&self) -> AppendInfo {
        AppendInfo {
            base_offset: self.base_offset,
            last_offset: self.last_offset,
            log_start_offset: self.log_start_offset,
        }
    }

    pub fn position(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.offset,
        }
    }
}

openraft::declare_raft_types!(
    /// A shard group: entries carry partition batches, nodes are addressed by their cluster
    /// listener, snapshots are in memory (ADR 0012 says the limit).
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);
