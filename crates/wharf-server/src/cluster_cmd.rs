//! `wharf cluster status` and `/v1/cluster` (ADR 0012): the nodes of a cluster, and for each
//! shard group its leader, term and how many entries each follower lags behind the leader's
//! log. A node knows the followers' progress only for the groups it leads, so the command
//! asks every admin listener it is given and shows each shard as its leader reports it.
//!
//! ```text
//!  ClusterState::status ─► /v1/cluster (JSON) ─► wharf cluster status --admin A,B,C (table)
//! ```

use std::collections::BTreeMap;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::group_cmd::format_table;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Nodes, shard groups with leader, term and replication lag per follower.
    Status {
        /// Print the merged JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// The cluster as one node sees it (`/v1/cluster`'s `nodes`, `shards`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The node answering.
    pub node_id: u64,
    pub nodes: Vec<NodeStatus>,
    pub shards: Vec<ShardStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    /// The node's Kafka listener, once learned (`HOST:PORT`).
    pub kafka: Option<String>,
}

/// One shard group as the answering node sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardStatus {
    pub shard: usize,
    /// The answering node's raft role: `Leader`, `Follower`, `Candidate` or `Learner`.
    pub role: String,
    pub leader: Option<u64>,
    pub term: u64,
    /// The last raft index in the answering node's log.
    pub last_log_index: Option<u64>,
    /// The last index the answering node applied (committed and applied).
    pub applied_index: Option<u64>,
    /// The group's voters.
    pub replicas: Vec<u64>,
    /// The replicas the leader heard lately (every replica when a follower answers).
    pub isr: Vec<u64>,
    /// Each follower's progress; empty unless the answering node leads the group.
    pub followers: Vec<FollowerStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FollowerStatus {
    pub node_id: u64,
    /// The last index the leader knows the follower holds.
    pub matched_index: Option<u64>,
    /// Entries of the leader's log the follower does not hold yet.
    pub lag_entries: u64,
}

impl ShardStatus {
    /// Whether the answering node leads the group.
    pub fn is_leader(&self) -> bool {
        self.role == "Leader"
    }
}

/// Merges what several nodes said: every node any of them knows, and for each shard the view
/// with the highest term, a leader's first (the only one that knows the followers' lag; a
/// cut-off old leader's view has a lower term than the others').
pub fn merge(statuses: &[ClusterStatus]) -> ClusterStatus {
    let mut nodes: BTreeMap<u64, NodeStatus> = BTreeMap::new();
    let mut shards: BTreeMap<usize, ShardStatus> = BTreeMap::new();
    for status in statuses {
        for node in &status.nodes {
            let entry = nodes.entry(node.node_id).or_insert_with(|| node.clone());
            if entry.kafka.is_none() {
                entry.kafka.clone_from(&node.kafka);
            }
        }
        for shard in &status.shards {
            let better = match shards.get(&shard.shard) {
                None => true,
                Some(seen) => (shard.term, shard.is_leader()) > (seen.term, seen.is_leader()),
            };
            if better {
                shards.insert(shard.shard, shard.clone());
            }
        }
    }
    ClusterStatus {
        node_id: statuses.first().map_or(0, |s| s.node_id),
        nodes: nodes.into_values().collect(),
        shards: shards.into_values().collect(),
    }
}

fn opt(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The two tables `wharf cluster status` prints.
pub fn render(status: &ClusterStatus) -> String {
    let node_rows: Vec<Vec<String>> = status
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.to_string(),
                n.kafka.clone().unwrap_or_else(|| "unknown".into()),
            ]
        })
        .collect();
    let shard_rows: Vec<Vec<String>> = status
        .shards
        .iter()
        .map(|s| {
            let lag = if s.followers.is_empty() {
                "unknown (no answer from the leader)".to_string()
            } else {
                s.followers
                    .iter()
                    .map(|f| format!("{}:{}", f.node_id, f.lag_entries))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            vec![
                s.shard.to_string(),
                opt(s.leader),
                s.term.to_string(),
                opt(s.last_log_index),
                list(&s.replicas),
                list(&s.isr),
                lag,
            ]
        })
        .collect();
    let mut out = format_table(&["NODE", "KAFKA"], &node_rows);
    out.push('\n');
    out.push_str(&format_table(
        &[
            "SHARD",
            "LEADER",
            "TERM",
            "LAST INDEX",
            "REPLICAS",
            "ISR",
            "FOLLOWER LAG (NODE:ENTRIES)",
        ],
        &shard_rows,
    ));
    out
}

/// `wharf cluster status`: asks every admin listener in `admins` (comma-separated) for
/// `/v1/cluster`; nodes that do not answer are reported on stderr and skipped.
pub async fn run(admins: &str, cmd: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Status { json } = cmd;
    let mut statuses = Vec::new();
    for admin in admins.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match crate::amqp_cmd::get(admin, "/v1/cluster").await {
            Ok(value) => {
                if value.get("shards").is_none() {
                    bail!("{admin} is a single node (no cluster_peers)");
                }
                statuses.push(serde_json::from_value::<ClusterStatus>(value)?);
            }
            Err(error) => eprintln!("{admin}: {error:#}"),
        }
    }
    if statuses.is_empty() {
        bail!("no admin listener answered ({admins})");
    }
    let merged = merge(&statuses);
    if json {
        println!("{}", serde_json::to_string_pretty(&merged)?);
    } else {
        print!("{}", render(&merged));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(role: &str, term: u64, followers: Vec<FollowerStatus>) -> ShardStatus {
        ShardStatus {
            shard: 0,
            role: role.into(),
            leader: Some(2),
            term,
            last_log_index: Some(10),
            applied_index: Some(10),
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            followers,
        }
    }

    #[test]
    fn the_leaders_view_of_a_shard_wins_the_merge() {
        let lag = vec![FollowerStatus {
            node_id: 1,
            matched_index: Some(7),
            lag_entries: 3,
        }];
        let follower = ClusterStatus {
            node_id: 1,
            nodes: vec![NodeStatus {
                node_id: 1,
                kafka: None,
            }],
            shards: vec![shard("Follower", 5, Vec::new())],
        };
        let leader = ClusterStatus {
            node_id: 2,
            nodes: vec![NodeStatus {
                node_id: 1,
                kafka: Some("h:1".into()),
            }],
            shards: vec![shard("Leader", 5, lag.clone())],
        };
        let merged = merge(&[follower, leader]);
        assert_eq!(merged.shards[0].followers, lag);
        assert_eq!(merged.nodes[0].kafka.as_deref(), Some("h:1"));
        assert!(render(&merged).contains("1:3"));
    }
}
