//! Node-to-node frames: a 4-byte big-endian length, then a JSON body. Invariant: no frame
//! longer than the limit is read into memory; a reader stops at the first bad frame.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::types::{NodeId, TypeConfig};

/// The default bound on one frame (a snapshot chunk or an AppendEntries batch).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// A request from node `from` to the group `group` on the receiving node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestFrame {
    pub group: u64,
    pub from: NodeId,
    pub rpc: Rpc,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Who are you: the receiving node answers with its card (any group id).
    Hello,
    /// A request for the receiving node's forward handler (any group id): a JSON body the
    /// server's caller defines (the controller's metadata changes, KIP-590's forwarding).
    Forward(String),
    /// A call on the receiving node's broker (any group id), opaque to this crate.
    Call(serde_json::Value),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The receiving node has no such group (or is shutting it down).
    UnknownGroup(u64),
    /// The answer to `Hello`; `None` before the node has set its card.
    Hello(Option<NodeCard>),
    /// The forward handler's answer, or why there is none (no handler set yet).
    Forward(Result<String, String>),
    /// The answer to `Call`: served, or why not.
    Call(Result<(), String>),
}

/// What a node tells its peers about itself: its id and its Kafka listener as clients should
/// be told it (Metadata names every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCard {
    pub node_id: NodeId,
    pub kafka_host: String,
    pub kafka_port: i32,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame body does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Reads one frame body; `None` at a clean end of stream before a frame starts.
pub(crate) async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

pub(crate) async fn write_frame(
    writer: &mut (impl AsyncWrite + Unpin),
    value: &impl Serialize,
    max: usize,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(value)?;
    if body.len() > max {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max,
        });
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        max,
    })?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(())
}
