//! What the broker knows of the cluster it runs in (ADR 0012): the nodes clients may connect
//! to, and for each shard the node that leads it, its replicas and the in-sync ones. The broker
//! depends on neither raft nor a network: `wharf-server` implements [`ClusterView`] over its
//! shard groups and hands it to [`crate::Broker::set_cluster_view`]; without one the broker is
//! a single node that leads every shard.
//!
//! Every partition of a shard shares the shard's leader (a shard log is one raft group), so a
//! partition's leader, replicas and ISR are its shard's.

/// A node's Kafka listener as clients are told it (Metadata, FindCoordinator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

/// One shard's replication state as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRole {
    /// The node that leads the shard; `None` during an election.
    pub leader: Option<i32>,
    /// Kafka's leader epoch: the raft term of the current leader.
    pub leader_epoch: i32,
    /// Every node holding a replica of the shard (the group's voters).
    pub replicas: Vec<i32>,
    /// The replicas caught up with the leader (Kafka's ISR).
    pub isr: Vec<i32>,
}

/// The cluster as the broker sees it; implemented by the server over its raft groups.
pub trait ClusterView: Send + Sync {
    /// This node's id.
    fn node_id(&self) -> i32;
    /// Every node whose Kafka listener is known (this one too, unless it is cut off from the
    /// others: a fenced broker, which clients should not ask).
    fn nodes(&self) -> Vec<NodeAddress>;
    /// The replication state of shard `shard`.
    fn shard(&self, shard: usize) -> ShardRole;
    /// The leader of shard `shard` alone (the fetch and produce paths ask it per partition).
    fn shard_leader(&self, shard: usize) -> Option<i32> {
        self.shard(shard).leader
    }
    /// The leader of shard `shard` and the raft term it leads in.
    fn shard_leader_term(&self, shard: usize) -> Option<(i32, u64)> {
        let role = self.shard(shard);
        Some((role.leader?, u64::try_from(role.leader_epoch).ok()?))
    }
    /// The node that accepts metadata changes (Kafka's controller), if known.
    fn controller(&self) -> Option<i32>;
    /// Makes `call` on node `node`'s broker ([`crate::Broker::serve_call`] there).
    fn call(&self, node: i32, call: crate::forward::NodeCall) -> CallFuture {
        let _ = call;
        Box::pin(async move { Err(format!("node {node}: no other nodes")) })
    }
}

/// The answer to a [`ClusterView::call`]: served, or why not.
pub type CallFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// A node of its own: it leads every shard and is the controller.
pub(crate) struct SingleNode(pub NodeAddress);

impl ClusterView for SingleNode {
    fn node_id(&self) -> i32 {
        self.0.id
    }

    fn nodes(&self) -> Vec<NodeAddress> {
        vec![self.0.clone()]
    }

    fn shard(&self, _shard: usize) -> ShardRole {
        ShardRole {
            leader: Some(self.0.id),
            leader_epoch: 0,
            replicas: vec![self.0.id],
            isr: vec![self.0.id],
        }
    }

    fn shard_leader(&self, _shard: usize) -> Option<i32> {
        Some(self.0.id)
    }

    fn shard_leader_term(&self, _shard: usize) -> Option<(i32, u64)> {
        Some((self.0.id, 0))
    }

    fn controller(&self) -> Option<i32> {
        Some(self.0.id)
    }
}
