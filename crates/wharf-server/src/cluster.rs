//! A node of a cluster (ADR 0012): `cluster_peers` names every node's cluster listener; this
//! node binds its own (`cluster_listen`), runs each shard as an openraft group over it and
//! hands the broker their `ReplicatedShardLog`s. Without `cluster_peers` none of this runs.
//!
//! ```text
//!  settings ─► parse_peers ─► ClusterServer::bind(cluster_listen)
//!    ─► Broker::open_with_shard_logs ─► per shard: ShardGroup::open, register, initialize
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use openraft::BasicNode;
use wharf_broker::{BrokerError, ShardLogFactory, FIRST_RESERVED_LOG_ID};
use wharf_raft::{ClusterServer, Cuts, GroupConfig, NetworkFactory, ShardGroup};
use wharf_storage::ShardLog;

/// One entry of `cluster_peers`: a node id and its cluster listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
}

/// Parses `ID@HOST:PORT,...`; an empty (or blank) value is no cluster.
pub fn parse_peers(value: &str) -> anyhow::Result<Vec<Peer>> {
    let mut peers = Vec::new();
    let mut ids = BTreeSet::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((id, addr)) = item.split_once('@') else {
            bail!("cluster_peers: {item:?} is not ID@HOST:PORT");
        };
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("cluster_peers: node id of {item:?}"))?;
        let addr = addr.trim();
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            bail!("cluster_peers: {item:?} has no HOST:PORT after '@'");
        }
        if !ids.insert(id) {
            bail!("cluster_peers: node id {id} appears twice");
        }
        peers.push(Peer {
            id,
            addr: addr.to_string(),
        });
    }
    Ok(peers)
}

/// The raft timing of shard groups: a dead leader is replaced within about a second.
fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "wharf".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        // The snapshot is the retained shard log; building one on a schedule is not needed
        // while raft never purges the shard (retention is local: ADR 0012).
        snapshot_policy: openraft::SnapshotPolicy::Never,
        ..openraft::Config::default()
    }
}

/// The control log of shard `shard` among `shards`: a reserved log id the storage places in
/// that shard (`id % shards == shard`).
pub fn control_log(shard: usize, shards: usize) -> u64 {
    FIRST_RESERVED_LOG_ID.next_multiple_of(shards as u64) + shard as u64
}

/// This node's cluster listener and shard groups.
pub struct Cluster {
    node_id: u64,
    server: Arc<ClusterServer>,
    members: BTreeMap<u64, BasicNode>,
    groups: Arc<Mutex<Vec<ShardGroup>>>,
}

impl Cluster {
    /// Binds the cluster listener when `cluster_peers` is set (`None`: a single node).
    pub async fn start(
        node_id: i32,
        cluster_listen: &str,
        cluster_peers: &str,
    ) -> anyhow::Result<Option<Self>> {
        let peers = parse_peers(cluster_peers)?;
        if peers.is_empty() {
            return Ok(None);
        }
        let node_id = u64::try_from(node_id)
            .with_context(|| format!("node_id {node_id} must not be negative in a cluster"))?;
        if !peers.iter().any(|p| p.id == node_id) {
            bail!("node_id {node_id} is not in cluster_peers ({cluster_peers})");
        }
        if cluster_listen.trim().is_empty() {
            bail!("cluster_peers is set but cluster_listen is empty");
        }
        let addr: SocketAddr = tokio::net::lookup_host(cluster_listen)
            .await
            .with_context(|| format!("resolving cluster_listen {cluster_listen}"))?
            .next()
            .with_context(|| format!("cluster_listen {cluster_listen} resolves to nothing"))?;
        let server = ClusterServer::bind(addr, Cuts::default())
            .await
            .with_context(|| format!("binding the cluster listener {addr} (cluster_listen)"))?;
        let members = peers
            .into_iter()
            .map(|p| (p.id, BasicNode::new(p.addr)))
            .collect();
        Ok(Some(Self {
            node_id,
            server: Arc::new(server),
            members,
            groups: Arc::default(),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Opens every shard of the broker's storage as a shard group on this node's listener
    /// and hands the broker their replicated shard logs. Runs on a blocking thread (inside
    /// `Broker::open_with_shard_logs`); `runtime` drives the groups' async start.
    pub fn shard_log_factory(&self, runtime: tokio::runtime::Handle) -> ShardLogFactory {
        let node_id = self.node_id;
        let server = self.server.clone();
        let members = self.members.clone();
        let groups = self.groups.clone();
        Box::new(move |storage| {
            runtime.block_on(async move {
                let shards = storage.config().shards;
                let state_dir = storage.config().data_dir.join("raft");
                let mut logs = Vec::with_capacity(shards);
                for shard in 0..shards {
                    let group = ShardGroup::open(
                        storage,
                        shard,
                        GroupConfig {
                            node_id,
                            group: shard as u64,
                            control_log: control_log(shard, shards),
                            state_dir: state_dir.clone(),
                            raft: raft_config(),
                        },
                        NetworkFactory::new(shard as u64, node_id, Cuts::default()),
                    )
                    .await
                    .map_err(|e| BrokerError::Metadata(format!("shard group {shard}: {e}")))?;
                    server.register(shard as u64, group.raft().clone());
                    group
                        .initialize(members.clone())
                        .await
                        .map_err(|e| BrokerError::Metadata(format!("shard group {shard}: {e}")))?;
                    logs.push(Arc::new(group.shard_log()) as Arc<dyn ShardLog>);
                    lock(&groups).push(group);
                }
                tracing::info!(
                    node_id,
                    shards,
                    peers = members.len(),
                    "shard groups started"
                );
                Ok(logs)
            })
        })
    }

    /// Stops serving peers and the groups' raft tasks (before the broker flushes storage).
    pub async fn shutdown(&self) {
        self.server.shutdown();
        let groups = std::mem::take(&mut *lock(&self.groups));
        for group in &groups {
            group.shutdown().await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A push or a take cannot leave the vector half-changed.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_are_refused() {
        assert!(parse_peers("").unwrap().is_empty());
        assert!(parse_peers(" , ").unwrap().is_empty());
        let peers = parse_peers("1@127.0.0.1:9001, 2@node-b:9002,3@[::1]:9003").unwrap();
        assert_eq!(
            peers,
            vec![
                Peer {
                    id: 1,
                    addr: "127.0.0.1:9001".into()
                },
                Peer {
                    id: 2,
                    addr: "node-b:9002".into()
                },
                Peer {
                    id: 3,
                    addr: "[::1]:9003".into()
                },
            ]
        );
        for bad in [
            "127.0.0.1:9001",
            "x@127.0.0.1:9001",
            "-1@127.0.0.1:9001",
            "1@127.0.0.1",
            "1@:9001",
            "1@h:99999",
            "1@h:1,1@h:2",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn control_logs_live_in_their_shard_and_are_reserved() {
        for shards in 1..=7 {
            for shard in 0..shards {
                let id = control_log(shard, shards);
                assert_eq!(id % shards as u64, shard as u64);
                assert!(id >= FIRST_RESERVED_LOG_ID);
            }
        }
    }
}
