//! `wharf cluster status` and `/v1/cluster` (ADR 0012), and `wharf cluster add-node` /
//! `remove-node` (ADR 0019, served by `crate::membership`): the nodes of a cluster, and for each
//! shard group its leader, term and how many entries each follower lags behind the leader's
//! log. A node knows the followers' progress only for the groups it leads, so the command
//! asks every admin listener it is given and shows each shard as its leader reports it.
//!
//! ```text
//!  ClusterState::status ─► /v1/cluster (JSON) ─► wharf cluster status --admin A,B,C (table)
//! ```

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::group_cmd::format_table;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Nodes, shard groups with leader, term and replication lag per follower.
    Status {
        /// Print the merged JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Adds node `--id` (started with `cluster_join=true`) to every raft group: it catches up
    /// as a learner, then becomes a voter (ADR 0019). Asks the first `--admin` listener.
    AddNode {
        /// The new node's `node_id`.
        #[arg(long)]
        id: u64,
        /// The new node's cluster listener (its `cluster_listen`), HOST:PORT.
        #[arg(long)]
        address: String,
    },
    /// Removes node `--id` from every raft group (a group it leads elects another leader).
    /// Asks the first `--admin` listener.
    RemoveNode {
        #[arg(long)]
        id: u64,
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
    let json = match cmd {
        ClusterCommand::Status { json } => json,
        ClusterCommand::AddNode { id, address } => {
            let body = serde_json::json!({ "id": id, "address": address }).to_string();
            let answer = send(first(admins)?, "POST", "/v1/cluster/nodes", &body).await?;
            print!("{}", render_change(&answer));
            return Ok(());
        }
        ClusterCommand::RemoveNode { id } => {
            let path = format!("/v1/cluster/nodes/{id}");
            let answer = send(first(admins)?, "DELETE", &path, "").await?;
            print!("{}", render_change(&answer));
            return Ok(());
        }
    };
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

fn first(admins: &str) -> anyhow::Result<&str> {
    admins
        .split(',')
        .map(str::trim)
        .find(|a| !a.is_empty())
        .context("no --admin listener given")
}

/// One request with a JSON body to the admin listener at `admin`; the JSON answer of a 200,
/// else the error the node gave. No timeout: adding a node waits for it to catch up.
async fn send(admin: &str, method: &str, path: &str, body: &str) -> anyhow::Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the admin listener {admin}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let value: Value = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    if !head.starts_with("HTTP/1.1 200") {
        let why = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| body.trim().to_string(), str::to_string);
        bail!("{admin}: {}: {why}", head.lines().next().unwrap_or(""));
    }
    Ok(value)
}

/// Each group's voters after a membership change.
fn render_change(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|g| {
            let voters = g
                .get("voters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            vec![
                g.get("group")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                voters,
            ]
        })
        .collect();
    format_table(&["GROUP", "VOTERS"], &rows)
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
