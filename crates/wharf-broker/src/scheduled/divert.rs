//! The produce side of the engine: records of a typed topic (or a topic with a dedup
//! window) are classified by their `wharf-*` headers; a produce whose records all go to the
//! partition now is appended as sent, any other is stored whole in `__wharf_scheduled`
//! under the schedule lock (log order is memory order), after the target partition's
//! producer state accepted its batch.

use bytes::Bytes;
use wharf_record::{BatchHeader, RecordIter};
use wharf_storage::PendingAppend;

use super::core::{Entry, Half};
use super::dedup::DedupPending;
use super::driver::lock;
use super::headers::{self, TxnAction};
use crate::producer::{now_ms, Appending, BatchIdentity};
use crate::topic::Topic;
use crate::{Broker, BrokerError, MessageType, Partition};

/// What one produced record asks for.
enum Plan {
    /// Appended now (in a diverted batch: delivered at once by the engine).
    Now,
    Delay(i64),
    Prepare {
        txn_id: String,
        group: String,
    },
    Resolve {
        txn_id: String,
        commit: bool,
    },
    /// Its `wharf-msg-id` was stored within the dedup window (at this offset, -1 when
    /// unknown): not stored again.
    Skip(i64),
}

/// One produced record, owned.
struct Owned {
    plan: Plan,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn invalid(topic: &str, partition: i32, reason: String) -> BrokerError {
    BrokerError::InvalidRecord {
        topic: topic.to_string(),
        partition,
        reason,
    }
}

/// Reads and classifies every record of a produce to a typed topic.
fn classify(
    topic: &Topic,
    partition: i32,
    records: &Bytes,
    ranges: &[std::ops::Range<usize>],
    now: i64,
    max_delay_ms: i64,
) -> Result<Vec<Owned>, BrokerError> {
    let mut out = Vec::new();
    for range in ranges {
        let bytes = records.get(range.clone()).unwrap_or_default();
        let batch = BatchHeader::parse(bytes)
            .map_err(|e| invalid(&topic.name, partition, e.to_string()))?;
        if batch.compression() != 0 {
            return Err(invalid(
                &topic.name,
                partition,
                "compressed batches are refused where the broker reads record headers \
                 (delay and transaction topics, dedup windows); send them uncompressed"
                    .to_string(),
            ));
        }
        let iter =
            RecordIter::new(&batch).map_err(|e| invalid(&topic.name, partition, e.to_string()))?;
        for record in iter {
            let record = record.map_err(|e| invalid(&topic.name, partition, e.to_string()))?;
            let plan = match topic.config.message_type {
                MessageType::Delay => {
                    match headers::delay_due(&record.headers, now, max_delay_ms) {
                        Ok(Some(due)) => Plan::Delay(due),
                        Ok(None) => Plan::Now,
                        Err(reason) => return Err(invalid(&topic.name, partition, reason)),
                    }
                }
                MessageType::Transaction => match headers::txn_action(&record.headers) {
                    Ok(TxnAction::None) => Plan::Now,
                    Ok(TxnAction::Prepare { txn_id, group }) => Plan::Prepare { txn_id, group },
                    Ok(TxnAction::Commit { txn_id }) => Plan::Resolve {
                        txn_id,
                        commit: true,
                    },
                    Ok(TxnAction::Rollback { txn_id }) => Plan::Resolve {
                        txn_id,
                        commit: false,
                    },
                    Err(reason) => return Err(invalid(&topic.name, partition, reason)),
                },
                MessageType::Normal => Plan::Now,
            };
            out.push(Owned {
                plan,
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
    Ok(out)
}

/// What a diverted produce adds to the engine's counters once it is submitted.
#[derive(Default)]
struct Counted {
    delayed: u64,
    prepared: u64,
    committed: u64,
    rolled_back: u64,
}

impl Counted {
    fn record(&self, counters: &super::driver::Counters) {
        counters.delay_scheduled.increment(self.delayed);
        counters.half_prepared.increment(self.prepared);
        counters.half_committed.increment(self.committed);
        counters.half_rolled_back.increment(self.rolled_back);
    }
}

/// A produce diverted into `__wharf_scheduled`: what the produce path waits for.
pub(crate) enum Diverted {
    Storage(PendingAppend),
    Producer(Appending),
}

/// Where a produce to a typed topic or a topic with a dedup window goes.
pub(crate) enum Routed {
    /// Appended as sent; the new message ids get their offsets when it completes.
    Append(Option<DedupPending>),
    /// Every record was stored before within the window: answer with the first's offset.
    Duplicate(i64),
    Diverted(Diverted, Option<DedupPending>),
}

impl Broker {
    /// Routes a produce to a `delay` or `transaction` topic or a topic with a dedup
    /// window. When every record is appended now, the produce is appended as sent. A
    /// produce with any record that waits, resolves a half record or is a duplicate among
    /// others is stored whole in `__wharf_scheduled` (its immediate records are delivered at
    /// once, its duplicates dropped); an idempotent batch is checked against the target
    /// partition's producer state first, so its sequence advances as for an ordinary append.
    pub(crate) fn divert(
        &self,
        topic: &Topic,
        partition: &Partition,
        records: &Bytes,
        ranges: &[std::ops::Range<usize>],
        identity: Option<(BatchIdentity, bool)>,
    ) -> Result<Routed, BrokerError> {
        let now = now_ms();
        let mut owned = classify(
            topic,
            partition.index,
            records,
            ranges,
            now,
            self.config().max_delay_ms,
        )?;
        let pending_ids = self.mark_duplicates(topic, &mut owned, now);
        if owned.iter().all(|r| matches!(r.plan, Plan::Now)) {
            return Ok(Routed::Append(pending_ids));
        }
        if identity.is_none() {
            if let Some(Plan::Skip(first)) = owned.first().map(|r| &r.plan) {
                if owned.iter().all(|r| matches!(r.plan, Plan::Skip(_))) {
                    return Ok(Routed::Duplicate(*first));
                }
            }
        }
        let pending_ids = pending_ids.map(|p| DedupPending {
            diverted: true,
            ..p
        });
        match self.divert_all(topic, partition, &owned, identity, now) {
            Ok(diverted) => Ok(Routed::Diverted(diverted, pending_ids)),
            Err(e) => {
                if let Some(p) = pending_ids {
                    p.finish(None);
                }
                Err(e)
            }
        }
    }

    /// With a dedup window, marks records whose `wharf-msg-id` was stored within it as
    /// [`Plan::Skip`] and records the others' ids as stored now.
    fn mark_duplicates(
        &self,
        topic: &Topic,
        owned: &mut [Owned],
        now: i64,
    ) -> Option<DedupPending> {
        let window = topic.config.dedup_window_ms;
        if window <= 0 {
            return None;
        }
        let dedup = &self.scheduler().dedup;
        let mut topics = dedup.lock();
        let map = topics.entry(topic.id).or_default();
        let mut ids = Vec::new();
        for (index, r) in owned.iter_mut().enumerate() {
            let refs: Vec<(&[u8], Option<&[u8]>)> = r
                .headers
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_deref()))
                .collect();
            let Some(id) = headers::msg_id(&refs) else {
                continue;
            };
            if let Some(offset) = map.seen(id, now, window) {
                dedup.duplicates.increment(1);
                r.plan = Plan::Skip(offset);
            } else {
                map.insert(id, -1, now);
                ids.push((id.to_vec(), i64::try_from(index).unwrap_or(i64::MAX)));
            }
        }
        Some(DedupPending {
            dedup: dedup.clone(),
            topic_id: topic.id,
            ids,
            diverted: false,
        })
    }

    /// Stores every record of a produce in `__wharf_scheduled`.
    fn divert_all(
        &self,
        topic: &Topic,
        partition: &Partition,
        owned: &[Owned],
        identity: Option<(BatchIdentity, bool)>,
        now: i64,
    ) -> Result<Diverted, BrokerError> {
        if identity.is_some_and(|(_, transactional)| transactional) {
            return Err(invalid(
                &topic.name,
                partition.index,
                "transactional batches cannot carry delayed, half or duplicate records".into(),
            ));
        }
        // Stored only by the node that serves `__wharf_scheduled` (in a cluster, the leader
        // of its shard): anywhere else the record would be in no log that delivers it.
        self.check_scheduled_owner()?;
        let origin = identity.map(|(batch, _)| batch);
        let scheduler = self.scheduler();
        let check_after = topic.config.txn_check_after_ms;
        let write = || -> Result<PendingAppend, BrokerError> {
            let mut state = lock(&scheduler.state);
            let mut changes: Vec<(u64, Option<Entry>)> = Vec::with_capacity(owned.len());
            // What each changed id was before, to put back if the log refuses the batch.
            let mut undo: Vec<(u64, Option<Entry>)> = Vec::new();
            let mut counted = Counted::default();
            for r in owned {
                let mut entry = Entry {
                    id: 0,
                    due_ms: now,
                    topic: topic.name.clone(),
                    partition: partition.index,
                    timestamp: r.timestamp,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                    origin,
                    half: None,
                };
                match &r.plan {
                    Plan::Now => {}
                    Plan::Delay(due) => {
                        entry.due_ms = *due;
                        counted.delayed += 1;
                    }
                    Plan::Prepare { txn_id, group } => {
                        entry.due_ms = now.saturating_add(check_after);
                        entry.half = Some(Half {
                            txn_id: txn_id.clone(),
                            group: group.clone(),
                            checks: 0,
                        });
                        counted.prepared += 1;
                    }
                    Plan::Skip(_) => {
                        changes.push((state.allocate_id(), None));
                        continue;
                    }
                    Plan::Resolve { txn_id, commit } => {
                        let before = state.half(&topic.name, txn_id).cloned();
                        match state.resolve(&topic.name, txn_id, *commit, now) {
                            Some(change) => {
                                undo.push((change.0, before));
                                if *commit {
                                    counted.committed += 1;
                                } else {
                                    counted.rolled_back += 1;
                                }
                                changes.push(change);
                            }
                            // Answered before, or unknown: nothing waits. A tombstone of a
                            // fresh id keeps one log record per produced record.
                            None => changes.push((state.allocate_id(), None)),
                        }
                        continue;
                    }
                }
                let id = state.allocate_id();
                state.apply(id, Some(entry.clone()));
                undo.push((id, None));
                entry.id = id;
                changes.push((id, Some(entry)));
            }
            let refs: Vec<(u64, Option<&Entry>)> =
                changes.iter().map(|(id, e)| (*id, e.as_ref())).collect();
            match scheduler.submit(&refs) {
                Ok(pending) => {
                    drop(state);
                    counted.record(&scheduler.counters);
                    scheduler.wake.notify_one();
                    Ok(pending)
                }
                Err(e) => {
                    for (id, before) in undo.into_iter().rev() {
                        state.apply(id, before);
                    }
                    Err(e)
                }
            }
        };
        let diverted = match origin {
            None => Diverted::Storage(write()?),
            Some(batch) => {
                let mut failed = None;
                let appending = self.producers().submit(&partition.log, batch, false, || {
                    write().map_err(|e| {
                        failed = Some(e);
                        // Replaced by the error kept in `failed` below.
                        wharf_storage::StorageError::ShutDown
                    })
                });
                match (appending, failed) {
                    (_, Some(e)) => return Err(e),
                    (appending, None) => Diverted::Producer(appending?),
                }
            }
        };
        Ok(diverted)
    }
}
