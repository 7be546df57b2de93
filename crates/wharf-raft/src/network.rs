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
    /// One request and its reply. Cancel-safe: openraft drops the call at its own deadline,
    /// and a connection left between a request and its reply would hand that reply to the
    /// next request (an AppendEntries success answering other entries), so the connection is
    /// taken out for the exchange and put back only once the reply was read.
    async fn call(&mut self, rpc: Rpc, ttl: Duration) -> Result<Reply, CallError> {
        if self.factory.cuts.is_cut(self.target) {
            self.stream = None;
            return Err(CallError::Cut(self.target));
        }
        let stream = self.stream.take();
        // openraft's own deadline (the same `ttl`) usually fires first: that is a timeout it
        // retries at once; this one is the bound when the caller does not impose one.
        let result = tokio::time::timeout(ttl + ttl / 2, self.exchange(stream, rpc)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(ttl + ttl / 2)),
        };
        if result.is_ok() {
            self.factory
                .answered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(self.target, Instant::now());
        }
        result
    }

    async fn exchange(
        &mut self,
        stream: Option<BufReader<TcpStream>>,
        rpc: Rpc,
    ) -> Result<Reply, CallError> {
        let max = self.factory.max_frame_bytes;
        let mut stream = if let Some(stream) = stream {
            stream
        } else {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(FrameError::from)?;
            stream.set_nodelay(true).map_err(FrameError::from)?;
            BufReader::new(stream)
        };
        let frame = RequestFrame {
            group: self.factory.group,
            from: self.factory.node_id,
            rpc,
        };
        write_request(&mut stream, frame, max).await?;
        let body = read_frame(&mut stream, max)
            .await?
            .ok_or(CallError::Closed)?;
        // Whole: the connection can carry the next request.
        self.stream = Some(stream);
        let reply: Reply = serde_json::from_slice(&body).map_err(FrameError::from)?;
        if let Reply::UnknownGroup(group) = reply {
            return Err(CallError::UnknownGroup(group));
        }
        Ok(reply)
    }
}

/// openraft backs off (500 ms with no RPC to that peer) after `Unreachable`: for a peer that
/// cannot be reached, not for a slow answer, which it retries at once (a commit waits on it).
fn unreachable<E: std::error::Error>(e: &CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Cut(_) | CallError::Closed | CallError::Frame(FrameError::Io(_)) => {
            RPCError::Unreachable(Unreachable::new(e))
        }
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

#[cfg(test)]
mod tests {
    use openraft::raft::VoteRequest as Req;
    use openraft::Vote;
    use tokio::net::TcpListener;

    use super::*;
    use crate::frame::{decode_request, write_frame, DEFAULT_MAX_FRAME_BYTES};

    /// A peer that answers each vote request on a connection in order, echoing its vote, the
    /// first (term 1) only after a while.
    async fn slow_peer() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    while let Ok(Some(body)) =
                        read_frame(&mut stream, DEFAULT_MAX_FRAME_BYTES).await
                    {
                        let Ok(RequestFrame {
                            rpc: Rpc::Vote(req),
                            ..
                        }) = decode_request(&body)
                        else {
                            return;
                        };
                        if req.vote.leader_id().term == 1 {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        let reply = Reply::Vote(Ok(VoteResponse::new(req.vote, None, true)));
                        if write_frame(&mut stream, &reply, DEFAULT_MAX_FRAME_BYTES)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// openraft drops an RPC at its deadline: the next one on that connection must not read
    /// the dropped one's late reply as its own.
    #[tokio::test]
    async fn a_call_dropped_mid_way_leaves_no_reply_for_the_next() {
        let addr = slow_peer().await;
        let mut factory = NetworkFactory::new(0, 1, Cuts::default())
            .with_addresses(BTreeMap::from([(2, addr.clone())]));
        let mut conn = factory.new_client(2, &BasicNode::new(addr)).await;
        let option = RPCOption::new(Duration::from_secs(5));
        let first = tokio::time::timeout(
            Duration::from_millis(50),
            conn.vote(Req::new(Vote::new(1, 1), None), option.clone()),
        )
        .await;
        assert!(first.is_err(), "the first call is dropped at 50 ms");
        let second = conn
            .vote(Req::new(Vote::new(2, 1), None), option)
            .await
            .unwrap();
        assert_eq!(second.vote, Vote::new(2, 1), "the second call's own answer");
    }
}
