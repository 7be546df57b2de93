//! Replication: a shard log as the raft log of one openraft group (ADR 0012, ARCHITECTURE
//! decision 7). A raft entry is one or more shard-log entries (the writes of several partitions
//! gathered by the leader), so one raft round and one fdatasync per node cover every partition
//! of the shard; the state machine is the log itself, and applying an entry only moves the
//! committed position.
//!
//! # Layout
//! - `error`: [`RaftError`], what opening a group or serving the cluster port can fail with.
//! - `types`: the openraft type configuration ([`TypeConfig`]), the entry payload
//!   ([`Request`]) and the apply response ([`Response`]).
//! - `state_file`: the per-shard raft state file (vote, anchor, term starts).
//! - `log_store`: openraft's log storage over a local shard log.
//! - `state_machine`: openraft's state machine: applied id, membership, committed watch,
//!   snapshots (the retained shard log).
//! - `frame`: the node-to-node frame codec (length-prefixed, bounded).
//! - `network`: the client side of node-to-node RPCs, with a test seam that cuts peers off.
//! - `server`: the cluster listener that serves RPCs to the groups of this node.
//! - `replicated`: [`ShardGroup`] (open a group over a shard) and [`ReplicatedShardLog`], the
//!   second implementation of the storage crate's `ShardLog` contract.
//!
//! ```text
//!  ReplicatedShardLog::append ─► Raft::client_write ─► leader log store: Log::submit (Synced)
//!        ▲                                  │                 │ one fdatasync per append call
//!        │                                  ▼                 ▼
//!   apply response ◄── state machine ◄── majority commit ◄── followers' log stores (Synced)
//!                      (committed watch moves)
//! ```

// openraft's storage traits return its `StorageError` (over 200 bytes); helpers return it too.
#![allow(clippy::result_large_err)]

mod error;
mod frame;
mod log_store;
mod network;
mod replicated;
mod server;
mod state_file;
mod state_machine;
mod types;

pub use error::RaftError;
pub use frame::NodeCard;
pub use network::{call, forward, hello, Cuts, NetworkFactory};
pub use replicated::{GroupConfig, ReplicatedShardLog, ShardGroup};
pub use server::{CallHandler, ClusterServer, ForwardHandler};
pub use types::{NodeId, Part, PartInfo, Request, Response, TypeConfig};
