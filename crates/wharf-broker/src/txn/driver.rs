//! The transaction coordinator's driver: it persists every metadata change the pure core
//! returns as a record in `__transaction_state` (fdatasync-ed before the client is
//! answered), writes markers, commits transactional offsets into the group coordinator, and
//! runs the timeout tick.
//!
//! ```text
//!  EndTxn ─► core: PrepareX ─► record (synced) ─► markers to every partition (synced)
//!          ─► commit: pending offsets → group coordinator ─► core: CompleteX ─► record
//! ```
//!
//! Changes are applied in memory and submitted to the log under the state lock, so log
//! order is memory order; appends are awaited after the lock is released.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use wharf_record::BatchBuilder;
use wharf_storage::{Durability, Log, PendingAppend};

use super::records::{decode_key, decode_value, encode_key, encode_value};
use super::{
    Completion, InitOutcome, TxnCoordinatorState, TxnError, TxnMetadata, TxnOffset, TxnPartition,
    TRANSACTION_STATE_PARTITIONS, TRANSACTION_STATE_TOPIC,
};
use crate::forward::{CallOffset, NodeCall};
use crate::group::api::{CommitPartition, TxnCommitMember};
use crate::internal_log::replay_keyed;
use crate::producer::now_ms;
use crate::{Broker, BrokerError};

/// How often open transactions are checked against their timeout.
const TICK: Duration = Duration::from_millis(200);
/// How often idle transactional ids are expired.
const EXPIRE_IDS_EVERY: i64 = 60_000;

/// Settings of the transaction coordinator.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// Kafka's `transaction.max.timeout.ms`: larger `transaction.timeout.ms` are refused.
    pub max_timeout_ms: i32,
    /// Kafka's `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
        }
    }
}

pub struct TxnCoordinator {
    config: TxnConfig,
    state: Mutex<TxnCoordinatorState>,
    logs: OnceLock<Vec<Log>>,
    stopped: AtomicBool,
    last_id_expiry: Mutex<i64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unavailable(reason: impl Into<String>) -> BrokerError {
    BrokerError::Txn(TxnError::CoordinatorNotAvailable {
        reason: reason.into(),
    })
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        Self {
            state: Mutex::new(TxnCoordinatorState::new(config.max_timeout_ms)),
            config,
            logs: OnceLock::new(),
            stopped: AtomicBool::new(false),
            last_id_expiry: Mutex::new(0),
        }
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Every transactional id's metadata, sorted by id.
    pub fn list(&self) -> Vec<TxnMetadata> {
        lock(&self.state).all().cloned().collect()
    }

    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        lock(&self.state).get(transactional_id).cloned()
    }

    /// Appends `meta` (or a tombstone) to its `__transaction_state` partition. Call with the
    /// state lock held.
    fn submit(
        &self,
        transactional_id: &str,
        meta: Option<&TxnMetadata>,
    ) -> Result<PendingAppend, BrokerError> {
        let logs = self.logs.get().ok_or_else(|| unavailable("not loaded"))?;
        let log = logs
            .get(crate::group::partition_for(transactional_id, logs.len()))
            .ok_or_else(|| unavailable("no __transaction_state partition"))?;
        let now = now_ms();
        let mut builder = BatchBuilder::new(now);
        let key = encode_key(transactional_id);
        let value = meta.map(encode_value);
        builder.push(Some(&key), value.as_deref(), &[], now);
        Ok(log.submit(builder.build().into(), Durability::Synced)?)
    }
}

async fn durable(pending: Result<PendingAppend, BrokerError>) -> Result<(), BrokerError> {
    pending?.wait().await?;
    Ok(())
}

/// Reads every record of a `__transaction_state` partition, in order.
fn replay_log(log: &Log, state: &mut TxnCoordinatorState) -> Result<usize, BrokerError> {
    replay_keyed(log, |key, value| {
        let id = decode_key(key).map_err(|e| e.to_string())?;
        let value = value
            .map(|v| decode_value(&id, v))
            .transpose()
            .map_err(|e| e.to_string())?;
        state.replay(&id, value);
        Ok(())
    })
    .map_err(|reason| unavailable(format!("replaying log {}: {reason}", log.id())))
}

impl Broker {
    /// The last stable offset of a partition: read_committed readers stop here.
    pub fn last_stable_offset(&self, partition: &crate::Partition) -> i64 {
        self.producers().last_stable_offset(&partition.log)
    }

    /// Aborted transactions of a partition overlapping `[from, to)`.
    pub fn aborted_transactions(
        &self,
        partition: &crate::Partition,
        from: i64,
        to: i64,
    ) -> Vec<super::AbortedTxn> {
        self.producers().aborted(&partition.log, from, to)
    }

    /// Creates `__transaction_state` if missing, replays it, finishes transactions that
    /// were completing at the last stop, and starts the timeout tick.
    pub(crate) fn open_transactions(self: &Arc<Self>) -> Result<(), BrokerError> {
        let topic =
            self.internal_topic(TRANSACTION_STATE_TOPIC, TRANSACTION_STATE_PARTITIONS, true)?;
        let logs: Vec<Log> = topic.partitions.iter().map(|p| p.log.clone()).collect();
        let coordinator = self.transactions();
        let unfinished = {
            let mut state = lock(&coordinator.state);
            let mut records = 0;
            for log in &logs {
                records += replay_log(log, &mut state)?;
            }
            tracing::info!(
                transactional_ids = state.all().count(),
                records,
                "transactions loaded from __transaction_state"
            );
            state.unfinished()
        };
        if coordinator.logs.set(logs).is_err() {
            return Err(unavailable("loaded twice"));
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for completion in unfinished {
                let broker = self.clone();
                runtime.spawn(async move {
                    if let Err(error) = broker.finish(completion).await {
                        tracing::warn!(%error, "finishing a transaction after restart failed");
                    }
                });
            }
            let weak = Arc::downgrade(self);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(TICK).await;
                    let Some(broker) = weak.upgrade() else { break };
                    if broker.transactions().stopped.load(Ordering::Acquire) {
                        break;
                    }
                    broker.tick_transactions().await;
                }
            });
        }
        Ok(())
    }

    /// `Ok` when this node coordinates `transactional_id` now (NOT_COORDINATOR otherwise:
    /// the client looks its coordinator up again).
    fn txn_ready(&self, transactional_id: &str) -> Result<(), BrokerError> {
        let partitions = self
            .transactions()
            .logs
            .get()
            .ok_or_else(|| unavailable("not loaded"))?
            .len();
        let index = crate::group::partition_for(transactional_id, partitions);
        if self.owns_internal(TRANSACTION_STATE_TOPIC, index) {
            Ok(())
        } else {
            Err(BrokerError::Txn(TxnError::NotCoordinator {
                transactional_id: transactional_id.to_string(),
            }))
        }
    }

    /// Replaces the transactional ids of `__transaction_state` partitions `indices` with what
    /// their logs hold now (this node just became their coordinator) and finishes those that
    /// were completing. Blocking (reads the logs); completions run on `runtime` if given.
    pub(crate) fn reload_transactions(
        self: &Arc<Self>,
        indices: &[usize],
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<(), BrokerError> {
        let coordinator = self.transactions();
        let Some(logs) = coordinator.logs.get() else {
            return Ok(());
        };
        let partitions = logs.len();
        let unfinished =
            {
                let mut state = lock(&coordinator.state);
                drop(state.take_where(|id| {
                    indices.contains(&crate::group::partition_for(id, partitions))
                }));
                let mut fresh = TxnCoordinatorState::new(self.config().transactions.max_timeout_ms);
                let mut records = 0;
                for &index in indices {
                    if let Some(log) = logs.get(index) {
                        records += replay_log(log, &mut fresh)?;
                    }
                }
                let unfinished = fresh.unfinished();
                let all = fresh.take_where(|_| true);
                tracing::info!(
                    partitions = ?indices,
                    transactional_ids = all.len(),
                    records,
                    "transactions reloaded for the partitions this node now coordinates"
                );
                state.restore(all);
                unfinished
            };
        if let Some(runtime) = runtime {
            for completion in unfinished {
                let broker = self.clone();
                runtime.spawn(async move {
                    if let Err(error) = broker.finish(completion).await {
                        tracing::warn!(%error, "finishing a transaction after a leader change failed");
                    }
                });
            }
        }
        Ok(())
    }

    /// Aborts transactions open past their timeout; expires idle transactional ids.
    pub async fn tick_transactions(self: &Arc<Self>) {
        let coordinator = self.transactions();
        let now = now_ms();
        let Some(partitions) = coordinator.logs.get().map(Vec::len) else {
            return;
        };
        let (expired, pending) = {
            let mut state = lock(&coordinator.state);
            // Only the ids this node coordinates time out here (a follower's are stale).
            let foreign = state.take_where(|id| {
                !self.owns_internal(
                    TRANSACTION_STATE_TOPIC,
                    crate::group::partition_for(id, partitions),
                )
            });
            let expired = state.expire(now);
            let mut pending = Vec::new();
            for (meta, _) in &expired {
                tracing::info!(
                    transactional_id = %meta.transactional_id,
                    producer_id = meta.producer_id,
                    "transaction timed out; aborting"
                );
                pending.push(coordinator.submit(&meta.transactional_id, Some(meta)));
            }
            let mut last = lock(&coordinator.last_id_expiry);
            if now - *last >= EXPIRE_IDS_EVERY {
                *last = now;
                for id in state.expire_ids(now, coordinator.config.id_expiration_ms) {
                    tracing::info!(transactional_id = %id, "transactional id expired");
                    pending.push(coordinator.submit(&id, None));
                }
            }
            state.restore(foreign);
            (expired, pending)
        };
        for p in pending {
            if let Err(error) = durable(p).await {
                tracing::warn!(%error, "writing __transaction_state failed");
            }
        }
        for (_, completion) in expired {
            let broker = self.clone();
            tokio::spawn(async move {
                if let Err(error) = broker.finish(completion).await {
                    tracing::warn!(%error, "aborting a timed-out transaction failed");
                }
            });
        }
    }

    /// Writes the markers of `completion`, commits or drops its offsets, and completes it.
    async fn finish(&self, completion: Completion) -> Result<(), BrokerError> {
        // Each marker goes through its partition's leader, this node or another.
        for marker in &completion.markers {
            let partition = self.partition(&marker.partition.topic, marker.partition.partition)?;
            self.call_shard_leader(
                partition.log.shard_id(),
                NodeCall::Marker {
                    topic: marker.partition.topic.clone(),
                    partition: marker.partition.partition,
                    producer_id: marker.producer_id,
                    producer_epoch: marker.producer_epoch,
                    commit: marker.commit,
                },
            )
            .await?;
        }
        let coordinator = self.transactions();
        let mut by_group: BTreeMap<&str, Vec<CallOffset>> = BTreeMap::new();
        for (group, topic, partition, o) in &completion.offsets {
            by_group.entry(group).or_default().push(CallOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata.clone(),
            });
        }
        // Offsets go through the group's coordinator, this node or another.
        for (group, offsets) in by_group {
            let shard = self
                .coordinator_shard(crate::group::OFFSETS_TOPIC, group)
                .ok_or_else(|| unavailable("no __consumer_offsets partition"))?;
            self.call_shard_leader(
                shard,
                NodeCall::CommitTxnOffsets {
                    group: group.to_string(),
                    offsets,
                },
            )
            .await?;
        }
        let pending = {
            let mut state = lock(&coordinator.state);
            state
                .complete(&completion, now_ms())
                .map(|meta| coordinator.submit(&completion.transactional_id, Some(&meta)))
        };
        if let Some(p) = pending {
            durable(p).await?;
        }
        tracing::debug!(
            transactional_id = %completion.transactional_id,
            commit = completion.commit,
            partitions = completion.markers.len(),
            "transaction completed"
        );
        Ok(())
    }

    /// InitProducerId with a transactional id.
    pub async fn init_transactional_producer(
        self: &Arc<Self>,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<(i64, i16), BrokerError> {
        self.txn_ready(transactional_id)?;
        let coordinator = self.transactions();
        let fresh = if coordinator.describe(transactional_id).is_none() {
            Some(self.allocate_producer_id()?)
        } else {
            None
        };
        let (outcome, pending) = {
            let mut state = lock(&coordinator.state);
            let mut allocated = fresh;
            let outcome = state.init_producer_id(transactional_id, timeout_ms, now_ms(), || {
                allocated.take().unwrap_or(-1)
            })?;
            let persist = match &outcome {
                InitOutcome::Ready { persist, .. } | InitOutcome::AbortFirst { persist, .. } => {
                    persist
                }
            };
            if persist.producer_id < 0 {
                // The epoch overflowed and no id was reserved: the client retries.
                return Err(TxnError::ConcurrentTransactions {
                    transactional_id: transactional_id.to_string(),
                    state: "epoch exhausted",
                }
                .into());
            }
            let pending = coordinator.submit(transactional_id, Some(persist));
            (outcome, pending)
        };
        durable(pending).await?;
        match outcome {
            InitOutcome::Ready {
                producer_id,
                producer_epoch,
                ..
            } => {
                tracing::debug!(
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    "transactional producer ready"
                );
                Ok((producer_id, producer_epoch))
            }
            InitOutcome::AbortFirst { completion, .. } => {
                tracing::info!(
                    transactional_id,
                    "fencing the previous producer: aborting its transaction"
                );
                let broker = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = broker.finish(completion).await {
                        tracing::warn!(%error, "aborting a fenced transaction failed");
                    }
                });
                Err(TxnError::ConcurrentTransactions {
                    transactional_id: transactional_id.to_string(),
                    state: "PrepareAbort",
                }
                .into())
            }
        }
    }

    /// AddPartitionsToTxn: one result per partition.
    pub async fn add_partitions_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TxnPartition],
    ) -> Result<(), BrokerError> {
        self.txn_ready(transactional_id)?;
        for p in partitions {
            self.partition(&p.topic, p.partition)?;
        }
        let coordinator = self.transactions();
        let pending = {
            let mut state = lock(&coordinator.state);
            state
                .add_partitions(transactional_id, producer_id, epoch, partitions, now_ms())?
                .map(|meta| coordinator.submit(transactional_id, Some(&meta)))
        };
        if let Some(p) = pending {
            durable(p).await?;
        }
        Ok(())
    }

    /// AddOffsetsToTxn.
    pub async fn add_offsets_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), BrokerError> {
        self.txn_ready(transactional_id)?;
        let coordinator = self.transactions();
        let pending = {
            let mut state = lock(&coordinator.state);
            state
                .add_offsets(transactional_id, producer_id, epoch, group, now_ms())?
                .map(|meta| coordinator.submit(transactional_id, Some(&meta)))
        };
        if let Some(p) = pending {
            durable(p).await?;
        }
        Ok(())
    }

    /// Whether a transactional batch of `producer_id`/`epoch` may be written to
    /// `topic`[`partition`]: only into the producer's open transaction, after the partition
    /// was added to it (see `TxnCoordinatorState::check_produce`).
    pub fn check_transactional_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), BrokerError> {
        let state = lock(&self.transactions().state);
        if self.leadership().clustered() {
            // In a cluster another node may coordinate the producer's transaction: only one
            // this node coordinates is checked here (Kafka before KIP-890 checked none).
            let partitions = self.transactions().logs.get().map_or(0, Vec::len);
            let ours = state.transactional_id_of(producer_id).is_some_and(|id| {
                self.owns_internal(
                    TRANSACTION_STATE_TOPIC,
                    crate::group::partition_for(id, partitions),
                )
            });
            if !ours {
                return Ok(());
            }
        }
        match state.check_produce(producer_id, epoch, &TxnPartition::new(topic, partition)) {
            // A fenced producer's batch gets what the producer state answers an old epoch
            // with on a produce (INVALID_PRODUCER_EPOCH), which clients treat as fatal.
            Err(TxnError::ProducerFenced { current, .. }) => {
                Err(BrokerError::Producer(crate::ProducerError::InvalidEpoch {
                    producer_id,
                    epoch,
                    current,
                }))
            }
            other => other.map_err(BrokerError::from),
        }
    }

    /// TxnOffsetCommit: the offsets are held in the transaction's durable record until it
    /// ends; they become the group's committed offsets only if it commits. A commit that
    /// names a consumer (v3+) must name a live member of the group's current generation
    /// (KIP-447), so a zombie whose consumer was fenced by a rebalance is refused.
    pub async fn txn_offset_commit(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        member: &TxnCommitMember,
        partitions: Vec<CommitPartition>,
    ) -> Result<(), BrokerError> {
        // Sent to the group's coordinator (this node): the member is checked here, the
        // offsets are held by the transaction's coordinator (this node or another).
        self.groups().validate_txn_member(
            group,
            member.generation_id,
            &member.member_id,
            member.group_instance_id.as_ref(),
        )?;
        let offsets = partitions
            .into_iter()
            .map(|p| CallOffset {
                topic: p.topic,
                partition: p.partition,
                offset: p.offset,
                leader_epoch: p.leader_epoch,
                metadata: p.metadata,
            })
            .collect();
        let shard = self
            .coordinator_shard(TRANSACTION_STATE_TOPIC, transactional_id)
            .ok_or_else(|| unavailable("no __transaction_state partition"))?;
        self.call_shard_leader(
            shard,
            NodeCall::AddTxnOffsets {
                transactional_id: transactional_id.to_string(),
                producer_id,
                producer_epoch: epoch,
                group: group.to_string(),
                offsets,
            },
        )
        .await
    }

    /// Holds a TxnOffsetCommit's offsets in the transaction's durable record (this node
    /// coordinates `transactional_id`) until it ends.
    pub(crate) async fn record_txn_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<(String, i32, TxnOffset)>,
    ) -> Result<(), BrokerError> {
        self.txn_ready(transactional_id)?;
        let coordinator = self.transactions();
        let pending = {
            let mut state = lock(&coordinator.state);
            let meta = state.offset_commit(
                transactional_id,
                producer_id,
                epoch,
                group,
                offsets,
                now_ms(),
            )?;
            coordinator.submit(transactional_id, Some(&meta))
        };
        durable(pending).await
    }

    /// EndTxn: returns once the markers are written and the outcome is durable.
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), BrokerError> {
        self.txn_ready(transactional_id)?;
        let coordinator = self.transactions();
        let prepared = {
            let mut state = lock(&coordinator.state);
            state
                .end_txn(transactional_id, producer_id, epoch, commit, now_ms())?
                .map(|(meta, completion)| {
                    (
                        coordinator.submit(transactional_id, Some(&meta)),
                        completion,
                    )
                })
        };
        let Some((pending, completion)) = prepared else {
            return Ok(());
        };
        durable(pending).await?;
        self.finish(completion).await
    }
}

#[cfg(test)]
mod tests;
