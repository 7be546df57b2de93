//! The client side of node-to-node RPCs: one TCP connection per (group, peer), one request in
//! flight on it, reopened after any failure. `Cuts` is the test seam that drops a node's
//! cluster traffic (both directions) to simulate a network partition.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tokio::io::BufReader;
use tokio::net::TcpStream;

use crate::frame::{read_frame, write_request, FrameError, NodeCard, Reply, RequestFrame, Rpc};
use crate::types::{NodeId, TypeConfig};

/// Peers this node neither sends to nor accepts requests from. Empty in production.
#[derive(Clone, Default)]
pub struct Cuts(Arc<Mutex<HashSet<NodeId>>>);

impl Cuts {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<NodeId>> {
        // A set of ids is consistent after any panic.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn cut(&self, peer: NodeId) {
        self.set().insert(peer);
    }

    pub fn heal(&self) {
        self.set().clear();
    }

    pub fn is_cut(&self, peer: NodeId) -> bool {
        self.set().contains(&peer)
    }
}

/// Makes the connection of one group to each peer.
#[derive(Clone)]
pub struct NetworkFactory {
    group: u64,
    node_id: NodeId,
    cuts: Cuts,
    max_frame_bytes: usize,
    /// Where this node dials each peer, overriding the address in the raft membership (which
    /// whichever node initialized the group wrote): this node's own `cluster_peers`.
    addresses: Arc<BTreeMap<NodeId, String>>,
    /// When each peer last answered an RPC of this group (Kafka's ISR is the replicas heard
    /// from lately).
    answered: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl NetworkFactory {
    pub fn new(group: u64, node_id: NodeId, cuts: Cuts) -> Self {
        Self {
            group,
            node_id,
            cuts,
            max_frame_bytes: crate::frame::DEFAULT_MAX_FRAME_BYTES,
            addresses: Arc::default(),
            answered: Arc::default(),
        }
    }

    /// When each peer last answered an RPC of this group from this node.
    pub fn last_answers(&self) -> HashMap<NodeId, Instant> {
        self.answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Dials the peers at these addresses rather than at the membership's.
    #[must_use]
    pub fn with_addresses(mut self, addresses: BTreeMap<NodeId, String>) -> Self {
        self.addresses = Arc::new(addresses);
        self
    }
}

/// Asks the node listening at `addr` for its card (`None`: it has not set one yet).
pub async fn hello(addr: &str, from: NodeId, ttl: Duration) -> Result<Option<NodeCard>, String> {
    match one_call(addr, from, Rpc::Hello, ttl).await? {
        Reply::Hello(card) => Ok(card),
        _ => Err("reply does not match the request".to_string()),
    }
}

/// Hands `body` to the forward handler of the node listening at `addr` and returns its
/// answer (an error when the node cannot be reached in `ttl` or has no handler).
pub async fn forward(
    addr: &str,
    from: NodeId,
    body: String,
    ttl: Duration,
) -> Result<String, String> {
    match one_call(addr, from, Rpc::Forward(body), ttl).await? {
        Reply::Forward(answer) => answer,
        _ => Err("reply does not match the request".to_string()),
    }
}

/// Makes a call on the broker of the node listening at `addr`.
pub async fn call(
    addr: &str,
    from: NodeId,
    call: serde_json::Value,
    ttl: Duration,
) -> Result<(), String> {
    match one_call(addr, from, Rpc::Call(call), ttl).await? {
        Reply::Call(answer) => answer,
        _ => Err("reply does not match the request".to_string()),
    }
}

/// One request on a connection of its own, bounded by `ttl`.
async fn one_call(addr: &str, from: NodeId, rpc: Rpc, ttl: Duration) -> Result<Reply, String> {
    let exchange = async {
        let mut stream = BufReader::new(
            TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        );
        let frame = RequestFrame {
            group: 0,
            from,
            rpc,
        };
        let max = crate::frame::DEFAULT_MAX_FRAME_BYTES;
        write_request(&mut stream, frame, max)
            .await
            .map_err(|e| e.to_string())?;
        let body = read_frame(&mut stream, max)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("peer closed the connection")?;
        serde_json::from_slice::<Reply>(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(ttl, exchange)
        .await
        .map_err(|_| format!("timed out after {ttl:?}"))?
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection {
            factory: self.clone(),
            target,
            addr: self
                .addresses
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
            stream: None,
        }
    }
}

pub struct Connection {
    factory: NetworkFactory,
    target: NodeId,
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("peer {0} is cut off")]
    Cut(NodeId),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("peer closed the connection")]
    Closed,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("peer has no group {0}")]
    UnknownGroup(u64),
    #[error("reply does not match the request")]
    Mismatch,
}

impl Connection {
    async fn call(&mut self, rpc: Rpc, ttl: Duration) -> Result<Reply, CallError> {
        if self.factory.cuts.is_cut(self.target) {
            self.stream = None;
            return Err(CallError::Cut(self.target));
        }
        let result = tokio::time::timeout(ttl, self.exchange(rpc)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(ttl)),
        };
        if result.is_err() {
            self.stream = None;
        } else {
            self.factory
                .answered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(self.target, Instant::now());
        }
        result
    }

    async fn exchange(&mut self, rpc: Rpc) -> Result<Reply, CallError> {
        let max = self.factory.max_frame_bytes;
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(FrameError::from)?;
            stream.set_nodelay(true).map_err(FrameError::from)?;
            self.stream = Some(BufReader::new(stream));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(CallError::Closed);
        };
        let frame = RequestFrame {
            group: self.factory.group,
            from: self.factory.node_id,
            rpc,
        };
        write_request(stream, frame, max).await?;
        let body = read_frame(stream, max).await?.ok_or(CallError::Closed)?;
        let reply: Reply = serde_json::from_slice(&body).map_err(FrameError::from)?;
        if let Reply::UnknownGroup(group) = reply {
            return Err(CallError::UnknownGroup(group));
        }
        Ok(reply)
    }
}

fn unreachable<E: std::error::Error>(e: &CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Cut(_)
        | CallError::Closed
        | CallError::Timeout(_)
        | CallError::Frame(FrameError::Io(_)) => RPCError::Unreachable(Unreachable::new(e)),
        _ => RPCError::Network(NetworkError::new(e)),
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Rpc::Append(rpc), option.hard_ttl()).await {
            Ok(Reply::Append(Ok(r))) => Ok(r),
            Ok(Reply::Append(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unreachable(&CallError::Mismatch)),
            Err(e) => Err(unreachable(&e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(Rpc::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Reply::Snapshot(Ok(r))) => Ok(r),
            Ok(Reply::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unreachable(&CallError::Mismatch)),
            Err(e) => Err(unreachable(&e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Rpc::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(Ok(r))) => Ok(r),
            Ok(Reply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(_) => Err(unreachable(&CallError::Mismatch)),
            Err(e) => Err(unreachable(&e)),
        }
    }
}
