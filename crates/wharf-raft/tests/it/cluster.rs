//! A three-node test cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::{BasicNode, ServerState, SnapshotPolicy};
use wharf_raft::{
    ClusterServer, Cuts, GroupConfig, NetworkFactory, ReplicatedShardLog, ShardGroup,
};
use wharf_record::{BatchHeader, RecordIter};
use wharf_storage::sim::SimFs;
use wharf_storage::{Durability, LogConfig, ShardLog, Storage, StorageConfig};

pub const CONTROL_LOG: u64 = 1 << 40;
/// The partition log the tests write to (shard 0 of one).
pub const LOG: u64 = 2;

pub struct Node {
    pub id: u64,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub storage: Storage,
    pub server: ClusterServer,
    pub group: ShardGroup,
    pub cuts: Cuts,
}

pub fn raft_config(snapshot_every: Option<u64>) -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        snapshot_policy: snapshot_every
            .map_or(SnapshotPolicy::Never, SnapshotPolicy::LogsSinceLast),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..openraft::Config::default()
    }
}

impl Node {
    pub async fn start(id: u64, dir: &Path, addr: SocketAddr, snapshot_every: Option<u64>) -> Node {
        Self::start_on(id, dir, addr, snapshot_every, None).await
    }

    /// Starts a node whose files go through `fs` (a simulated disk) when given.
    pub async fn start_on(
        id: u64,
        dir: &Path,
        addr: SocketAddr,
        snapshot_every: Option<u64>,
        fs: Option<&SimFs>,
    ) -> Node {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = StorageConfig::new(dir);
        config.shards = 1;
        config.segment_bytes = 4096;
        if let Some(fs) = fs {
            config.fs = std::sync::Arc::new(fs.clone());
        }
        let storage = Storage::open(config).unwrap();
        storage.create_log(LOG, LogConfig::default());
        let cuts = Cuts::default();
        let server = ClusterServer::bind(addr, cuts.clone()).await.unwrap();
        let group = ShardGroup::open(
            &storage,
            0,
            GroupConfig {
                node_id: id,
                group: 0,
                control_log: CONTROL_LOG,
                state_dir: dir.join("raft"),
                raft: raft_config(snapshot_every),
            },
            NetworkFactory::new(0, id, cuts.clone()),
        )
        .await
        .unwrap();
        server.register(0, group.raft().clone());
        Node {
            id,
            dir: dir.to_path_buf(),
            addr: server.local_addr(),
            storage,
            server,
            group,
            cuts,
        }
    }

    pub async fn stop(self) {
        self.server.shutdown();
        self.group.shutdown().await;
        self.storage.shutdown();
    }

    pub fn log(&self) -> ReplicatedShardLog {
        self.group.shard_log()
    }

    pub fn state(&self) -> ServerState {
        self.group.raft().metrics().borrow().state
    }

    /// Every value in log 2 on this node's disk, in offset order, from offset 0.
    pub fn values(&self) -> Vec<String> {
        self.values_in(LOG)
    }

    /// Every value in log `log_id` on this node's disk, in offset order.
    pub fn values_in(&self, log_id: u64) -> Vec<String> {
        let Some(log) = self.storage.log(log_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.high_watermark() {
            let read = log.read(offset, 1 << 20).unwrap();
            let mut at = 0usize;
            while at < read.records.len() {
                let h = BatchHeader::parse_checked(&read.records[at..]).unwrap();
                assert_eq!(h.base_offset(), offset, "offsets are dense and ordered");
                for r in RecordIter::new(&h).unwrap() {
                    out.push(String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap());
                    offset += 1;
                }
                at += h.len();
            }
        }
        out
    }

    /// Appends one value to log 2 through this node's replicated shard log, waiting for commit.
    pub async fn append(&self, value: &str) -> Result<i64, wharf_storage::StorageError> {
        let log = self.storage.log(LOG).unwrap();
        let pending = self.log().append(
            &log,
            wharf_storage::conformance::batch(value),
            Durability::Synced,
        )?;
        tokio::time::timeout(Duration::from_secs(30), pending.wait())
            .await
            .expect("a commit within 30 s")
            .map(|info| info.base_offset)
    }
}

/// Binds three free ports on 127.0.0.1 and releases them (the nodes bind them again).
pub async fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

pub fn members(addrs: &[SocketAddr]) -> BTreeMap<u64, BasicNode> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, BasicNode::new(a.to_string())))
        .collect()
}

/// Starts nodes 1..=3 in `root` and initializes the group on each of them.
pub async fn start_cluster(
    root: &Path,
    snapshot_every: Option<u64>,
) -> (Vec<SocketAddr>, Vec<Node>) {
    let addrs = free_addrs(3).await;
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        nodes.push(Node::start(id, &root.join(format!("n{id}")), *addr, snapshot_every).await);
    }
    for node in &nodes {
        node.group.initialize(members(&addrs)).await.unwrap();
    }
    (addrs, nodes)
}

/// Waits (bounded) until one of `nodes` is leader and the others follow it; returns its index.
pub async fn wait_leader(nodes: &[&Node]) -> usize {
    for _ in 0..600 {
        let leaders: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].state() == ServerState::Leader)
            .collect();
        if let [leader] = leaders[..] {
            let id = nodes[leader].id;
            if nodes
                .iter()
                .all(|n| n.group.raft().metrics().borrow().current_leader == Some(id))
            {
                return leader;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no single leader within 30 s");
}

/// Waits (bounded) until `check` holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 30 s: {what}");
}
