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
use std::time::Duration;

use anyhow::{bail, Context};
use openraft::BasicNode;
use wharf_broker::cluster::{CallFuture, ClusterView, NodeAddress, ShardRole};
use wharf_broker::forward::NodeCall;
use wharf_broker::{BrokerError, ShardLogFactory, FIRST_RESERVED_LOG_ID};
use wharf_raft::{ClusterServer, Cuts, GroupConfig, NetworkFactory, NodeCard, ShardGroup};
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

/// The raft timing of shard groups: a dead leader is replaced within a few seconds. The
/// shard's preferred node (`preferred`) waits less before standing, so at start leaders spread
/// over the nodes (openraft 0.9 has no leader transfer, so after a failover a shard stays
/// where it moved until its leader fails again).
///
/// openraft 0.9 gives an AppendEntries call the heartbeat interval as its deadline, and the
/// follower's answer includes its fdatasync: at 100 ms, a loaded node missed it, the leader
/// resent the same entries on a new connection, and elections churned (ADR 0012 has the
/// figures).
fn raft_config(preferred: bool) -> openraft::Config {
    let (election_timeout_min, election_timeout_max) =
        if preferred { (800, 1200) } else { (1500, 2500) };
    openraft::Config {
        cluster_name: "wharf".into(),
        heartbeat_interval: 250,
        election_timeout_min,
        election_timeout_max,
        // The snapshot is the retained shard log; building one on a schedule is not needed
        // while raft never purges the shard (retention is local: ADR 0012).
        snapshot_policy: openraft::SnapshotPolicy::Never,
        // An AppendEntries is answered after the follower wrote and fdatasync-ed it, within
        // the heartbeat interval: 8 entries of up to 1 MiB each (`wharf_raft` gathers writes
        // into entries up to that size; one larger write goes alone), under the 64 MiB frame
        // limit. openraft's default of 300 entries made frames of up to 300 MiB.
        max_payload_entries: 8,
        ..openraft::Config::default()
    }
}

/// The control log of shard `shard` among `shards`: a reserved log id the storage places in
/// that shard (`id % shards == shard`).
pub fn control_log(shard: usize, shards: usize) -> u64 {
    FIRST_RESERVED_LOG_ID.next_multiple_of(shards as u64) + shard as u64
}

/// The node that should lead `shard` when all are up: the nodes take shards in turn.
fn preferred_leader(shard: usize, members: &BTreeMap<u64, BasicNode>) -> Option<u64> {
    let ids: Vec<u64> = members.keys().copied().collect();
    ids.get(shard % ids.len().max(1)).copied()
}

/// How long after start only a shard's preferred node may stand for election.
const PREFERRED_HEAD_START: Duration = Duration::from_secs(3);

/// How long a replica may go unheard by its leader and still count as in sync (Kafka's
/// `replica.lag.time.max.ms`, shorter: heartbeats go every 250 ms).
const ISR_LAG: Duration = Duration::from_secs(5);

/// How long a shard leader may go unacknowledged by a quorum of its group (openraft's
/// `millis_since_quorum_ack`: a follower answered an AppendEntries or a heartbeat) and still
/// name itself the leader: twice its election timeout. A leader cut off from the majority
/// stays leader in openraft 0.9 until it hears of a higher term (there is no check-quorum),
/// while the majority elects another leader within about one election timeout (ADR 0012).
fn leader_lease(config: &openraft::Config) -> Duration {
    Duration::from_millis(config.election_timeout_max.saturating_mul(2))
}

/// The leader of a group as this node names it to clients (Metadata, FindCoordinator) and
/// serves as (`Broker::shard_served`): the leader in its raft metrics `m`, except this node
/// itself while no quorum has acknowledged it for `lease` (or not yet in this term). Such a
/// node answers NOT_LEADER_OR_FOLLOWER and names no leader, so clients that asked it re-route
/// to the majority's leader instead of waiting on appends it can never commit.
fn named_leader(
    me: u64,
    m: &openraft::RaftMetrics<u64, BasicNode>,
    lease: Duration,
) -> Option<u64> {
    let leader = m.current_leader?;
    if leader != me {
        return Some(leader);
    }
    let acked = Duration::from_millis(m.millis_since_quorum_ack?);
    (acked <= lease).then_some(leader)
}

/// One shard group as the view reads it.
struct GroupHandle {
    raft: openraft::Raft<wharf_raft::TypeConfig>,
    network: NetworkFactory,
}

/// The cluster as this node sees it, for the broker (Metadata, FindCoordinator, routing):
/// every node's Kafka listener (learned from the peers' `Hello`) and each shard group's raft
/// metrics.
pub struct ClusterState {
    node_id: u64,
    /// Each peer's cluster listener, as this node's `cluster_peers` names it.
    addresses: BTreeMap<u64, String>,
    cards: Mutex<BTreeMap<u64, NodeCard>>,
    groups: Mutex<Vec<GroupHandle>>,
    /// The controller group (`crate::controller`), once started.
    controller: std::sync::OnceLock<openraft::Raft<wharf_raft::TypeConfig>>,
}

fn to_i32(id: u64) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

impl ClusterState {
    /// Names the controller group, whose leader is the controller.
    pub(crate) fn set_controller(&self, raft: openraft::Raft<wharf_raft::TypeConfig>) {
        let _ = self.controller.set(raft);
    }

    fn group_metrics(
        &self,
        shard: usize,
    ) -> Option<(openraft::RaftMetrics<u64, BasicNode>, NetworkFactory)> {
        let groups = lock(&self.groups);
        let group = groups.get(shard)?;
        let metrics = group.raft.metrics().borrow().clone();
        Some((metrics, group.network.clone()))
    }

    /// Whether this node is cut off from the other nodes, as far as it can tell: it leads a
    /// group (a shard or the controller) that a quorum acknowledged in this term but not within
    /// its lease, and it names no leader for any group (its follower groups elect in vain). A
    /// leader not yet acknowledged (just elected) does not count, so a node is not fenced in
    /// the first milliseconds of a term. A follower cut off alone, which leads nothing, is not
    /// detected.
    fn cut_off(&self) -> bool {
        let mut rafts: Vec<openraft::Raft<wharf_raft::TypeConfig>> =
            lock(&self.groups).iter().map(|g| g.raft.clone()).collect();
        rafts.extend(self.controller.get().cloned());
        let mut unacknowledged_leader = false;
        for raft in &rafts {
            let lease = leader_lease(raft.config());
            let metrics = raft.metrics();
            let m = metrics.borrow();
            if named_leader(self.node_id, &m, lease).is_some() {
                return false;
            }
            unacknowledged_leader |=
                m.current_leader == Some(self.node_id) && m.millis_since_quorum_ack.is_some();
        }
        unacknowledged_leader
    }

    /// Shard `shard`'s leader as this node names it ([`named_leader`]) and the group's term.
    fn group_leader(&self, shard: usize) -> Option<(Option<u64>, u64)> {
        let groups = lock(&self.groups);
        let raft = &groups.get(shard)?.raft;
        let lease = leader_lease(raft.config());
        let metrics = raft.metrics();
        let m = metrics.borrow();
        Some((named_leader(self.node_id, &m, lease), m.current_term))
    }
}

impl ClusterView for ClusterState {
    fn node_id(&self) -> i32 {
        to_i32(self.node_id)
    }

    fn nodes(&self) -> Vec<NodeAddress> {
        // The members of the cluster as raft knows them (ADR 0019): a removed node drops
        // out, an added one appears once its Kafka listener is known. A node cut off from the
        // cluster leaves itself out, as Kafka leaves fenced brokers out: a client (librdkafka
        // >= 2.10 drops brokers a Metadata answer does not list) then asks the others, which
        // name the majority's leader.
        let members = self.member_ids();
        let cut_off = self.cut_off();
        lock(&self.cards)
            .values()
            .filter(|c| members.contains(&c.node_id))
            .filter(|c| !(cut_off && c.node_id == self.node_id))
            .map(|c| NodeAddress {
                id: to_i32(c.node_id),
                host: c.kafka_host.clone(),
                port: c.kafka_port,
            })
            .collect()
    }

    fn shard(&self, shard: usize) -> ShardRole {
        let Some((metrics, network)) = self.group_metrics(shard) else {
            return ShardRole {
                leader: None,
                leader_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
            };
        };
        let lease = lock(&self.groups)
            .get(shard)
            .map_or(Duration::ZERO, |g| leader_lease(g.raft.config()));
        let leader = named_leader(self.node_id, &metrics, lease);
        let replicas: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        let isr = if leader == Some(self.node_id) {
            // The leader knows: itself and the replicas that answered it lately.
            let answers = network.last_answers();
            replicas
                .iter()
                .copied()
                .filter(|id| {
                    *id == self.node_id || answers.get(id).is_some_and(|t| t.elapsed() < ISR_LAG)
                })
                .collect()
        } else {
            // A follower does not track the others; it reports the replicas (Kafka's
            // brokers report what the controller last told them).
            replicas.clone()
        };
        ShardRole {
            leader: leader.map(to_i32),
            leader_epoch: i32::try_from(metrics.current_term).unwrap_or(i32::MAX),
            replicas: replicas.into_iter().map(to_i32).collect(),
            isr: isr.into_iter().map(to_i32).collect(),
        }
    }

    fn shard_leader(&self, shard: usize) -> Option<i32> {
        self.group_leader(shard)?.0.map(to_i32)
    }

    fn shard_leader_term(&self, shard: usize) -> Option<(i32, u64)> {
        let (leader, term) = self.group_leader(shard)?;
        Some((to_i32(leader?), term))
    }

    fn controller(&self) -> Option<i32> {
        // The controller group's leader (`crate::controller`). Until one is elected and its
        // Kafka listener is known, this node: it forwards metadata changes to the leader once
        // there is one (KRaft brokers, which forward too, name any broker: KIP-590).
        let leader = self
            .controller
            .get()
            .and_then(|raft| raft.metrics().borrow().current_leader);
        match leader {
            Some(leader) if lock(&self.cards).contains_key(&leader) => Some(to_i32(leader)),
            _ => Some(to_i32(self.node_id)),
        }
    }

    fn call(&self, node: i32, call: NodeCall) -> CallFuture {
        let addr = u64::try_from(node).ok().and_then(|id| self.member_addr(id));
        let from = self.node_id;
        Box::pin(async move {
            let addr = addr.ok_or_else(|| format!("node {node} is not a member"))?;
            let call = serde_json::to_value(&call).map_err(|e| e.to_string())?;
            wharf_raft::call(&addr, from, call, CALL_TIMEOUT).await
        })
    }
}

/// How long a peer may take to serve a broker call (a marker write waits for its commit).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The members as raft knows them (ADR 0019): membership changes move them away from
/// `cluster_peers`.
impl ClusterState {
    /// This node's id.
    pub fn local_node_id(&self) -> u64 {
        self.node_id
    }

    fn controller_membership(&self) -> Option<openraft::StoredMembership<u64, BasicNode>> {
        let raft = self.controller.get()?;
        let membership = raft.metrics().borrow().membership_config.as_ref().clone();
        Some(membership)
    }

    /// The controller group's members (voters and learners) as its raft has them: empty on
    /// a node whose controller group was never initialized nor joined.
    pub fn controller_members(&self) -> BTreeSet<u64> {
        self.controller_membership()
            .map(|m| m.membership().nodes().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }

    /// The cluster's nodes: the controller group's members (voters and learners) once it has
    /// any, else `cluster_peers` (a joining node before it is added, or before the start).
    pub fn member_ids(&self) -> BTreeSet<u64> {
        let members = self.controller_members();
        if members.is_empty() {
            self.addresses.keys().copied().collect()
        } else {
            members
        }
    }

    /// Where to reach node `id`'s cluster listener: this node's `cluster_peers` entry, else
    /// the address the membership holds (given to `wharf cluster add-node`).
    pub fn member_addr(&self, id: u64) -> Option<String> {
        if let Some(addr) = self.addresses.get(&id) {
            return Some(addr.clone());
        }
        if let Some(m) = self.controller_membership() {
            if let Some(node) = m.membership().get_node(&id) {
                return Some(node.addr.clone());
            }
        }
        lock(&self.groups).iter().find_map(|g| {
            let metrics = g.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        })
    }

    /// The raft handle of group `group` on the wire (a shard id, or the controller's).
    pub fn group_raft(&self, group: u64) -> Option<openraft::Raft<wharf_raft::TypeConfig>> {
        if group == crate::controller::CONTROLLER_GROUP {
            return self.controller.get().cloned();
        }
        let shard = usize::try_from(group).ok()?;
        lock(&self.groups).get(shard).map(|g| g.raft.clone())
    }

    /// Every group a membership change goes through, the controller first: (wire id, name,
    /// raft handle).
    pub fn groups_for_membership(
        &self,
    ) -> Vec<(u64, String, openraft::Raft<wharf_raft::TypeConfig>)> {
        let mut out = Vec::new();
        if let Some(raft) = self.controller.get() {
            out.push((
                crate::controller::CONTROLLER_GROUP,
                "controller".to_string(),
                raft.clone(),
            ));
        }
        for (shard, g) in lock(&self.groups).iter().enumerate() {
            out.push((shard as u64, format!("shard {shard}"), g.raft.clone()));
        }
        out
    }
}

/// Read-only views for `/v1/cluster`, `wharf cluster status` and the cluster metrics.
impl ClusterState {
    /// Every node and each shard group as this node sees it; followers' progress only for
    /// the groups this node leads.
    pub fn status(&self) -> crate::cluster_cmd::ClusterStatus {
        use crate::cluster_cmd::{ClusterStatus, FollowerStatus, NodeStatus, ShardStatus};
        let count = lock(&self.groups).len();
        let mut node_ids: BTreeSet<u64> = self.member_ids();
        let mut shards = Vec::with_capacity(count);
        for shard in 0..count {
            let Some((metrics, _)) = self.group_metrics(shard) else {
                continue;
            };
            let role = self.shard(shard);
            let replicas: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            node_ids.extend(&replicas);
            let last = metrics.last_log_index.unwrap_or(0);
            let followers = metrics
                .replication
                .iter()
                .flatten()
                .filter(|(id, _)| **id != self.node_id)
                .map(|(id, matched)| {
                    let matched_index = matched.map(|m| m.index);
                    FollowerStatus {
                        node_id: *id,
                        matched_index,
                        lag_entries: last.saturating_sub(matched_index.unwrap_or(0)),
                    }
                })
                .collect();
            shards.push(ShardStatus {
                shard,
                role: format!("{:?}", metrics.state),
                leader: metrics.current_leader,
                term: metrics.current_term,
                last_log_index: metrics.last_log_index,
                applied_index: metrics.last_applied.map(|l| l.index),
                replicas,
                isr: role
                    .isr
                    .iter()
                    .filter_map(|id| u64::try_from(*id).ok())
                    .collect(),
                followers,
            });
        }
        let cards = lock(&self.cards);
        ClusterStatus {
            node_id: self.node_id,
            nodes: node_ids
                .into_iter()
                .map(|id| NodeStatus {
                    node_id: id,
                    kafka: cards
                        .get(&id)
                        .map(|c| format!("{}:{}", c.kafka_host, c.kafka_port)),
                })
                .collect(),
            shards,
        }
    }

    /// Counts `wharf_cluster_leader_changes_total{shard}`: each time this node learns that a
    /// shard group has a leader other than the last one it knew (the first election counts).
    pub fn count_leader_changes(&self) {
        for (shard, group) in lock(&self.groups).iter().enumerate() {
            let mut watch = group.raft.metrics();
            tokio::spawn(async move {
                let mut last = None;
                loop {
                    let leader = watch.borrow_and_update().current_leader;
                    if leader.is_some() && leader != last {
                        metrics::counter!(
                            "wharf_cluster_leader_changes_total",
                            "shard" => shard.to_string()
                        )
                        .increment(1);
                        last = leader;
                    }
                    if watch.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
    }
}

/// This node's cluster listener and shard groups.
pub struct Cluster {
    node_id: u64,
    server: Arc<ClusterServer>,
    members: BTreeMap<u64, BasicNode>,
    groups: Arc<Mutex<Vec<ShardGroup>>>,
    state: Arc<ClusterState>,
    /// `cluster_join`: this node never initializes a group; it waits to be added (ADR 0019).
    join: bool,
}

impl Cluster {
    /// `cluster_join=true`: this node joins a running cluster (`wharf cluster add-node`)
    /// instead of initializing its groups with `cluster_peers` as voters (ADR 0019).
    #[must_use]
    pub fn joining(mut self, join: bool) -> Self {
        self.join = join;
        self
    }

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
        let addresses: BTreeMap<u64, String> =
            peers.iter().map(|p| (p.id, p.addr.clone())).collect();
        let members = peers
            .into_iter()
            .map(|p| (p.id, BasicNode::new(p.addr)))
            .collect();
        Ok(Some(Self {
            node_id,
            server: Arc::new(server),
            members,
            groups: Arc::default(),
            state: Arc::new(ClusterState {
                node_id,
                addresses,
                cards: Mutex::default(),
                groups: Mutex::default(),
                controller: std::sync::OnceLock::new(),
            }),
            join: false,
        }))
    }

    /// The cluster as the broker should see it ([`wharf_broker::Broker::set_cluster_view`]).
    pub fn state(&self) -> Arc<ClusterState> {
        self.state.clone()
    }

    /// Tells peers this node's Kafka listener and learns theirs: asks every peer whose card is
    /// unknown twice a second, known ones every few seconds (a restarted node may move).
    pub fn advertise(&self, kafka_host: &str, kafka_port: i32) {
        let card = NodeCard {
            node_id: self.node_id,
            kafka_host: kafka_host.to_string(),
            kafka_port,
        };
        self.server.set_card(card.clone());
        lock(&self.state.cards).insert(self.node_id, card);
        let state = self.state.clone();
        let from = self.node_id;
        tokio::spawn(async move {
            let mut round = 0u64;
            loop {
                // The members as raft knows them now (a node added since start included).
                let peers: Vec<(u64, String)> = state
                    .member_ids()
                    .into_iter()
                    .filter(|id| *id != from)
                    .filter_map(|id| state.member_addr(id).map(|addr| (id, addr)))
                    .collect();
                for (id, addr) in &peers {
                    let known = lock(&state.cards).contains_key(id);
                    if known && round % 10 != 0 {
                        continue;
                    }
                    match wharf_raft::hello(addr, from, Duration::from_secs(2)).await {
                        Ok(Some(card)) if card.node_id == *id => {
                            if !known {
                                tracing::info!(node_id = id, host = %card.kafka_host, port = card.kafka_port, "peer's Kafka listener learned");
                            }
                            lock(&state.cards).insert(*id, card);
                        }
                        Ok(Some(card)) => tracing::warn!(
                            expected = id,
                            answered = card.node_id,
                            %addr,
                            "a peer answered with another node id; check cluster_peers"
                        ),
                        Ok(None) => {}
                        Err(error) => {
                            tracing::debug!(node_id = id, %addr, %error, "peer hello failed");
                        }
                    }
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// What the controller group needs of this node's cluster (`crate::controller`).
    pub(crate) fn controller_parts(
        &self,
    ) -> (
        u64,
        Arc<ClusterServer>,
        BTreeMap<u64, BasicNode>,
        Arc<ClusterState>,
        bool,
    ) {
        (
            self.node_id,
            self.server.clone(),
            self.members.clone(),
            self.state.clone(),
            self.join,
        )
    }

    /// Opens every shard of the broker's storage as a shard group on this node's listener
    /// and hands the broker their replicated shard logs. Runs on a blocking thread (inside
    /// `Broker::open_with_shard_logs`); `runtime` drives the groups' async start.
    pub fn shard_log_factory(&self, runtime: tokio::runtime::Handle) -> ShardLogFactory {
        let node_id = self.node_id;
        let server = self.server.clone();
        let members = self.members.clone();
        let groups = self.groups.clone();
        let state = self.state.clone();
        let join = self.join;
        Box::new(move |storage| {
            runtime.block_on(async move {
                let shards = storage.config().shards;
                let state_dir = storage.config().data_dir.join("raft");
                let mut logs = Vec::with_capacity(shards);
                let addresses: BTreeMap<u64, String> = members
                    .iter()
                    .map(|(id, node)| (*id, node.addr.clone()))
                    .collect();
                for shard in 0..shards {
                    let network = NetworkFactory::new(shard as u64, node_id, Cuts::default())
                        .with_addresses(addresses.clone());
                    let preferred = preferred_leader(shard, &members) == Some(node_id);
                    let group = ShardGroup::open(
                        storage,
                        shard,
                        GroupConfig {
                            node_id,
                            group: shard as u64,
                            control_log: control_log(shard, shards),
                            state_dir: state_dir.clone(),
                            raft: raft_config(preferred),
                        },
                        network.clone(),
                    )
                    .await
                    .map_err(|e| BrokerError::Metadata(format!("shard group {shard}: {e}")))?;
                    server.register(shard as u64, group.raft().clone());
                    if !preferred {
                        // Leaders spread: for a while after start only the shard's preferred
                        // node stands for election (the others still vote), so a node that
                        // starts first does not win every shard. Then anyone may stand.
                        group.raft().runtime_config().elect(false);
                        let raft = group.raft().clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(PREFERRED_HEAD_START).await;
                            raft.runtime_config().elect(true);
                        });
                    }
                    // A joining node waits to be added by the group's leader (ADR 0019):
                    // initializing here would make a cluster of its own.
                    if !join {
                        group.initialize(members.clone()).await.map_err(|e| {
                            BrokerError::Metadata(format!("shard group {shard}: {e}"))
                        })?;
                    }
                    let log = Arc::new(group.shard_log()) as Arc<dyn ShardLog>;
                    // Every writer of the shard (coordinators too) goes through raft.
                    if !storage.route_appends(shard, log.clone()) {
                        return Err(BrokerError::Metadata(format!(
                            "shard {shard}: appends already routed"
                        )));
                    }
                    logs.push(log);
                    lock(&state.groups).push(GroupHandle {
                        raft: group.raft().clone(),
                        network,
                    });
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

    /// Serves the peers' broker calls (transaction markers and offsets) with `broker`.
    pub fn serve_calls(&self, broker: &Arc<wharf_broker::Broker>) {
        let broker = Arc::downgrade(broker);
        self.server.set_call_handler(Arc::new(move |value| {
            let broker = broker.clone();
            Box::pin(async move {
                let call: NodeCall = serde_json::from_value(value)
                    .map_err(|e| format!("call does not decode: {e}"))?;
                let broker = broker.upgrade().ok_or("the broker is shutting down")?;
                broker.serve_call(call).await.map_err(|e| e.to_string())
            })
        }));
    }

    /// Tells the broker, shard by shard, when this node becomes or stops being the leader
    /// (from each group's raft metrics): it rebuilds what other leaders wrote before it serves
    /// the shard (`Broker::become_leader`).
    pub fn follow_leadership(&self, broker: &Arc<wharf_broker::Broker>) {
        let groups: Vec<openraft::Raft<wharf_raft::TypeConfig>> = lock(&self.state.groups)
            .iter()
            .map(|g| g.raft.clone())
            .collect();
        for (shard, raft) in groups.into_iter().enumerate() {
            let broker = Arc::downgrade(broker);
            let me = self.node_id;
            tokio::spawn(async move {
                let mut metrics = raft.metrics();
                // The term this node last rebuilt the shard for as its leader.
                let mut served: Option<u64> = None;
                loop {
                    let (leader, term) = {
                        let m = metrics.borrow_and_update();
                        (
                            m.current_leader == Some(me)
                                && m.state == openraft::ServerState::Leader,
                            m.current_term,
                        )
                    };
                    let Some(b) = broker.upgrade() else { return };
                    if leader && served != Some(term) {
                        let runtime = tokio::runtime::Handle::current();
                        let rebuilt = tokio::task::spawn_blocking(move || {
                            b.become_leader(shard, term, &runtime)
                        })
                        .await;
                        match rebuilt {
                            Ok(Ok(())) => served = Some(term),
                            Ok(Err(error)) => {
                                tracing::error!(shard, %error, "cannot serve the shard this node leads; retrying");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                continue;
                            }
                            Err(error) => {
                                tracing::error!(shard, %error, "rebuilding the shard's state failed");
                                return;
                            }
                        }
                    } else if !leader && served.is_some() {
                        b.step_down(shard);
                        served = None;
                    }
                    if metrics.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
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
    fn a_leader_unheard_by_a_quorum_names_no_leader() {
        let lease = Duration::from_secs(1);
        let mut m = openraft::RaftMetrics::<u64, BasicNode>::new_initial(1);
        assert_eq!(named_leader(1, &m, lease), None, "no leader known");
        m.current_leader = Some(2);
        assert_eq!(
            named_leader(1, &m, lease),
            Some(2),
            "a follower names its leader"
        );
        m.current_leader = Some(1);
        assert_eq!(named_leader(1, &m, lease), None, "not yet acknowledged");
        m.millis_since_quorum_ack = Some(100);
        assert_eq!(named_leader(1, &m, lease), Some(1), "acknowledged lately");
        m.millis_since_quorum_ack = Some(1_001);
        assert_eq!(
            named_leader(1, &m, lease),
            None,
            "cut off for longer than the lease"
        );
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
