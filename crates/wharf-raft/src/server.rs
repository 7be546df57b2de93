//! The cluster listener of a node: serves node-to-node RPCs to the raft groups registered on
//! it. Hostile input rules of the Kafka port: a frame over the limit, a body that does not
//! decode or an unknown group closes that connection only, with a `warn` line naming the peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use openraft::Raft;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use crate::frame::{
    decode_request, read_frame, write_frame, NodeCard, Reply, RequestFrame, Rpc,
    DEFAULT_MAX_FRAME_BYTES,
};
use crate::network::Cuts;
use crate::types::{NodeId, TypeConfig};
use crate::RaftError;

type Groups = Arc<RwLock<HashMap<u64, Raft<TypeConfig>>>>;
type Card = Arc<RwLock<Option<NodeCard>>>;

/// What serves `Forward` requests: called with the sending node's id and the request body,
/// resolves to the reply body.
pub type ForwardHandler = Arc<
    dyn Fn(NodeId, String) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>
        + Send
        + Sync,
>;
type Forward = Arc<RwLock<Option<ForwardHandler>>>;

/// Serves a peer's `Call` (the server's broker behind it).
pub type CallHandler = Arc<
    dyn Fn(
            serde_json::Value,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;
type Calls = Arc<RwLock<Option<CallHandler>>>;

pub struct ClusterServer {
    addr: SocketAddr,
    groups: Groups,
    card: Card,
    forward: Forward,
    calls: Calls,
    stop: watch::Sender<bool>,
}

impl ClusterServer {
    /// Binds the cluster listener and serves it until [`ClusterServer::shutdown`] or drop.
    pub async fn bind(addr: SocketAddr, cuts: Cuts) -> Result<Self, RaftError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RaftError::Listen { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| RaftError::Listen { addr, source })?;
        let groups: Groups = Arc::default();
        let card: Card = Arc::default();
        let forward: Forward = Arc::default();
        let calls: Calls = Arc::default();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept(
            listener,
            Served {
                groups: groups.clone(),
                card: card.clone(),
                forward: forward.clone(),
                calls: calls.clone(),
                cuts,
            },
            stopped,
        ));
        tracing::info!(%addr, "cluster listener started");
        Ok(Self {
            addr,
            groups,
            card,
            forward,
            calls,
            stop,
        })
    }

    /// What this node answers to a peer's `Hello`.
    pub fn set_card(&self, card: NodeCard) {
        *self
            .card
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(card);
    }

    /// What serves peers' `Forward` requests (until set, they are answered with an error).
    pub fn set_forward(&self, handler: ForwardHandler) {
        *self
            .forward
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handler);
    }

    /// Who serves the peers' `Call`s (none: they are refused).
    pub fn set_call_handler(&self, handler: CallHandler) {
        *self
            .calls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handler);
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn register(&self, group: u64, raft: Raft<TypeConfig>) {
        write(&self.groups).insert(group, raft);
    }

    pub fn deregister(&self, group: u64) {
        write(&self.groups).remove(&group);
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        write(&self.groups).clear();
    }
}

impl Drop for ClusterServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn write(groups: &Groups) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Raft<TypeConfig>>> {
    // A map insert or remove cannot leave it half-changed.
    groups
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn group(groups: &Groups, id: u64) -> Option<Raft<TypeConfig>> {
    groups
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&id)
        .cloned()
}

/// What a connection serves: the groups, this node's card, the forward handler.
#[derive(Clone)]
struct Served {
    groups: Groups,
    card: Card,
    forward: Forward,
    calls: Calls,
    cuts: Cuts,
}

async fn accept(listener: TcpListener, served: Served, mut stopped: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let span = tracing::info_span!("cluster_connection", %peer);
                let stop = stopped.clone();
                tokio::spawn(serve(stream, peer, served.clone(), stop).instrument(span));
            }
            Err(error) => {
                tracing::warn!(%error, "cluster accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    served: Served,
    mut stopped: watch::Receiver<bool>,
) {
    let Served {
        groups,
        card,
        forward,
        calls,
        cuts,
    } = served;
    let _ = stream.set_nodelay(true);
    let mut stream = BufReader::new(stream);
    loop {
        let body = tokio::select! {
            b = read_frame(&mut stream, DEFAULT_MAX_FRAME_BYTES) => b,
            _ = stopped.changed() => return,
        };
        let body = match body {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%peer, %error, "bad cluster frame; closing the connection");
                return;
            }
        };
        let request: RequestFrame = match decode_request(&body) {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(%peer, %error, "cluster frame does not decode; closing the connection");
                return;
            }
        };
        if cuts.is_cut(request.from) {
            // Simulated partition: the request is dropped, as a cut network would.
            return;
        }
        if matches!(request.rpc, Rpc::Hello) {
            let reply = Reply::Hello(
                card.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            );
            if let Err(error) = write_frame(&mut stream, &reply, DEFAULT_MAX_FRAME_BYTES).await {
                tracing::warn!(%peer, %error, "cannot answer a hello; closing the connection");
                return;
            }
            continue;
        }
        if let Rpc::Forward(body) = request.rpc {
            let handler = forward
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let reply = match handler {
                Some(handler) => Reply::Forward(Ok(handler(request.from, body).await)),
                None => Reply::Forward(Err("this node serves no forwarded requests yet".into())),
            };
            if let Err(error) = write_frame(&mut stream, &reply, DEFAULT_MAX_FRAME_BYTES).await {
                tracing::warn!(%peer, %error, "cannot answer a forwarded request; closing the connection");
                return;
            }
            continue;
        }
        if let Rpc::Call(call) = request.rpc {
            let handler = calls
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let answer = match handler {
                Some(handler) => handler(call).await,
                None => Err("this node serves no calls".to_string()),
            };
            if let Err(error) =
                write_frame(&mut stream, &Reply::Call(answer), DEFAULT_MAX_FRAME_BYTES).await
            {
                tracing::warn!(%peer, %error, "cannot answer a call; closing the connection");
                return;
            }
            continue;
        }
        let Some(raft) = group(&groups, request.group) else {
            tracing::warn!(%peer, group = request.group, "cluster request for an unknown group; closing the connection");
            let _ = write_frame(
                &mut stream,
                &Reply::UnknownGroup(request.group),
                DEFAULT_MAX_FRAME_BYTES,
            )
            .await;
            return;
        };
        let reply = match request.rpc {
            Rpc::Append(rpc) => Reply::Append(raft.append_entries(rpc).await),
            Rpc::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
            Rpc::Snapshot(rpc) => Reply::Snapshot(raft.install_snapshot(rpc).await),
            Rpc::Hello | Rpc::Forward(_) | Rpc::Call(_) => continue,
        };
        if let Err(error) = write_frame(&mut stream, &reply, DEFAULT_MAX_FRAME_BYTES).await {
            tracing::warn!(%peer, %error, "cannot answer a cluster request; closing the connection");
            return;
        }
    }
}
