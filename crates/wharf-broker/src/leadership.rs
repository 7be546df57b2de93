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
//!  server: raft metrics say "leader of shard s in term t" ─► Broker::become_leader(s, t)
//!     served[s] = none ─► rebuild producers, groups, transactions of s ─► served[s] = t
//!  server: "not leader of s" ─► Broker::step_down(s) ─► served[s] = none
//!  a request: serve iff the view says "this node leads s in term t" and served[s] == t
//! ```
//!
//! Serving is bound to the term: a node that lost the shard and won it back in a later term
//! never serves it on state rebuilt for the earlier term, even before the server noticed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use wharf_storage::Log;

use crate::group::OFFSETS_TOPIC;
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::{Broker, BrokerError};

/// `served` of a shard this node does not serve.
const NONE: u64 = u64::MAX;

pub(crate) struct Leadership {
    /// By shard id: the term whose state this node rebuilt as the shard's leader (`NONE`).
    served: Vec<AtomicU64>,
    /// The shard of each `__consumer_offsets` and `__transaction_state` partition, by index
    /// (fixed once the broker opened them).
    internal: OnceLock<(Vec<usize>, Vec<usize>)>,
    /// Part of a cluster: other nodes coordinate some transactions.
    clustered: AtomicBool,
}

impl Leadership {
    /// A single node: serves every shard (its view says term 0 for each).
    pub fn new(shards: usize) -> Self {
        Self {
            served: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            internal: OnceLock::new(),
            clustered: AtomicBool::new(false),
        }
    }

    /// Whether this node rebuilt shard `shard` for leading it in `term`.
    pub fn serving(&self, shard: usize, term: u64) -> bool {
        self.served
            .get(shard)
            .is_some_and(|s| s.load(Ordering::Acquire) == term)
    }

    fn set(&self, shard: usize, term: u64) {
        if let Some(s) = self.served.get(shard) {
            s.store(term, Ordering::Release);
        }
    }

    /// A cluster: no shard is served until its leadership is confirmed.
    pub fn clustered(&self) -> bool {
        self.clustered.load(Ordering::Acquire)
    }

    pub fn serve_none(&self) {
        self.clustered.store(true, Ordering::Release);
        for s in &self.served {
            s.store(NONE, Ordering::Release);
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

    /// Whether this node leads shard `shard` now and rebuilt it for this term.
    pub(crate) fn shard_served(&self, shard: usize) -> bool {
        let cluster = self.cluster();
        match cluster.shard_leader_term(shard) {
            Some((leader, term)) => {
                leader == cluster.node_id() && self.leadership().serving(shard, term)
            }
            None => false,
        }
    }

    /// This node just became the leader of shard `shard` in raft term `term`: rebuilds what
    /// the previous leaders wrote (producer state of the shard's partitions, its coordinators'
    /// groups and transactions), then serves the shard for that term. Blocking (reads the
    /// shard's logs); transaction completions found unfinished run on `runtime`.
    pub fn become_leader(
        self: &Arc<Self>,
        shard: usize,
        term: u64,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), BrokerError> {
        self.leadership().set(shard, NONE);
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
        let queues = self.reload_queue_engines(shard)?;
        self.leadership().set(shard, term);
        tracing::info!(
            shard,
            term,
            queue_engines = ?queues,
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
        tracing::info!(shard, "this node no longer leads the shard");
        self.leadership().set(shard, NONE);
        // The queue engines stop acting for it at once: each checks `served_term` /
        // `shard_served` before it fires a timer, delivers or answers; a wake-up makes the
        // cursors' background round see it now rather than at its next tick.
        self.cursors().wake_up();
    }

    /// The raft term for which this node serves shard `shard` (0 alone), if it does.
    pub(crate) fn served_term(&self, shard: usize) -> Option<u64> {
        let cluster = self.cluster();
        let (leader, term) = cluster.shard_leader_term(shard)?;
        (leader == cluster.node_id() && self.leadership().serving(shard, term)).then_some(term)
    }

    /// What a node that does not serve shard `shard` answers (NOT_LEADER_OR_FOLLOWER for
    /// Kafka clients), naming the leader it knows.
    pub(crate) fn not_leader(&self, shard_id: usize) -> BrokerError {
        let leader = self.cluster().shard_leader(shard_id);
        BrokerError::Storage(wharf_storage::StorageError::NotLeader {
            shard_id,
            leader: leader.and_then(|l| u64::try_from(l).ok()),
        })
    }

    /// The shard of the one-partition internal topic `name`, if it exists here.
    fn internal_log_shard(&self, name: &str) -> Option<usize> {
        self.topic(name)
            .and_then(|t| t.partitions.first().map(|p| p.log.shard_id()))
    }

    /// The queue engines' part of [`Broker::become_leader`] (ARCHITECTURE decision 6): the
    /// scheduled-message engine, the share-group configs and the cursors reload from their
    /// internal log when it lives in `shard`, and the share groups coordinated from the
    /// shard's `__consumer_offsets` partitions forget the members an earlier term knew (they
    /// are not persisted: members join again). Returns the engines reloaded.
    fn reload_queue_engines(&self, shard: usize) -> Result<Vec<&'static str>, BrokerError> {
        use crate::cursor::CURSOR_TOPIC;
        use crate::scheduled::SCHEDULED_TOPIC;
        use crate::share::SHARE_GROUPS_TOPIC;
        let mut reloaded = Vec::new();
        if self.internal_log_shard(SCHEDULED_TOPIC) == Some(shard) {
            self.reload_scheduled()?;
            reloaded.push(SCHEDULED_TOPIC);
        }
        if self.internal_log_shard(SHARE_GROUPS_TOPIC) == Some(shard) {
            self.reload_share_configs()?;
            reloaded.push(SHARE_GROUPS_TOPIC);
        }
        if self.internal_log_shard(CURSOR_TOPIC) == Some(shard) {
            self.reload_cursors()?;
            reloaded.push(CURSOR_TOPIC);
        }
        let offsets = self
            .leadership()
            .internal
            .get()
            .map(|(offsets, _)| offsets.clone())
            .unwrap_or_default();
        self.share_forget_members(&|index| offsets.get(index) == Some(&shard));
        Ok(reloaded)
    }
}
