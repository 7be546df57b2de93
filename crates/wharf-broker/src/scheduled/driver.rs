//! The scheduler's driver: it persists changes to `__wharf_scheduled` (synced), delivers
//! due and committed records to their target partitions with the engine's producer id,
//! announces check-backs, and at start replays the log and settles deliveries a crash left
//! without their tombstone.
//!
//! Changes are applied to the [`Schedule`] and submitted to the log under its lock, so log
//! order is memory order; appends are awaited after the lock is released. The producer
//! state lock of a target partition may be held while this lock is taken, never the reverse.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};
use wharf_storage::{Durability, Log, PendingAppend};

use super::core::{half_step, Entry, HalfStep, Schedule};
use super::dedup::Dedup;
use super::headers;
use super::records::{decode_key, decode_value, encode_key, encode_value};
use crate::internal_log::replay_keyed;
use crate::producer::{now_ms, BatchIdentity, Placement};
use crate::{Broker, BrokerError, Partition};

/// The internal topic holding waiting records.
pub const SCHEDULED_TOPIC: &str = "__wharf_scheduled";
/// Half records unanswered after their last check-back are moved here.
pub const ABANDONED_TOPIC: &str = "wharf.txn-abandoned";
/// Check-backs of producer group `g` are announced on `wharf.txn-check.g`.
pub const CHECK_TOPIC_PREFIX: &str = "wharf.txn-check.";
/// The producer id the engine delivers with. Client ids are allocated upward from 0, so
/// this one is never handed out.
pub const ENGINE_PRODUCER_ID: i64 = i64::MAX - 1;
/// Records taken due at a time.
const TAKE_LIMIT: usize = 2_000;
/// The longest the delivery loop sleeps without looking.
const IDLE: Duration = Duration::from_millis(100);
/// Bytes of records (roughly) in one engine batch.
const DELIVERY_BYTES: usize = 1 << 20;
/// A failed delivery is tried again this much later.
const RETRY_MS: i64 = 1_000;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counters of the engine, registered once.
pub(super) struct Counters {
    pub(super) delay_scheduled: metrics::Counter,
    pub(super) delay_fired: metrics::Counter,
    pub(super) half_prepared: metrics::Counter,
    pub(super) half_committed: metrics::Counter,
    pub(super) half_rolled_back: metrics::Counter,
    pub(super) half_checked: metrics::Counter,
    pub(super) half_abandoned: metrics::Counter,
}

impl Counters {
    fn new() -> Self {
        Self {
            delay_scheduled: metrics::counter!("wharf_delay_scheduled_total"),
            delay_fired: metrics::counter!("wharf_delay_fired_total"),
            half_prepared: metrics::counter!("wharf_txn_half_prepared_total"),
            half_committed: metrics::counter!("wharf_txn_half_committed_total"),
            half_rolled_back: metrics::counter!("wharf_txn_half_rolled_back_total"),
            half_checked: metrics::counter!("wharf_txn_half_checked_total"),
            half_abandoned: metrics::counter!("wharf_txn_half_abandoned_total"),
        }
    }
}

/// The engine of delayed and half records.
pub struct Scheduler {
    pub(super) state: Mutex<Schedule>,
    pub(super) log: OnceLock<Log>,
    pub(super) wake: tokio::sync::Notify,
    pub(super) stopped: AtomicBool,
    /// The raft term (0 alone) whose reloaded schedule was settled; `u64::MAX`: none yet.
    pub(super) settled_for: AtomicU64,
    /// A delivery could not be recorded: no delivery until the schedule is reloaded (a
    /// single node never reloads: until restart).
    pub(super) halted: AtomicBool,
    pub(super) counters: Counters,
    pub(crate) dedup: Arc<Dedup>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self {
            state: Mutex::new(Schedule::default()),
            log: OnceLock::new(),
            wake: tokio::sync::Notify::new(),
            stopped: AtomicBool::new(false),
            settled_for: AtomicU64::new(u64::MAX),
            halted: AtomicBool::new(false),
            counters: Counters::new(),
            dedup: Arc::default(),
        }
    }
}

impl Scheduler {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Records waiting for `topic` (delayed or half) and the earliest due time among them.
    pub fn waiting(&self, topic: &str) -> (usize, Option<i64>) {
        lock(&self.state).waiting(topic)
    }

    /// Every waiting record (a copy).
    pub fn waiting_entries(&self) -> Vec<Entry> {
        lock(&self.state).entries().cloned().collect()
    }

    fn log(&self) -> Result<&Log, BrokerError> {
        self.log
            .get()
            .ok_or_else(|| BrokerError::Metadata(format!("{SCHEDULED_TOPIC} is not loaded")))
    }

    /// Submits one record per change to the log. Call with the state lock held.
    pub(super) fn submit(
        &self,
        changes: &[(u64, Option<&Entry>)],
    ) -> Result<PendingAppend, BrokerError> {
        let now = now_ms();
        let mut builder = BatchBuilder::new(now);
        for (id, entry) in changes {
            let value = entry.map(encode_value);
            builder.push(Some(&encode_key(*id)), value.as_deref(), &[], now);
        }
        Ok(self
            .log()?
            .submit(builder.build().into(), Durability::Synced)?)
    }
}

impl Broker {
    /// Creates `__wharf_scheduled` if missing, replays it (restoring the producer state of
    /// diverted idempotent batches), settles deliveries a crash left without a tombstone,
    /// and starts the delivery loop.
    pub(crate) fn open_scheduled(self: &Arc<Self>) -> Result<(), BrokerError> {
        let topic = self.internal_topic(SCHEDULED_TOPIC, 1, false)?;
        let log = topic
            .partitions
            .first()
            .map(|p| p.log.clone())
            .ok_or_else(|| BrokerError::Metadata(format!("{SCHEDULED_TOPIC} has no partition")))?;
        let scheduler = self.scheduler();
        let records = self.load_scheduled(&log)?;
        if scheduler.log.set(log).is_err() {
            return Err(BrokerError::Metadata(format!(
                "{SCHEDULED_TOPIC} loaded twice"
            )));
        }
        let waiting = lock(&scheduler.state).len();
        tracing::info!(
            records,
            waiting,
            "scheduled records loaded from {SCHEDULED_TOPIC}"
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(self);
            runtime.spawn(async move {
                loop {
                    let Some(broker) = weak.upgrade() else { break };
                    let scheduler = broker.scheduler();
                    if scheduler.stopped.load(Ordering::Acquire) {
                        break;
                    }
                    // Only the node serving `__wharf_scheduled` delivers, and only once it
                    // settled what the log it reloaded for its term left half-done.
                    let term = broker.scheduled_term();
                    match term {
                        Some(term) if !scheduler.halted.load(Ordering::Acquire) => {
                            if scheduler.settled_for.load(Ordering::Acquire) == term {
                                broker.run_due().await;
                                continue;
                            }
                            match broker.settle_deliveries().await {
                                Ok(settled) => {
                                    tracing::info!(settled, term, "scheduled deliveries settled");
                                    scheduler.settled_for.store(term, Ordering::Release);
                                    continue;
                                }
                                // Alone, a failed settle stops delivery until restart. A
                                // cluster node retries (a leader change reloads anyway), and
                                // so does any node whose log refused the write because
                                // another node leads.
                                Err(error)
                                    if !broker.leadership().clustered()
                                        && !matches!(
                                            error,
                                            BrokerError::Storage(
                                                wharf_storage::StorageError::NotLeader { .. }
                                            )
                                        ) =>
                                {
                                    // Delivering now could duplicate a record: stay stopped.
                                    tracing::error!(%error, "settling scheduled deliveries failed; no delivery until restart");
                                    return;
                                }
                                Err(error) => {
                                    tracing::warn!(%error, term, "settling scheduled deliveries failed; retrying");
                                }
                            }
                        }
                        _ => {}
                    }
                    drop(broker);
                    tokio::time::sleep(IDLE).await;
                }
            });
        }
        Ok(())
    }

    /// Replaces the schedule with the one `log` holds (restoring the producer state of
    /// diverted idempotent batches); returns how many records it replayed.
    fn load_scheduled(&self, log: &Log) -> Result<usize, BrokerError> {
        let scheduler = self.scheduler();
        // Diverted idempotent batches, in log order (one per batch), replayed into their
        // target's producer state after the schedule lock is released: the produce path
        // takes the producer state lock first.
        let mut origins: Vec<(String, i32, BatchIdentity, i64)> = Vec::new();
        let records = {
            let mut state = lock(&scheduler.state);
            let mut fresh = Schedule::default();
            let records = replay_keyed(log, |key, value| {
                let id = decode_key(key).map_err(|e| e.to_string())?;
                let entry = match value {
                    Some(v) => Some(decode_value(id, v).map_err(|e| e.to_string())?),
                    None => None,
                };
                if let Some(e) = &entry {
                    if let Some(origin) = e.origin {
                        let same = origins.last().is_some_and(|(t, p, o, _)| {
                            *t == e.topic && *p == e.partition && *o == origin
                        });
                        if !same {
                            origins.push((e.topic.clone(), e.partition, origin, e.timestamp));
                        }
                    }
                }
                fresh.apply(id, entry);
                Ok(())
            })
            .map_err(|reason| BrokerError::Metadata(format!("{SCHEDULED_TOPIC}: {reason}")))?;
            *state = fresh;
            records
        };
        for (topic, partition, origin, timestamp) in origins {
            if let Ok(p) = self.partition(&topic, partition) {
                self.producers().replay_diverted(&p.log, &origin, timestamp);
            }
        }
        Ok(records)
    }

    /// The raft term for which this node serves `__wharf_scheduled` (0 alone), if it does.
    fn scheduled_term(&self) -> Option<u64> {
        let log = self.scheduler().log.get()?;
        self.served_term(log.shard_id())
    }

    /// This node now leads the shard of `__wharf_scheduled`: the schedule becomes what the
    /// log holds (what earlier leaders stored, delivered and tombstoned), and the delivery
    /// loop settles it again before it delivers. Blocking (reads the log).
    pub(crate) fn reload_scheduled(&self) -> Result<(), BrokerError> {
        let scheduler = self.scheduler();
        let Some(log) = scheduler.log.get() else {
            return Ok(());
        };
        let records = self.load_scheduled(log)?;
        scheduler.settled_for.store(u64::MAX, Ordering::Release);
        scheduler.halted.store(false, Ordering::Release);
        scheduler.wake.notify_one();
        tracing::info!(
            records,
            waiting = lock(&scheduler.state).len(),
            "scheduled records reloaded from {SCHEDULED_TOPIC} for a new leader"
        );
        Ok(())
    }

    /// `NotLeader` unless this node serves `__wharf_scheduled` (a record to
    /// store there is refused before anything changes; the client retries on the leader).
    pub(crate) fn check_scheduled_owner(&self) -> Result<(), BrokerError> {
        match self.scheduler().log.get() {
            Some(log) if self.scheduled_term().is_none() => Err(self.not_leader(log.shard_id())),
            _ => Ok(()),
        }
    }

    /// Tombstones waiting records that the last engine batches of their target partitions
    /// already delivered (a crash came between delivery and tombstone). Returns how many.
    /// Runs before the first delivery.
    async fn settle_deliveries(&self) -> Result<usize, BrokerError> {
        let scheduler = self.scheduler();
        let targets = lock(&scheduler.state).targets();
        let mut delivered = Vec::new();
        for (topic, partition) in targets {
            let Ok(p) = self.partition(&topic, partition) else {
                continue;
            };
            for (_, _, placement) in self.producers().batches_of(&p.log, ENGINE_PRODUCER_ID) {
                if let Placement::Written { base_offset, .. } = placement {
                    delivered.extend(delivered_ids(&p.log, base_offset)?);
                }
            }
        }
        let pending = {
            let mut state = lock(&scheduler.state);
            let done: Vec<u64> = delivered
                .into_iter()
                .filter(|id| state.get(*id).is_some_and(|e| e.half.is_none()))
                .collect();
            if done.is_empty() {
                return Ok(0);
            }
            for id in &done {
                state.apply(*id, None);
            }
            let changes: Vec<(u64, Option<&Entry>)> = done.iter().map(|id| (*id, None)).collect();
            (scheduler.submit(&changes)?, done.len())
        };
        // Synced before any delivery, so a partition never has two untombstoned deliveries.
        pending.0.wait().await?;
        Ok(pending.1)
    }

    /// One round of the delivery loop: takes what is due, delivers delayed and committed
    /// records, steps half records; sleeps until the next due time otherwise.
    async fn run_due(self: &Arc<Self>) {
        let scheduler = self.scheduler();
        if !self.storage().poisoned_shards().is_empty() {
            // A store into `__wharf_scheduled` may have failed after its records were
            // indexed (the client was told it failed): deliver nothing until restart, when
            // the index is rebuilt from what is durable.
            tokio::time::sleep(IDLE).await;
            return;
        }
        let now = now_ms();
        let (taken, next) = {
            let mut state = lock(&scheduler.state);
            (state.take_due(now, TAKE_LIMIT), state.next_due())
        };
        if taken.is_empty() {
            let wait = next.map_or(IDLE, |due| {
                // `take_due` takes an entry once its due millisecond is over.
                Duration::from_millis(u64::try_from(due + 1 - now).unwrap_or(0))
                    .clamp(Duration::from_millis(1), IDLE)
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = scheduler.wake.notified() => {}
            }
            return;
        }
        let mut deliveries: BTreeMap<(String, i32), Vec<Entry>> = BTreeMap::new();
        for entry in taken {
            if entry.half.is_some() {
                self.step_half(entry, now).await;
            } else {
                deliveries
                    .entry((entry.topic.clone(), entry.partition))
                    .or_default()
                    .push(entry);
            }
        }
        for ((topic, partition), entries) in deliveries {
            for chunk in chunks(entries, DELIVERY_BYTES) {
                self.deliver(&topic, partition, chunk).await;
            }
        }
    }

    /// Appends `entries` to their target partition as one batch of the engine producer,
    /// then tombstones them. A missing target discards them; a failure retries later.
    async fn deliver(self: &Arc<Self>, topic: &str, partition: i32, entries: Vec<Entry>) {
        let scheduler = self.scheduler();
        let ensured = if topic == ABANDONED_TOPIC {
            self.ensure_topic(ABANDONED_TOPIC).await
        } else {
            Ok(())
        };
        let result = match (ensured, self.partition(topic, partition)) {
            (Err(error), _) => Err(error),
            (Ok(()), Err(_)) => {
                tracing::warn!(
                    topic,
                    partition,
                    records = entries.len(),
                    "target of scheduled records is gone; discarding them"
                );
                Ok(false)
            }
            (Ok(()), Ok(p)) => self.append_engine_batch(&p, &entries).await.map(|()| true),
        };
        match result {
            Ok(delivered) => {
                if delivered && topic != ABANDONED_TOPIC {
                    scheduler
                        .counters
                        .delay_fired
                        .increment(entries.len() as u64);
                }
                let pending = {
                    let mut state = lock(&scheduler.state);
                    for e in &entries {
                        state.apply(e.id, None);
                    }
                    let changes: Vec<(u64, Option<&Entry>)> =
                        entries.iter().map(|e| (e.id, None)).collect();
                    scheduler.submit(&changes)
                };
                let synced = match pending {
                    Ok(p) => p.wait().await.map_err(BrokerError::from),
                    Err(e) => Err(e),
                };
                if let Err(error) = synced {
                    // The delivery stands and the next start recognises it, but only if no
                    // later delivery to the partition comes first: stop delivering.
                    tracing::error!(
                        %error,
                        topic,
                        partition,
                        "recording a delivery failed; no delivery until the schedule is reloaded (restart, or a new term as leader)"
                    );
                    scheduler.halted.store(true, Ordering::Release);
                }
            }
            Err(error) => {
                tracing::warn!(%error, topic, partition, "delivering scheduled records failed; retrying");
                let mut state = lock(&scheduler.state);
                for e in &entries {
                    state.retry(e.id, now_ms() + RETRY_MS);
                }
            }
        }
    }

    async fn append_engine_batch(
        &self,
        p: &Partition,
        entries: &[Entry],
    ) -> Result<(), BrokerError> {
        let next_seq = self
            .producers()
            .batches_of(&p.log, ENGINE_PRODUCER_ID)
            .last()
            .map_or(0, |(_, last, _)| {
                crate::producer::state::increment_sequence(*last, 1)
            });
        let base = entries.iter().map(|e| e.timestamp).min().unwrap_or(0);
        let mut builder = BatchBuilder::new(base).producer(ENGINE_PRODUCER_ID, 0, next_seq);
        for e in entries {
            let from = format!("{SCHEDULED_TOPIC}/{}", e.id);
            let mut hs: Vec<(&[u8], Option<&[u8]>)> = e
                .headers
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_deref()))
                .collect();
            hs.push((headers::DELAYED_FROM.as_bytes(), Some(from.as_bytes())));
            builder.push(e.key.as_deref(), e.value.as_deref(), &hs, e.timestamp);
        }
        let count = i32::try_from(entries.len()).unwrap_or(i32::MAX);
        let identity = BatchIdentity::new(ENGINE_PRODUCER_ID, 0, next_seq, count - 1);
        let bytes = Bytes::from(builder.build());
        let appending = self.producers().submit(&p.log, identity, false, || {
            p.log.submit(bytes, Durability::Synced)
        })?;
        appending.wait().await?;
        Ok(())
    }

    /// A half record due for a check-back: announce it, or abandon it after the last check.
    async fn step_half(self: &Arc<Self>, entry: Entry, now: i64) {
        let scheduler = self.scheduler();
        let (interval, max) = self.topic(&entry.topic).map_or((30_000, 15), |t| {
            (t.config.txn_check_interval_ms, t.config.txn_check_max)
        });
        let Some(step) = half_step(&entry, now, interval, max, ABANDONED_TOPIC) else {
            return;
        };
        let (next, check) = match step {
            HalfStep::Check(next) => (next.clone(), Some(next)),
            HalfStep::Abandon(next) => {
                scheduler.counters.half_abandoned.increment(1);
                tracing::info!(topic = %entry.topic, txn_id = ?entry.half.as_ref().map(|h| &h.txn_id), "half message abandoned");
                (next, None)
            }
        };
        let pending = {
            let mut state = lock(&scheduler.state);
            // Answered meanwhile (commit or rollback): nothing to do.
            if state.get(entry.id).map(|e| &e.half) != Some(&entry.half) {
                return;
            }
            state.apply(entry.id, Some(next.clone()));
            scheduler.submit(&[(entry.id, Some(&next))])
        };
        scheduler.wake.notify_one();
        if let Err(error) = async { pending?.wait().await.map_err(BrokerError::from) }.await {
            tracing::warn!(%error, "recording a check-back failed");
        }
        if let Some(checked) = check {
            if let Err(error) = self.announce_check(&checked).await {
                tracing::warn!(%error, topic = %entry.topic, "announcing a check-back failed");
            } else {
                scheduler.counters.half_checked.increment(1);
            }
        }
    }

    /// Appends a check-back record for `entry` to `wharf.txn-check.<group>`.
    async fn announce_check(self: &Arc<Self>, entry: &Entry) -> Result<(), BrokerError> {
        let Some(half) = &entry.half else {
            return Ok(());
        };
        let name = format!("{CHECK_TOPIC_PREFIX}{}", half.group);
        self.ensure_topic(&name).await?;
        let p = self.partition(&name, 0)?;
        let now = now_ms();
        let count = half.checks.to_string();
        let mut builder = BatchBuilder::new(now);
        builder.push(
            Some(half.txn_id.as_bytes()),
            None,
            &[
                (headers::TXN_TOPIC.as_bytes(), Some(entry.topic.as_bytes())),
                (headers::TXN_CHECK_COUNT.as_bytes(), Some(count.as_bytes())),
                (headers::TXN_ID.as_bytes(), Some(half.txn_id.as_bytes())),
            ],
            now,
        );
        p.log
            .submit(builder.build().into(), Durability::Written)?
            .wait()
            .await?;
        Ok(())
    }
}

/// Splits `entries` into runs of about `max_bytes` (at least one entry each).
fn chunks(entries: Vec<Entry>, max_bytes: usize) -> Vec<Vec<Entry>> {
    let mut out: Vec<Vec<Entry>> = Vec::new();
    let mut bytes = 0usize;
    for e in entries {
        let size = 32
            + e.key.as_ref().map_or(0, Vec::len)
            + e.value.as_ref().map_or(0, Vec::len)
            + e.headers
                .iter()
                .map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        match out.last_mut() {
            Some(run) if bytes + size <= max_bytes => run.push(e),
            _ => {
                bytes = 0;
                out.push(vec![e]);
            }
        }
        bytes += size;
    }
    out
}

/// The scheduled ids named by the `wharf-delayed-from` headers of the batch at `offset`.
fn delivered_ids(log: &Log, offset: i64) -> Result<Vec<u64>, BrokerError> {
    let read = log.read(offset, 1 << 20)?;
    let mut ids = Vec::new();
    let mut at = 0usize;
    while let Some(batch) = read
        .records
        .get(at..)
        .and_then(|b| BatchHeader::parse(b).ok())
    {
        at += batch.len().max(1);
        if batch.base_offset() != offset || batch.producer_id() != ENGINE_PRODUCER_ID {
            continue;
        }
        let Ok(records) = RecordIter::new(&batch) else {
            continue;
        };
        for record in records.flatten() {
            let from = headers::find(&record.headers, headers::DELAYED_FROM).flatten();
            let id = from
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.strip_prefix(SCHEDULED_TOPIC))
                .and_then(|v| v.strip_prefix('/'))
                .and_then(|v| v.parse::<u64>().ok());
            ids.extend(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_split_by_bytes() {
        let entry = |id: u64, len: usize| Entry {
            id,
            due_ms: 0,
            topic: "t".into(),
            partition: 0,
            timestamp: 0,
            key: None,
            value: Some(vec![0; len]),
            headers: Vec::new(),
            origin: None,
            half: None,
        };
        let runs = chunks(
            vec![entry(0, 60), entry(1, 60), entry(2, 500), entry(3, 10)],
            200,
        );
        let ids: Vec<Vec<u64>> = runs
            .iter()
            .map(|r| r.iter().map(|e| e.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![0, 1], vec![2], vec![3]]);
    }
}
