//! The pure schedule of waiting records: delayed records by due time, half (prepared)
//! records by transaction id and next check time. It does no I/O and reads no clock; the
//! driver passes `now` and persists every change it returns or applies, in the same order.
//! Invariant: every entry not being delivered is in the due index exactly once, and every
//! half entry is in the transaction index under its (topic, txn id).

use std::collections::{BTreeSet, HashMap};

use crate::producer::BatchIdentity;

/// A half (prepared) record's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Half {
    pub txn_id: String,
    /// The producer group answering check-backs.
    pub group: String,
    /// Check-backs announced so far.
    pub checks: i32,
}

/// One waiting record: what to append, where, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    /// Delayed: when it is delivered. Half: when it is next checked back.
    pub due_ms: i64,
    pub topic: String,
    pub partition: i32,
    /// The record's own timestamp (CreateTime), kept on delivery.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The idempotent client batch that carried the record; its sequence stays known to the
    /// target partition's producer state across restarts.
    pub origin: Option<BatchIdentity>,
    /// `Some` while the record is a half message waiting for commit or rollback.
    pub half: Option<Half>,
}

/// What a half record due for a check-back becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HalfStep {
    /// Announce check number `entry.half.checks` and wait for the next.
    Check(Entry),
    /// Unanswered after the last check: deliver it to the abandoned topic instead.
    Abandon(Entry),
}

/// Every waiting record.
#[derive(Debug, Default)]
pub struct Schedule {
    entries: HashMap<u64, Entry>,
    due: BTreeSet<(i64, u64)>,
    halves: HashMap<(String, String), u64>,
    next_id: u64,
}

impl Schedule {
    /// A new id, never used by a replayed or live entry.
    pub fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Applies a record of the log (replay) or a change (live): the entry `id` is now
    /// `entry`, or gone for `None`. Applying the same records again gives the same state.
    pub fn apply(&mut self, id: u64, entry: Option<Entry>) {
        self.next_id = self.next_id.max(id.saturating_add(1));
        if let Some(old) = self.entries.remove(&id) {
            self.due.remove(&(old.due_ms, id));
            if let Some(half) = &old.half {
                let key = (old.topic.clone(), half.txn_id.clone());
                if self.halves.get(&key) == Some(&id) {
                    self.halves.remove(&key);
                }
            }
        }
        if let Some(mut entry) = entry {
            entry.id = id;
            self.due.insert((entry.due_ms, id));
            if let Some(half) = &entry.half {
                self.halves
                    .insert((entry.topic.clone(), half.txn_id.clone()), id);
            }
            self.entries.insert(id, entry);
        }
    }

    /// Takes up to `limit` entries due before `now`, earliest first, out of the due index.
    /// Strictly before: due times are whole milliseconds counted from a receipt time that
    /// was cut to the millisecond, so an entry is taken only once its millisecond is over
    /// and is never delivered early. A taken entry stays known (`len`, `waiting`) until the
    /// driver applies its outcome; a taken delayed entry whose delivery failed goes back
    /// with `retry`.
    pub fn take_due(&mut self, now_ms: i64, limit: usize) -> Vec<Entry> {
        let mut taken = Vec::new();
        while taken.len() < limit {
            let Some(&(due, id)) = self.due.first() else {
                break;
            };
            if due >= now_ms {
                break;
            }
            self.due.remove(&(due, id));
            if let Some(e) = self.entries.get(&id) {
                taken.push(e.clone());
            }
        }
        taken
    }

    /// Puts a taken entry back, due at `due_ms`.
    pub fn retry(&mut self, id: u64, due_ms: i64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.due_ms = due_ms;
            self.due.insert((due_ms, id));
        }
    }

    /// The earliest due time, if any entry waits.
    pub fn next_due(&self) -> Option<i64> {
        self.due.first().map(|&(due, _)| due)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// Entries waiting for `topic` and the earliest due time among them.
    pub fn waiting(&self, topic: &str) -> (usize, Option<i64>) {
        self.entries
            .values()
            .filter(|e| e.topic == topic)
            .fold((0, None), |(n, first), e| {
                let due = first.map_or(e.due_ms, |f: i64| f.min(e.due_ms));
                (n + 1, Some(due))
            })
    }

    /// Every waiting entry, in no order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Every (topic, partition) a waiting record goes to, sorted.
    pub fn targets(&self) -> Vec<(String, i32)> {
        let set: BTreeSet<(String, i32)> = self
            .entries
            .values()
            .map(|e| (e.topic.clone(), e.partition))
            .collect();
        set.into_iter().collect()
    }

    /// The half record of `txn_id` on `topic`, if it waits.
    pub fn half(&self, topic: &str, txn_id: &str) -> Option<&Entry> {
        let id = self.halves.get(&(topic.to_string(), txn_id.to_string()))?;
        self.entries.get(id)
    }

    /// Commit (delivered now) or rollback (discarded) of the half record of `txn_id` on
    /// `topic`: the change to persist, already applied; `None` when no such record waits
    /// (unknown, or answered before).
    pub fn resolve(
        &mut self,
        topic: &str,
        txn_id: &str,
        commit: bool,
        now_ms: i64,
    ) -> Option<(u64, Option<Entry>)> {
        let entry = self.half(topic, txn_id)?.clone();
        let change = commit.then(|| Entry {
            due_ms: now_ms,
            half: None,
            ..entry.clone()
        });
        self.apply(entry.id, change.clone());
        Some((entry.id, change))
    }
}

/// The next state of a half record taken due at `now_ms`: another check-back `interval_ms`
/// later, or, after `max_checks` checks, delivery to `abandoned_topic` partition 0.
pub fn half_step(
    entry: &Entry,
    now_ms: i64,
    interval_ms: i64,
    max_checks: i32,
    abandoned_topic: &str,
) -> Option<HalfStep> {
    let half = entry.half.as_ref()?;
    if half.checks >= max_checks {
        let mut headers = entry.headers.clone();
        headers.push((
            super::headers::TXN_TOPIC.as_bytes().to_vec(),
            Some(entry.topic.as_bytes().to_vec()),
        ));
        return Some(HalfStep::Abandon(Entry {
            due_ms: now_ms,
            topic: abandoned_topic.to_string(),
            partition: 0,
            headers,
            half: None,
            ..entry.clone()
        }));
    }
    Some(HalfStep::Check(Entry {
        due_ms: now_ms.saturating_add(interval_ms),
        half: Some(Half {
            checks: half.checks + 1,
            ..half.clone()
        }),
        ..entry.clone()
    }))
}

#[cfg(test)]
mod tests;
