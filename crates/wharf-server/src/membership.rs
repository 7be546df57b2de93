//! Membership changes (ADR 0019): `wharf cluster add-node` / `remove-node`, served by
//! `POST /v1/cluster/nodes` and `DELETE /v1/cluster/nodes/{id}` on any node's admin listener.
//!
//! A change is made group by group: an add goes through the controller group first (a new
//! node learns the topics before their shard entries), then every shard group; a removal goes
//! the other way (the node stays among Metadata's brokers while it may still lead a shard). Each
//! group's change runs on that group's leader: the node that was asked makes it itself where it
//! leads and forwards it over the cluster port (`Rpc::Forward`, a [`Forwarded`] body) where
//! another node leads, retrying while a leader moves.
//!
//! ```text
//!  add N:    N answers at its address as N, in no other cluster? (Hello, probe)
//!            ─► controller, shard 0..n: add_learner(N, addr) ─► wait until N holds the log
//!            up to the entry that added it (the data moves by log replication) ─► N becomes
//!            a voter (joint consensus, then the new voter set)
//!  remove N: shard n..0, controller: the voters without N (a leader that is N steps down
//!            once that is committed; the others elect a new one)
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft};
use serde::{Deserialize, Serialize};
use wharf_raft::TypeConfig;

use crate::cluster::ClusterState;

/// How long a new node may take to catch up with one group's log before it is promoted.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one group's change may wait for a leader (elections, a moving leader).
const GROUP_TIMEOUT: Duration = Duration::from_secs(330);
/// One forwarded change (it waits for the new node to catch up on that group).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(320);

/// One membership change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Add node `id`, whose cluster listener is `address`, as a voter of every group.
    Add { id: u64, address: String },
    /// Remove node `id` from every group.
    Remove { id: u64 },
}

impl Change {
    fn node(&self) -> u64 {
        match self {
            Self::Add { id, .. } | Self::Remove { id } => *id,
        }
    }
}

/// A change of one group forwarded to its leader over the cluster port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forwarded {
    pub membership: GroupChange,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupChange {
    /// The group's id on the wire (`controller::CONTROLLER_GROUP` or a shard id).
    pub group: u64,
    pub change: Change,
}

/// What became of one group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupOutcome {
    pub group: String,
    /// The group's voters after the change.
    pub voters: Vec<u64>,
}

/// Why one group's change did not happen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChangeError {
    /// This node does not lead the group (the leader it knows, if any): ask that one.
    NotLeader(Option<u64>),
    /// The change is refused (a bad request): it would not succeed elsewhere either.
    Refused(String),
    /// The change failed; retrying may help.
    Failed(String),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotLeader(leader) => write!(f, "not the group's leader (leader: {leader:?})"),
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Checks a change against the cluster this node sees before any group is touched.
///
/// # Errors
/// A [`ChangeError::Refused`] naming the problem.
pub fn check(state: &ClusterState, change: &Change) -> Result<(), ChangeError> {
    let members = state.member_ids();
    match change {
        Change::Add { id, address } => {
            let port_ok = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(ChangeError::Refused(format!(
                    "address {address:?} is not HOST:PORT (the node's cluster_listen)"
                )));
            }
            if i32::try_from(*id).is_err() {
                return Err(ChangeError::Refused(format!(
                    "node id {id} does not fit a Kafka broker id"
                )));
            }
        }
        Change::Remove { id } => {
            if !members.contains(id) {
                return Err(ChangeError::Refused(format!(
                    "node {id} is not a member of the cluster (members: {members:?})"
                )));
            }
            if members.len() <= 1 {
                return Err(ChangeError::Refused(
                    "the last node of a cluster cannot be removed".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Makes `change` in every group (an add: controller first; a removal: controller last), each
/// on its leader; returns what each
/// group's voters became. The caller checked the change first ([`check`], and for an add
/// [`check_reachable`]). Stops at the first group that fails: the groups before it are
/// changed, the ones after are not (running the same change again finishes it).
///
/// # Errors
/// The first group's error, naming the group.
pub async fn apply(
    state: &Arc<ClusterState>,
    change: &Change,
) -> Result<Vec<GroupOutcome>, String> {
    check(state, change).map_err(|e| e.to_string())?;
    let mut groups = state.groups_for_membership();
    if matches!(change, Change::Remove { .. }) {
        // The shard groups first: the node stays among Metadata's brokers (the controller
        // group's members) while it may still lead a shard.
        groups.reverse();
    }
    let mut outcomes = Vec::new();
    for (group, name, raft) in groups {
        tracing::info!(group = %name, ?change, "membership change starts");
        let voters = change_group(state, group, &raft, change)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        tracing::info!(group = %name, ?voters, "membership change done");
        outcomes.push(GroupOutcome {
            group: name,
            voters: voters.into_iter().collect(),
        });
    }
    Ok(outcomes)
}

/// The node to add must answer at `address` as node `id` (a wrong address would make another
/// node, or nobody, a voter under that id; an unreachable one would hold the command for the
/// catch-up bound of every group) and belong to no other cluster.
///
/// # Errors
/// [`ChangeError::Refused`] when nothing answers there, another node does, or the node's
/// controller group has members and this node is not one of them.
pub async fn check_reachable(
    state: &ClusterState,
    id: u64,
    address: &str,
) -> Result<(), ChangeError> {
    let deadline = Instant::now() + HELLO_TIMEOUT;
    loop {
        let answer =
            wharf_raft::hello(address, state.local_node_id(), Duration::from_secs(2)).await;
        match answer {
            Ok(Some(card)) if card.node_id == id => break,
            Ok(Some(card)) => {
                return Err(ChangeError::Refused(format!(
                    "{address} is node {}, not node {id}",
                    card.node_id
                )))
            }
            // Up, but its Kafka listener is not open yet: ask again.
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(None) => {
                return Err(ChangeError::Refused(format!(
                    "node at {address} is not serving yet"
                )))
            }
            Err(error) => {
                return Err(ChangeError::Refused(format!(
                    "node {id} does not answer at {address} (start it with cluster_join=true \
                     first): {error}"
                )))
            }
        }
    }
    // It must not belong to another cluster: a node that initialized its groups itself (no
    // `cluster_join`) leads a cluster of its own, whose state would live on beside ours.
    let body = serde_json::to_string(&Probe {
        membership_probe: true,
    })
    .map_err(|e| ChangeError::Failed(e.to_string()))?;
    loop {
        let reply = wharf_raft::forward(
            address,
            state.local_node_id(),
            body.clone(),
            Duration::from_secs(5),
        )
        .await;
        match reply.map(|r| serde_json::from_str::<ProbeAnswer>(&r)) {
            Ok(Ok(answer)) => {
                let me = state.local_node_id();
                let foreign = answer
                    .groups
                    .iter()
                    .find(|g| g.initialized && !g.members.contains(&me));
                if let Some(group) = foreign {
                    return Err(ChangeError::Refused(format!(
                        "node {id} belongs to another cluster (its {} has members {:?}); \
                         stop it, empty its data directory and start it with \
                         cluster_join=true",
                        group.group, group.members
                    )));
                }
                return Ok(());
            }
            Ok(Err(e)) => {
                return Err(ChangeError::Refused(format!(
                    "node {id} at {address} does not answer a membership probe: {e}"
                )))
            }
            // Its controller is not started yet: ask again.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(ChangeError::Refused(format!(
                    "node {id} at {address} does not answer a membership probe: {e}"
                )))
            }
        }
    }
}

/// Asks a node which cluster it belongs to (a forwarded request, answered by
/// [`answer_probe`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub membership_probe: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProbeAnswer {
    groups: Vec<ProbedGroup>,
}

/// One group of the probed node, read from its raft state (not the metrics, which follow it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProbedGroup {
    group: String,
    /// It has a log or a vote: it was initialized, or a leader reached it.
    initialized: bool,
    /// Its effective membership's nodes (voters and learners).
    members: BTreeSet<u64>,
}

/// This node's answer to a [`Probe`]: each of its groups. Answered only once the controller
/// started, which is after every group of a node without `cluster_join` was initialized.
pub async fn answer_probe(state: &ClusterState) -> String {
    let mut groups = Vec::new();
    for (_, name, raft) in state.groups_for_membership() {
        let initialized = raft.is_initialized().await.unwrap_or(true);
        let members = raft
            .with_raft_state(|st| {
                st.membership_state
                    .effective()
                    .nodes()
                    .map(|(id, _)| *id)
                    .collect::<BTreeSet<u64>>()
            })
            .await
            .unwrap_or_default();
        groups.push(ProbedGroup {
            group: name,
            initialized,
            members,
        });
    }
    serde_json::to_string(&ProbeAnswer { groups }).unwrap_or_default()
}

/// How long a node to add may take to open its Kafka listener after its cluster listener.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// One group's change: here if this node leads it, else forwarded to its leader; retried
/// while the group has no leader or the leader moves.
async fn change_group(
    state: &ClusterState,
    group: u64,
    raft: &Raft<TypeConfig>,
    change: &Change,
) -> Result<BTreeSet<u64>, ChangeError> {
    let deadline = Instant::now() + GROUP_TIMEOUT;
    let me = state.local_node_id();
    loop {
        let leader = raft.metrics().borrow().current_leader;
        let attempt = match leader {
            Some(leader) if leader == me => change_here(raft, change).await,
            Some(leader) => forward(state, leader, group, change).await,
            None => Err(ChangeError::NotLeader(None)),
        };
        match attempt {
            Ok(voters) => return Ok(voters),
            Err(ChangeError::Refused(why)) => return Err(ChangeError::Refused(why)),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(group, error = %e, "membership change retries");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn forward(
    state: &ClusterState,
    leader: u64,
    group: u64,
    change: &Change,
) -> Result<BTreeSet<u64>, ChangeError> {
    let addr = state
        .member_addr(leader)
        .ok_or_else(|| ChangeError::Failed(format!("no address known for node {leader}")))?;
    let body = serde_json::to_string(&Forwarded {
        membership: GroupChange {
            group,
            change: change.clone(),
        },
    })
    .map_err(|e| ChangeError::Failed(e.to_string()))?;
    let reply = wharf_raft::forward(&addr, state.local_node_id(), body, FORWARD_TIMEOUT)
        .await
        .map_err(|e| ChangeError::Failed(format!("forwarding to node {leader} at {addr}: {e}")))?;
    let answer: Result<BTreeSet<u64>, ChangeError> = serde_json::from_str(&reply)
        .map_err(|e| ChangeError::Failed(format!("node {leader} answered {reply:?}: {e}")))?;
    answer
}

/// Serves a change forwarded by another node: the answer is the JSON of
/// `Result<voters, ChangeError>`.
pub async fn serve_forwarded(state: &ClusterState, forwarded: Forwarded) -> String {
    let GroupChange { group, change } = forwarded.membership;
    let answer = match state.group_raft(group) {
        Some(raft) => change_here(&raft, &change).await,
        None => Err(ChangeError::Refused(format!(
            "no group {group} on this node"
        ))),
    };
    serde_json::to_string(&answer).unwrap_or_else(|e| {
        serde_json::to_string(&Err::<(), _>(ChangeError::Failed(e.to_string()))).unwrap_or_default()
    })
}

fn write_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> ChangeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ChangeError::NotLeader(f.leader_id)
        }
        // Another change is still being committed: retry.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            e @ ChangeMembershipError::InProgress(_),
        )) => ChangeError::Failed(e.to_string()),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ChangeError::Refused(e.to_string())
        }
        RaftError::Fatal(e) => ChangeError::Failed(e.to_string()),
    }
}

fn voters(raft: &Raft<TypeConfig>) -> BTreeSet<u64> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// The change on this node, which must lead the group.
async fn change_here(
    raft: &Raft<TypeConfig>,
    change: &Change,
) -> Result<BTreeSet<u64>, ChangeError> {
    let id = change.node();
    match change {
        Change::Add { address, .. } => {
            if voters(raft).contains(&id) {
                return Ok(voters(raft));
            }
            // The learner gets the whole log (or a snapshot) by replication; blocking: until
            // it holds everything up to the entry that made it a learner.
            let added = tokio::time::timeout(
                CATCH_UP_TIMEOUT,
                raft.add_learner(id, BasicNode::new(address.clone()), true),
            )
            .await
            .map_err(|_| {
                ChangeError::Failed(format!(
                    "node {id} did not catch up within {CATCH_UP_TIMEOUT:?}; it stays a learner"
                ))
            })?;
            added.map_err(write_error)?;
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(write_error)?;
        }
        Change::Remove { .. } => {
            let before = voters(raft);
            let learner = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .learner_ids()
                .any(|l| l == id);
            if before.contains(&id) {
                if before.len() <= 1 {
                    return Err(ChangeError::Refused(
                        "the group's last voter cannot be removed".into(),
                    ));
                }
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(write_error)?;
            } else if learner {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await
                    .map_err(write_error)?;
            }
        }
    }
    Ok(voters(raft))
}

/// `POST /v1/cluster/nodes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    pub id: u64,
    pub address: String,
}
