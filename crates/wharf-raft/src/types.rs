//! The openraft type configuration of a shard group.

use std::io::Cursor;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wharf_storage::{AppendInfo, Position};

pub type NodeId = u64;

/// A raft entry's payload: the writes of one or more partition logs of the shard, each a
/// shard-log entry of its own. Several parts make one replication round and one fdatasync per
/// node (ARCHITECTURE decision 7): the leader gathers the writes that queued while earlier
/// entries were in flight (`replicated`). Stored as a `Group` control record followed by the
/// parts when there is more than one (`log_store`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub parts: Vec<Part>,
}

/// One partition log's batches in a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub log_id: u64,
    /// Sent as raw bytes beside the JSON of an AppendEntries frame (`frame`); in JSON, a list
    /// of byte values.
    #[serde(with = "bytes_as_list")]
    pub batches: Bytes,
    /// Non-zero for a write acknowledged after the leader's own write (Kafka's acks=1): the
    /// leader's log store completes the writer registered under it once the part is on its
    /// disk. Not stored in the shard log (entries read back have 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_ack: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u64) -> bool {
    *v == 0
}

mod bytes_as_list {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(bytes.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(Bytes::from)
    }
}

/// What applying an entry returns to its writers: each part's offsets, and where the entry
/// ends in the shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    pub parts: Vec<PartInfo>,
    pub segment: u64,
    pub offset: u64,
}

/// The offsets one part was given, and where its shard entry ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PartInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    pub segment: u64,
    pub offset: u64,
}

impl PartInfo {
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

impl Response {
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
