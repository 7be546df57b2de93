//! Which shards this node serves as leader (ADR 0012). Alone, every shard, always. In a
//! cluster a node serves a shard only once it leads the shard's raft group *and* has rebuilt
//! the state other leaders wrote while it followed: the producer state (idempotence, open
//! transactions, the last stable offset) of every partition in the shard, and the groups and
//! transactional ids whose `__consumer_offsets` / `__transaction_state` partitions live there
//! (a coordinator runs on the leader of its partition and rebuilds its state from the log).
//! Until then its produce, fetch and coordinator answers are NOT_LEADER_OR_FOLLOWER or
//! NOT_COORDINATOR, and clients retry.
//!
//! ```text
//!  server: raft metrics say "leader of shard s in term t" ─► Broker::become_leader(s)
//!     serving[s] = false ─► rebuild producers, groups, transactions of s ─► serving[s] = true
//!  server: "not leader of s" ─► Broker::step_down(s) ─► serving[s] = false
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use wharf_storage::Log;

use crate::group::OFFSETS_TOPIC;
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::{Broker, BrokerError};

pub(crate) struct Leadership {
    /// By shard id: this node serves the shard as its leader now.
    serving: Vec<AtomicBool>,
    /// The shard of each `__consumer_offsets` and `__transaction_state` partition, by index
    /// (fixed once the broker opened them).
    internal: OnceLock<(Vec<usize>, Vec<usize>)>,
}

impl Leadership {
    /// A single node: serves every shard.
    pub fn new(shards: usize) -> Self {
        Self {
            serving: (0..shards).map(|_| AtomicBool::new(true)).collect(),
            internal: OnceLock::new(),
        }
    }

    pub fn serving(&self, shard: usize) -> bool {
        self.serving
            .get(shard)
            .is_some_and(|s| s.load(Ordering::Acquire))
    }

    fn set(&self, shard: usize, serving: bool) {
        if let Some(s) = self.serving.get(shard) {
            s.store(serving, Ordering::Release);
        }
    }

    /// A cluster: no shard is served until its leadership is confirmed.
    pub fn serve_none(&self) {
        for s in &self.serving {
            s.store(false, Ordering::Release);
        }
    }
}

impl Broker {
    /// Records the shards of the coordinators' internal partitions (after they are opened).
    pub(crate) fn note_internal_shards(&self) {
        let shards = |topic: &str| {
            self.topic(topic)
                .map(|t| t.partitions.iter().map(|p| p.log.shard_id()).collect())
                .unwrap_or_default()
        };
        let _ = self
            .leadership()
            .internal
            .set((shards(OFFSETS_TOPIC), shards(TRANSACTION_STATE_TOPIC)));
    }

    /// Whether this node serves partition `index` of an internal coordinator topic
    /// (`__consumer_offsets` or `__transaction_state`): it leads its shard and has rebuilt it.
    pub(crate) fn owns_internal(&self, topic: &str, index: usize) -> bool {
        let Some((offsets, txns)) = self.leadership().internal.get() else {
            // Still opening: alone, everything is ours; in a cluster nothing is served yet.
            return true;
        };
        let shards = if topic == TRANSACTION_STATE_TOPIC {
            txns
        } else {
            offsets
        };
        shards
            .get(index)
            .is_some_and(|&shard| self.shard_served(shard))
    }

    /// Whether this node leads shard `shard` and serves it.
    pub(crate) fn shard_served(&self, shard: usize) -> bool {
        let cluster = self.cluster();
        self.leadership().serving(shard) && cluster.shard_leader(shard) == Some(cluster.node_id())
    }

    /// This node just became the leader of shard `shard`: rebuilds what the previous leaders
    /// wrote (producer state of the shard's partitions, its coordinators' groups and
    /// transactions), then serves the shard. Blocking (reads the shard's logs); transaction
    /// completions found unfinished run on `runtime`.
    pub fn become_leader(
        self: &Arc<Self>,
        shard: usize,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), BrokerError> {
        self.leadership().set(shard, false);
        let logs: Vec<Log> = self
            .topics()
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.log.clone()))
            .filter(|log| log.shard_id() == shard)
            .collect();
        let replayed = self.producers().rebuild(&logs)?;
        let (offsets, txns) = self
            .leadership()
            .internal
            .get()
            .cloned()
            .unwrap_or_default();
        let in_shard = |shards: &[usize]| -> Vec<usize> {
            shards
                .iter()
                .enumerate()
                .filter(|(_, &s)| s == shard)
                .map(|(i, _)| i)
                .collect()
        };
        let offsets = in_shard(&offsets);
        if !offsets.is_empty() {
            self.groups()
                .reload(&offsets)
                .map_err(|e| BrokerError::Metadata(format!("reloading groups: {e}")))?;
        }
        let txns = in_shard(&txns);
        if !txns.is_empty() {
            self.reload_transactions(&txns, Some(runtime))?;
        }
        self.leadership().set(shard, true);
        tracing::info!(
            shard,
            partitions = logs.len(),
            replayed,
            offsets_partitions = ?offsets,
            transaction_partitions = ?txns,
            "this node now leads the shard and serves it"
        );
        Ok(())
    }

    /// This node no longer leads shard `shard`.
    pub fn step_down(&self, shard: usize) {
        if self.leadership().serving(shard) {
            tracing::info!(shard, "this node no longer leads the shard");
        }
        self.leadership().set(shard, false);
    }
}
