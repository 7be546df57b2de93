//! The cursors' driver: it reads the partitions a cursor acquires from, persists every change
//! to `__wharf_cursors` (synced, before the caller hears of it), expires locks and runs the
//! dead-letter step in the background, and replays the log at start.
//!
//! Each cursor has an async lock held for the whole of a call, reads and the synced write
//! included: calls on one cursor are serial and log order is memory order.
//!
//! Dead-lettering is exactly once across crashes: before writing archived records to the
//! dead-letter partition, the cursor persists the partition's high watermark with them; a
//! record still pending after a restart is looked for from there (the step recognises its own
//! records by their headers) and written only if it is not found. A dead-letter batch is one
//! append, so it is there whole or not at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};
use wharf_storage::{Durability, Log};

use super::core::{AckType, BatchKind, Cursor, CursorConfig, StartFrom};
use super::error::CursorError;
use super::records::{decode_key, decode_value, encode_key, encode_value};
use super::{Acquisition, ArchivedRecord, CursorKey, CursorView, DeadLetterStep, StoredRecord};
use crate::group::Clock;
use crate::internal_log::replay_keyed;
use crate::{Acks, Broker, BrokerError, FetchBudget, Partition};

/// The internal topic holding cursor state.
pub const CURSOR_TOPIC: &str = "__wharf_cursors";
/// How often the background loop looks for expired locks without being woken.
const TICK: Duration = Duration::from_millis(100);
/// Archived records written to a dead-letter topic per batch.
const DEAD_LETTER_BATCH: usize = 500;
/// Bytes read at a time when looking for records.
const READ_BYTES: usize = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One cursor and the config it last ran with (the background loop uses it).
#[derive(Default)]
struct Slot {
    state: tokio::sync::Mutex<Option<Cursor>>,
    config: Mutex<Option<CursorConfig>>,
    /// The view as of the last persisted change, readable without waiting.
    view: Mutex<Option<CursorView>>,
}

fn view_of(c: &Cursor) -> CursorView {
    CursorView {
        start: c.start(),
        next: c.next(),
        in_flight: c.in_flight(),
        acquired: c.acquired_count(),
        available: c.available_count(),
        dead_letter_pending: c.dead_pending().count(),
        totals: c.totals(),
    }
}

/// Every cursor of the broker, keyed by (owner, topic, partition).
pub struct Cursors {
    slots: Mutex<HashMap<CursorKey, Arc<Slot>>>,
    log: OnceLock<Log>,
    steps: Mutex<Vec<(String, Arc<dyn DeadLetterStep>)>>,
    clock: Clock,
    wake: Arc<tokio::sync::Notify>,
    stopped: AtomicBool,
}

impl Cursors {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            slots: Mutex::default(),
            log: OnceLock::new(),
            steps: Mutex::default(),
            clock,
            wake: Arc::new(tokio::sync::Notify::new()),
            stopped: AtomicBool::new(false),
        }
    }

    /// Archived records of cursors whose owner starts with `owner_prefix` go through `step`
    /// (the longest matching prefix wins). Without a step, archived records are only counted.
    pub fn register_dead_letter(&self, owner_prefix: &str, step: Arc<dyn DeadLetterStep>) {
        let mut steps = lock(&self.steps);
        steps.retain(|(p, _)| p != owner_prefix);
        steps.push((owner_prefix.to_string(), step));
        steps.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    fn step_for(&self, owner: &str) -> Option<Arc<dyn DeadLetterStep>> {
        lock(&self.steps)
            .iter()
            .find(|(p, _)| owner.starts_with(p.as_str()))
            .map(|(_, s)| s.clone())
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Makes the background loop run a round now.
    pub(crate) fn wake_up(&self) {
        self.wake.notify_one();
    }

    /// Every cursor key, sorted.
    pub fn keys(&self) -> Vec<CursorKey> {
        let mut keys: Vec<CursorKey> = lock(&self.slots).keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The cursors of `owner`, sorted.
    pub fn keys_of(&self, owner: &str) -> Vec<CursorKey> {
        let mut keys: Vec<CursorKey> = lock(&self.slots)
            .keys()
            .filter(|k| k.owner == owner)
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// A copy of the state of `key`, if it exists.
    pub async fn view(&self, key: &CursorKey) -> Option<CursorView> {
        let slot = lock(&self.slots).get(key).cloned()?;
        let state = slot.state.lock().await;
        state.as_ref().map(view_of)
    }

    /// How many offsets of `key` are locked to `consumer` now (an AMQP prefetch or a share
    /// consumer's fair part compares against it).
    pub async fn held(&self, key: &CursorKey, consumer: &str) -> usize {
        let Some(slot) = lock(&self.slots).get(key).cloned() else {
            return 0;
        };
        let state = slot.state.lock().await;
        state.as_ref().map_or(0, |c| c.held_by(consumer))
    }

    /// The available offsets in the window of `key` (not settled, not acquired; those in
    /// their retry backoff too), lowest first.
    pub async fn available_offsets(&self, key: &CursorKey) -> Vec<i64> {
        let Some(slot) = lock(&self.slots).get(key).cloned() else {
            return Vec::new();
        };
        let state = slot.state.lock().await;
        state
            .as_ref()
            .map_or_else(Vec::new, |c| c.available(i64::MAX, usize::MAX))
    }

    /// The state of `key` as of its last persisted change, without waiting for a call in
    /// progress.
    pub fn snapshot(&self, key: &CursorKey) -> Option<CursorView> {
        let slot = lock(&self.slots).get(key).cloned()?;
        let view = *lock(&slot.view);
        view
    }

    fn slot(&self, key: &CursorKey) -> Arc<Slot> {
        lock(&self.slots).entry(key.clone()).or_default().clone()
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn log(&self) -> Result<&Log, BrokerError> {
        self.log
            .get()
            .ok_or_else(|| CursorError::State(format!("{CURSOR_TOPIC} is not loaded")).into())
    }

    /// Writes the state of `key` (a tombstone for `None`) and waits until it is synced.
    pub(super) async fn persist(
        &self,
        key: &CursorKey,
        cursor: Option<&Cursor>,
    ) -> Result<(), BrokerError> {
        let now = self.now();
        let mut builder = BatchBuilder::new(now);
        let value = cursor.map(encode_value);
        builder.push(Some(&encode_key(key)), value.as_deref(), &[], now);
        let pending = self
            .log()?
            .submit(builder.build().into(), Durability::Synced)?;
        if let Some(slot) = lock(&self.slots).get(key) {
            *lock(&slot.view) = cursor.map(view_of);
        }
        pending.wait().await?;
        Ok(())
    }
}

/// Whether a batch of a read_committed read is aborted.
fn aborted(batch: &BatchHeader<'_>, aborted: &[crate::txn::AbortedTxn]) -> bool {
    batch.is_transactional()
        && aborted.iter().any(|a| {
            a.producer_id == batch.producer_id()
                && a.first_offset <= batch.base_offset()
                && batch.base_offset() <= a.last_offset
        })
}

/// Whole batches of `log` holding `offsets` (sorted), within about `max_bytes` (at least one
/// batch); returns them and the offsets they hold.
fn read_offsets(log: &Log, offsets: &[i64], max_bytes: usize) -> (Vec<u8>, Vec<i64>) {
    let mut out = Vec::new();
    let mut covered = Vec::new();
    let mut read_to = -1i64;
    let mut at = 0usize;
    while let Some(&offset) = offsets.get(at) {
        if offset <= read_to {
            covered.push(offset);
            at += 1;
            continue;
        }
        if !out.is_empty() && out.len() >= max_bytes {
            break;
        }
        let Ok(read) = log.read(offset, READ_BYTES) else {
            at += 1;
            continue;
        };
        let mut pos = 0usize;
        let before = read_to;
        while let Some(batch) = read
            .records
            .get(pos..)
            .and_then(|b| BatchHeader::parse(b).ok())
        {
            if batch.is_empty() {
                break;
            }
            pos += batch.len();
            if batch.last_offset() < offset {
                continue;
            }
            let next_wanted = offsets
                .get(at..)
                .unwrap_or_default()
                .iter()
                .any(|o| *o >= batch.base_offset() && *o <= batch.last_offset());
            if !next_wanted {
                break;
            }
            if !out.is_empty() && out.len() + batch.len() > max_bytes {
                break;
            }
            out.extend_from_slice(batch.bytes());
            read_to = batch.last_offset();
            break;
        }
        if read_to == before {
            // The offset is not readable (deleted by retention or past the end): skip it.
            at += 1;
        }
    }
    (out, covered)
}

/// The record at `offset` of `log`, if it is readable (not compressed, not deleted).
fn read_record(log: &Log, offset: i64) -> Option<StoredRecord> {
    let read = log.read(offset, READ_BYTES).ok()?;
    let mut pos = 0usize;
    while let Some(batch) = read
        .records
        .get(pos..)
        .and_then(|b| BatchHeader::parse(b).ok())
    {
        if batch.is_empty() {
            return None;
        }
        pos += batch.len();
        if batch.last_offset() < offset {
            continue;
        }
        for record in RecordIter::new(&batch).ok()? {
            let record = record.ok()?;
            if record.offset == offset {
                return Some(StoredRecord {
                    timestamp: record.timestamp,
                    key: record.key.map(<[u8]>::to_vec),
                    value: record.value.map(<[u8]>::to_vec),
                    headers: record
                        .headers
                        .iter()
                        .map(|(n, v)| (n.to_vec(), v.map(<[u8]>::to_vec)))
                        .collect(),
                });
            }
        }
        return None;
    }
    None
}

/// Which of `wanted` offsets `step` already wrote to `log` from `from` on.
fn already_written(
    log: &Log,
    from: i64,
    step: &dyn DeadLetterStep,
    key: &CursorKey,
    wanted: &[i64],
) -> Vec<i64> {
    let mut found = Vec::new();
    let mut offset = from.max(log.log_start_offset());
    while offset < log.high_watermark() {
        let Ok(read) = log.read(offset, READ_BYTES) else {
            break;
        };
        let mut pos = 0usize;
        let start = offset;
        while let Some(batch) = read
            .records
            .get(pos..)
            .and_then(|b| BatchHeader::parse(b).ok())
        {
            if batch.is_empty() {
                break;
            }
            pos += batch.len();
            offset = offset.max(batch.last_offset() + 1);
            let Ok(records) = RecordIter::new(&batch) else {
                continue;
            };
            for record in records.flatten() {
                let headers: Vec<(&[u8], Option<&[u8]>)> = record.headers.clone();
                for w in wanted {
                    if !found.contains(w) && step.written_for(&headers, key, *w) {
                        found.push(*w);
                    }
                }
            }
        }
        if offset == start {
            break;
        }
    }
    found
}

impl Broker {
    pub fn cursors(&self) -> &Cursors {
        &self.cursors
    }

    /// The log of `__wharf_cursors`, created on first use (a broker that never uses a
    /// cursor keeps no such topic). Creation writes the topic registry: off the async workers.
    pub(crate) async fn ensure_cursor_log(self: &Arc<Self>) -> Result<(), BrokerError> {
        if self.cursors().log.get().is_some() {
            return Ok(());
        }
        let broker = self.clone();
        let log = tokio::task::spawn_blocking(move || broker.internal_log(CURSOR_TOPIC))
            .await
            .map_err(|e| CursorError::State(format!("creating {CURSOR_TOPIC}: {e}")))??;
        // Another call may have set it meanwhile: the same log.
        let _ = self.cursors().log.set(log);
        Ok(())
    }

    /// Replays `__wharf_cursors` if it exists and starts the background loop (lock expiry,
    /// dead-letter step).
    pub(crate) fn open_cursors(self: &Arc<Self>) -> Result<(), BrokerError> {
        if self.topic(CURSOR_TOPIC).is_some() {
            self.replay_cursors()?;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(self);
            runtime.spawn(async move {
                loop {
                    let Some(broker) = weak.upgrade() else { break };
                    if broker.cursors().stopped.load(Ordering::Acquire) {
                        break;
                    }
                    broker.cursor_round().await;
                    let wake = broker.cursors().wake.clone();
                    drop(broker);
                    let _ = tokio::time::timeout(TICK, wake.notified()).await;
                }
            });
        }
        Ok(())
    }

    fn replay_cursors(&self) -> Result<(), BrokerError> {
        let topic = self.internal_topic(CURSOR_TOPIC, 1, true)?;
        let log = topic
            .partitions
            .first()
            .map(|p| p.log.clone())
            .ok_or_else(|| BrokerError::Metadata(format!("{CURSOR_TOPIC} has no partition")))?;
        let records = self.load_cursors(&log)?;
        let cursors = self.cursors();
        if cursors.log.set(log).is_err() {
            return Err(BrokerError::Metadata(format!(
                "{CURSOR_TOPIC} loaded twice"
            )));
        }
        tracing::info!(
            records,
            cursors = lock(&cursors.slots).len(),
            "cursors loaded from {CURSOR_TOPIC}"
        );
        Ok(())
    }

    /// Replaces every cursor with the state `log` holds (acquired offsets come back
    /// available: locks do not survive a reload, delivery counts do); returns how many
    /// records it replayed.
    fn load_cursors(&self, log: &Log) -> Result<usize, BrokerError> {
        let mut loaded: BTreeMap<CursorKey, Option<Cursor>> = BTreeMap::new();
        let records = replay_keyed(log, |key, value| {
            let key = decode_key(key).map_err(|e| e.to_string())?;
            let cursor = value
                .map(decode_value)
                .transpose()
                .map_err(|e| format!("{key}: {e}"))?;
            loaded.insert(key, cursor);
            Ok(())
        })
        .map_err(|reason| BrokerError::Metadata(format!("{CURSOR_TOPIC}: {reason}")))?;
        let mut slots = HashMap::new();
        for (key, cursor) in loaded {
            if let Some(cursor) = cursor {
                let slot = Slot {
                    view: Mutex::new(Some(view_of(&cursor))),
                    state: tokio::sync::Mutex::new(Some(cursor)),
                    config: Mutex::new(None),
                };
                slots.insert(key, Arc::new(slot));
            }
        }
        *lock(&self.cursors().slots) = slots;
        Ok(records)
    }

    /// This node now leads the shard of `__wharf_cursors`: every cursor becomes what the
    /// log holds (what earlier leaders persisted). Blocking (reads the log).
    pub(crate) fn reload_cursors(&self) -> Result<(), BrokerError> {
        let Some(log) = self
            .topic(CURSOR_TOPIC)
            .and_then(|t| t.partitions.first().map(|p| p.log.clone()))
        else {
            return Ok(());
        };
        let records = self.load_cursors(&log)?;
        let cursors = self.cursors();
        // Created by another node after this one opened: the same log from now on.
        let _ = cursors.log.set(log);
        cursors.wake.notify_one();
        tracing::info!(
            records,
            cursors = lock(&cursors.slots).len(),
            "cursors reloaded from {CURSOR_TOPIC} for a new leader"
        );
        Ok(())
    }

    /// `NotLeader` unless this node serves `__wharf_cursors` (in a cluster: leads its shard
    /// and reloaded it for the term): a cursor's state is read and written only there.
    fn check_cursor_owner(&self) -> Result<(), BrokerError> {
        match self.cursors().log.get() {
            Some(log) if !self.shard_served(log.shard_id()) => Err(self.not_leader(log.shard_id())),
            _ => Ok(()),
        }
    }

    /// One round of the background loop: expires locks and runs the dead-letter step of
    /// every cursor that ran with a config since start.
    async fn cursor_round(self: &Arc<Self>) {
        if self.check_cursor_owner().is_err() {
            // Another node owns the cursors: no lock expiry, no dead-lettering here.
            return;
        }
        for key in self.cursors().keys() {
            let slot = self.cursors().slot(&key);
            let config = lock(&slot.config).clone();
            let mut state = slot.state.lock().await;
            let Some(cursor) = state.as_mut() else {
                continue;
            };
            if let Some(config) = &config {
                let before = cursor.totals();
                cursor.expire(self.cursors().now(), config);
                if cursor.totals() != before {
                    if let Err(error) = self.cursors().persist(&key, Some(cursor)).await {
                        tracing::warn!(%key, %error, "persisting expired locks failed");
                    }
                }
            }
            if cursor.dead_pending().next().is_some() {
                if config.is_none() && self.cursors().step_for(&key.owner).is_none() {
                    // After a restart, before the owner's front end registered its step or
                    // used the cursor: wait for it.
                    continue;
                }
                if let Err(error) = self.dead_letter(&key, cursor).await {
                    tracing::warn!(%key, %error, "dead-letter step failed; retrying");
                }
            }
        }
    }

    /// Runs the dead-letter step for the archived records `cursor` holds (see the module
    /// doc for why it is exactly once).
    async fn dead_letter(
        self: &Arc<Self>,
        key: &CursorKey,
        cursor: &mut Cursor,
    ) -> Result<(), BrokerError> {
        let cursors = self.cursors();
        let step = cursors.step_for(&key.owner);
        let pending: Vec<(i64, super::core::DeadPending)> = cursor
            .dead_pending()
            .take(DEAD_LETTER_BATCH)
            .map(|(o, d)| (o, *d))
            .collect();
        let offsets: Vec<i64> = pending.iter().map(|(o, _)| *o).collect();
        let Some((step, topic)) = step.and_then(|s| s.topic(key).map(|t| (s, t))) else {
            cursor.end_dead_letter(&offsets, false);
            return cursors.persist(key, Some(cursor)).await;
        };
        // KIP-1191's gate: a topic configured with `errors.deadletterqueue.group.enable=false`
        // takes no dead letters; the records stay archived only.
        if self
            .topic(&topic)
            .is_some_and(|t| !t.config.dlq_group_enable)
        {
            tracing::warn!(%key, topic, records = offsets.len(), "dead-letter topic has errors.deadletterqueue.group.enable=false: records archived without a dead-letter copy");
            cursor.end_dead_letter(&offsets, false);
            return cursors.persist(key, Some(cursor)).await;
        }
        if self.topic(&topic).is_none() {
            self.ensure_topic(&topic).await?;
            tracing::info!(topic, "dead-letter topic created");
        }
        let target = self
            .topic(&topic)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: topic.clone(),
                partition: 0,
            })?;
        let count = i32::try_from(target.partitions.len()).unwrap_or(1).max(1);
        let index = key.partition.rem_euclid(count);
        let dlq = self.partition(&topic, index)?;
        let begun: Vec<i64> = pending
            .iter()
            .filter(|(_, d)| d.begun_at >= 0)
            .map(|(o, _)| *o)
            .collect();
        if let Some(from) = pending
            .iter()
            .filter(|(_, d)| d.begun_at >= 0)
            .map(|(_, d)| d.begun_at)
            .min()
        {
            let (log, step2, key2) = (dlq.log.clone(), step.clone(), key.clone());
            let found = tokio::task::spawn_blocking(move || {
                already_written(&log, from, &*step2, &key2, &begun)
            })
            .await
            .map_err(|e| CursorError::State(format!("dead-letter scan: {e}")))?;
            if !found.is_empty() {
                tracing::info!(%key, records = found.len(), "dead-letter records found written before a restart");
                cursor.end_dead_letter(&found, true);
                cursors.persist(key, Some(cursor)).await?;
            }
        }
        let rest: Vec<(i64, super::core::DeadPending)> = pending
            .into_iter()
            .filter(|(o, _)| cursor.dead_pending().any(|(p, _)| p == *o))
            .collect();
        if rest.is_empty() {
            return Ok(());
        }
        let rest_offsets: Vec<i64> = rest.iter().map(|(o, _)| *o).collect();
        cursor.begin_dead_letter(&rest_offsets, dlq.log.high_watermark());
        cursors.persist(key, Some(cursor)).await?;
        let source = self.partition(&key.topic, key.partition).ok();
        let (key2, rest2) = (key.clone(), rest.clone());
        let archived: Vec<ArchivedRecord> = tokio::task::spawn_blocking(move || {
            rest2
                .iter()
                .map(|(offset, d)| ArchivedRecord {
                    cursor: key2.clone(),
                    offset: *offset,
                    delivery_count: d.delivery_count,
                    reason: d.reason,
                    record: source.as_ref().and_then(|p| read_record(&p.log, *offset)),
                })
                .collect()
        })
        .await
        .map_err(|e| CursorError::State(format!("reading archived records: {e}")))?;
        let now = cursors.now();
        let mut builder = BatchBuilder::new(now);
        for a in &archived {
            let dead = step.record(a);
            let headers: Vec<(&[u8], Option<&[u8]>)> = dead
                .headers
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_deref()))
                .collect();
            builder.push(dead.key.as_deref(), dead.value.as_deref(), &headers, now);
        }
        self.produce(&topic, index, Bytes::from(builder.build()), Acks::All)
            .await?;
        cursor.end_dead_letter(&rest_offsets, true);
        cursors.persist(key, Some(cursor)).await
    }

    /// Locks up to `max_records` records (whole batches of new records may exceed it) and
    /// about `max_bytes` of them to `consumer` for `config.lock_ms`: first records available
    /// again (released or expired, past their backoff), then new ones within the in-flight
    /// cap. A cursor without state starts where `config.start` says. Returns at once, maybe
    /// with nothing; the change is synced before it returns.
    pub async fn cursor_acquire(
        self: &Arc<Self>,
        key: &CursorKey,
        config: &CursorConfig,
        consumer: &str,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Acquisition, BrokerError> {
        let partition = self.partition(&key.topic, key.partition)?;
        self.check_leader(&partition)?;
        self.ensure_cursor_log().await?;
        self.check_cursor_owner()?;
        let cursors = self.cursors();
        let slot = cursors.slot(key);
        *lock(&slot.config) = Some(config.clone());
        let mut state = slot.state.lock().await;
        let created = state.is_none();
        let cursor = state.get_or_insert_with(|| {
            Cursor::new(match config.start {
                StartFrom::Earliest => partition.log.log_start_offset(),
                StartFrom::Latest => partition.log.high_watermark(),
            })
        });
        let (before_totals, before_next) = (cursor.totals(), cursor.next());
        let now = cursors.now();
        cursor.follow_log_start(partition.log.log_start_offset());
        let archived = !cursor.expire(now, config).is_empty();
        let available = cursor.available(now, max_records);
        let room = cursor.room(config);
        let next = cursor.next();
        let broker = self.clone();
        let part = partition.clone();
        let read_committed = config.read_committed;
        let read = tokio::task::spawn_blocking(move || {
            broker.read_for_cursor(
                &part,
                &available,
                next,
                room,
                max_records,
                max_bytes,
                read_committed,
            )
        })
        .await
        .map_err(|e| CursorError::State(format!("cursor read: {e}")))?;
        let mut ranges = cursor.acquire_available(&read.redelivered, consumer, now, config);
        for (first, last, kind) in &read.new_batches {
            ranges.extend(cursor.acquire_new(*first, *last, *kind, consumer, now, config));
        }
        let changed =
            created || archived || cursor.totals() != before_totals || cursor.next() != before_next;
        if changed {
            cursors.persist(key, Some(cursor)).await?;
        }
        if archived {
            cursors.wake.notify_one();
        }
        Ok(Acquisition {
            records: Bytes::from(read.records),
            ranges,
            high_watermark: partition.log.high_watermark(),
            log_start: partition.log.log_start_offset(),
        })
    }

    /// [`Broker::cursor_acquire`] that waits up to `max_wait` for something to acquire:
    /// woken by new records, it also looks again now and then for released records.
    pub async fn cursor_acquire_wait(
        self: &Arc<Self>,
        key: &CursorKey,
        config: &CursorConfig,
        consumer: &str,
        max_records: usize,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Acquisition, BrokerError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let partition = self.partition(&key.topic, key.partition)?;
        loop {
            let notify = Arc::new(tokio::sync::Notify::new());
            partition.log.register_waiter(&notify);
            let got = self
                .cursor_acquire(key, config, consumer, max_records, max_bytes)
                .await?;
            let now = tokio::time::Instant::now();
            if !got.ranges.is_empty() || now >= deadline {
                return Ok(got);
            }
            let wait = (deadline - now).min(TICK);
            let _ = tokio::time::timeout(wait, notify.notified()).await;
        }
    }

    /// Reads for an acquisition: batches holding `available` offsets, then new batches
    /// from `next`: at most `room` and `max_records` offsets in all.
    #[allow(clippy::too_many_arguments)]
    fn read_for_cursor(
        &self,
        partition: &Partition,
        available: &[i64],
        next: i64,
        room: usize,
        max_records: usize,
        max_bytes: usize,
        read_committed: bool,
    ) -> CursorRead {
        let (mut records, redelivered) = read_offsets(&partition.log, available, max_bytes);
        let mut new_batches = Vec::new();
        let wanted = max_records.saturating_sub(redelivered.len()).min(room);
        if wanted > 0 && records.len() < max_bytes {
            let mut budget = FetchBudget::new(max_bytes - records.len());
            if let Ok(read) = self.fetch_partition(
                partition,
                next,
                max_bytes - records.len(),
                &mut budget,
                read_committed,
            ) {
                // Offsets are acquired one by one, so a batch bigger than what is wanted is
                // acquired in part (its bytes are sent whole; the consumer keeps the
                // acquired offsets): one big batch cannot go to a single consumer.
                let mut taken = 0usize;
                let mut pos = 0usize;
                while let Some(batch) = read
                    .records
                    .get(pos..)
                    .and_then(|b| BatchHeader::parse(b).ok())
                {
                    if batch.is_empty() || taken >= wanted {
                        break;
                    }
                    pos += batch.len();
                    let from = batch.base_offset().max(next);
                    if batch.last_offset() < from {
                        continue;
                    }
                    if batch.is_control() || (read_committed && aborted(&batch, &read.aborted)) {
                        new_batches.push((from, batch.last_offset(), BatchKind::Skip));
                        continue;
                    }
                    let left = i64::try_from(wanted - taken).unwrap_or(i64::MAX);
                    let last = batch.last_offset().min(from.saturating_add(left - 1));
                    taken += usize::try_from(last - from + 1).unwrap_or(0);
                    records.extend_from_slice(batch.bytes());
                    new_batches.push((from, last, BatchKind::Data));
                    if last < batch.last_offset() {
                        break;
                    }
                }
            }
        }
        CursorRead {
            records,
            redelivered,
            new_batches,
        }
    }

    /// Settles offset ranges for `consumer`; each range succeeds or fails alone (Kafka's
    /// per-partition INVALID_RECORD_STATE). The changes are synced before it returns.
    pub async fn cursor_ack(
        self: &Arc<Self>,
        key: &CursorKey,
        config: &CursorConfig,
        consumer: &str,
        acks: &[(i64, i64, AckType)],
    ) -> Result<Vec<Result<(), CursorError>>, BrokerError> {
        self.ensure_cursor_log().await?;
        self.check_cursor_owner()?;
        let cursors = self.cursors();
        let slot = cursors.slot(key);
        *lock(&slot.config) = Some(config.clone());
        let mut state = slot.state.lock().await;
        let Some(cursor) = state.as_mut() else {
            return Ok(acks
                .iter()
                .map(|(first, last, _)| {
                    Err(CursorError::InvalidRecordState {
                        first: *first,
                        last: *last,
                        reason: "no cursor",
                    })
                })
                .collect());
        };
        let now = cursors.now();
        let mut archived = false;
        let results: Vec<Result<(), CursorError>> = acks
            .iter()
            .map(|(first, last, kind)| {
                cursor
                    .ack(consumer, *first, *last, *kind, now, config)
                    .map(|a| archived |= !a.is_empty())
            })
            .collect();
        if results.iter().any(Result::is_ok) {
            cursors.persist(key, Some(cursor)).await?;
        }
        if archived {
            cursors.wake.notify_one();
        }
        Ok(results)
    }

    /// Gives back every lock `consumer` holds on `key` (it left): as if they expired now.
    pub async fn cursor_release_consumer(
        self: &Arc<Self>,
        key: &CursorKey,
        config: &CursorConfig,
        consumer: &str,
    ) -> Result<(), BrokerError> {
        self.ensure_cursor_log().await?;
        self.check_cursor_owner()?;
        let cursors = self.cursors();
        let slot = cursors.slot(key);
        let mut state = slot.state.lock().await;
        let Some(cursor) = state.as_mut() else {
            return Ok(());
        };
        let before = cursor.totals();
        let archived = !cursor
            .release_consumer(consumer, cursors.now(), config)
            .is_empty();
        if cursor.totals() != before || archived || cursor.acquired_count() == 0 {
            cursors.persist(key, Some(cursor)).await?;
        }
        if archived {
            cursors.wake.notify_one();
        }
        Ok(())
    }

    /// Moves the cursor `key` to `offset` (creating it), forgetting what is in flight.
    pub async fn cursor_reset(
        self: &Arc<Self>,
        key: &CursorKey,
        offset: i64,
    ) -> Result<(), BrokerError> {
        self.ensure_cursor_log().await?;
        self.check_cursor_owner()?;
        let cursors = self.cursors();
        let slot = cursors.slot(key);
        let mut state = slot.state.lock().await;
        let cursor = state.get_or_insert_with(|| Cursor::new(offset));
        cursor.reset(offset);
        cursors.persist(key, Some(cursor)).await
    }

    /// Settles the records of `key` not acquired, up to `end` (creating the cursor at
    /// `start` when missing), keeping acquired ones; returns how many it settled
    /// (queue.purge).
    pub async fn cursor_purge_available(
        self: &Arc<Self>,
        key: &CursorKey,
        start: i64,
        end: i64,
    ) -> Result<u64, BrokerError> {
        self.ensure_cursor_log().await?;
        self.check_cursor_owner()?;
        let cursors = self.cursors();
        let slot = cursors.slot(key);
        let mut state = slot.state.lock().await;
        let cursor = state.get_or_insert_with(|| Cursor::new(start.min(end)));
        cursor.follow_log_start(start);
        let purged = cursor.purge_available(end);
        cursors.persist(key, Some(cursor)).await?;
        Ok(purged)
    }

    /// Deletes the cursor `key` (a tombstone); archived records still waiting for the
    /// dead-letter step are dropped with it.
    pub async fn cursor_delete(self: &Arc<Self>, key: &CursorKey) -> Result<(), BrokerError> {
        self.ensure_cursor_log().await?;
        self.check_cursor_owner()?;
        let cursors = self.cursors();
        let slot = cursors.slot(key);
        let mut state = slot.state.lock().await;
        if state.take().is_some() {
            cursors.persist(key, None).await?;
        }
        lock(&cursors.slots).remove(key);
        Ok(())
    }
}

/// What an acquisition read.
struct CursorRead {
    records: Vec<u8>,
    /// Available offsets whose batches were read.
    redelivered: Vec<i64>,
    /// New batches from the cursor's next offset: first, last offset and kind.
    new_batches: Vec<(i64, i64, BatchKind)>,
}
