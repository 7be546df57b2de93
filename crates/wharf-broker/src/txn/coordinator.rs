//! The transaction coordinator's state machine, one [`TxnMetadata`] per transactional id.
//! Invariant: every change of a transactional id's metadata is returned to the caller as the
//! metadata to persist, so the log of `__transaction_state` records replays to this state.
//!
//! ```text
//!   Empty ──AddPartitions/AddOffsets──► Ongoing ──EndTxn(commit)──► PrepareCommit ──markers──► CompleteCommit
//!     ▲                                   │  ──EndTxn(abort) / timeout / fence──► PrepareAbort ──markers──► CompleteAbort
//!     └───────────── InitProducerId (epoch + 1) from Empty / Complete* ◄───────────────────────────────┘
//! ```
//!
//! The core takes `now` and never does I/O: the driver persists the returned metadata,
//! writes the returned [`Marker`]s to every partition of the transaction, and then calls
//! [`TxnCoordinatorState::complete`].

use std::collections::{BTreeMap, BTreeSet};

use super::TxnError;

/// A topic partition in a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnPartition {
    pub topic: String,
    pub partition: i32,
}

impl TxnPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// Kafka's transaction states (`TransactionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's names, as DescribeTransactions and ListTransactions report them.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Empty,
            Self::Ongoing,
            Self::PrepareCommit,
            Self::PrepareAbort,
            Self::CompleteCommit,
            Self::CompleteAbort,
        ]
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    pub(crate) fn code(self) -> i8 {
        match self {
            Self::Empty => 0,
            Self::Ongoing => 1,
            Self::PrepareCommit => 2,
            Self::PrepareAbort => 3,
            Self::CompleteCommit => 4,
            Self::CompleteAbort => 5,
        }
    }

    pub(crate) fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            _ => return None,
        })
    }

    fn is_preparing(self) -> bool {
        matches!(self, Self::PrepareCommit | Self::PrepareAbort)
    }
}

/// One transactional id: its producer, epoch and the open transaction. This is exactly
/// what a `__transaction_state` record stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions written in the open transaction (for a group's offsets, the group's
    /// `__consumer_offsets` partition is not listed; see `groups`).
    pub partitions: BTreeSet<TxnPartition>,
    /// Groups whose offsets the open transaction commits (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// Offsets sent with TxnOffsetCommit, by (group, topic, partition): they become the
    /// groups' committed offsets only when the transaction commits.
    pub offsets: BTreeMap<(String, String, i32), TxnOffset>,
    /// When the open transaction started (-1 without one).
    pub start_ms: i64,
    pub update_ms: i64,
}

impl TxnMetadata {
    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping {
                transactional_id: self.transactional_id.clone(),
                producer_id,
            });
        }
        if epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced {
                transactional_id: self.transactional_id.clone(),
                epoch,
                current: self.producer_epoch,
            });
        }
        Ok(())
    }

    fn concurrent(&self) -> TxnError {
        TxnError::ConcurrentTransactions {
            transactional_id: self.transactional_id.clone(),
            state: self.state.name(),
        }
    }

    /// Moves an ongoing transaction to its prepare state; returns the markers to write.
    fn prepare(&mut self, commit: bool, now: i64) -> Completion {
        self.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.update_ms = now;
        self.completion()
    }

    fn completion(&self) -> Completion {
        let commit = self.state == TxnState::PrepareCommit;
        Completion {
            transactional_id: self.transactional_id.clone(),
            commit,
            markers: self
                .partitions
                .iter()
                .map(|p| Marker {
                    partition: p.clone(),
                    producer_id: self.producer_id,
                    producer_epoch: self.producer_epoch,
                    commit,
                })
                .collect(),
            groups: self.groups.iter().cloned().collect(),
            offsets: if commit {
                self.offsets
                    .iter()
                    .map(|((g, t, p), o)| (g.clone(), t.clone(), *p, o.clone()))
                    .collect()
            } else {
                Vec::new()
            },
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
        }
    }
}

/// An offset committed by a transaction (TxnOffsetCommit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A commit or abort marker to write to one partition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub partition: TxnPartition,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
}

/// A transaction to finish: write `markers`, commit or drop the pending offsets of
/// `groups`, then call [`TxnCoordinatorState::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub transactional_id: String,
    pub commit: bool,
    pub markers: Vec<Marker>,
    pub groups: Vec<String>,
    /// `(group, topic, partition, offset)` to commit (empty for an abort).
    pub offsets: Vec<(String, String, i32, TxnOffset)>,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// The answer to InitProducerId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// The producer id and the new epoch; persist the metadata before answering.
    Ready {
        producer_id: i64,
        producer_epoch: i16,
        persist: TxnMetadata,
    },
    /// An open transaction of the previous producer was fenced and must be aborted first;
    /// the client gets CONCURRENT_TRANSACTIONS and retries.
    AbortFirst {
        persist: TxnMetadata,
        completion: Completion,
    },
}

/// Every transactional id's metadata.
#[derive(Debug, Default)]
pub struct TxnCoordinatorState {
    txns: BTreeMap<String, TxnMetadata>,
    max_timeout_ms: i32,
}

impl TxnCoordinatorState {
    pub fn new(max_timeout_ms: i32) -> Self {
        Self {
            txns: BTreeMap::new(),
            max_timeout_ms,
        }
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id)
    }

    /// Every transactional id, sorted.
    pub fn all(&self) -> impl Iterator<Item = &TxnMetadata> {
        self.txns.values()
    }

    /// Replay: the last record of a transactional id wins; `None` (a tombstone) forgets it.
    pub fn replay(&mut self, transactional_id: &str, value: Option<TxnMetadata>) {
        match value {
            Some(m) => {
                self.txns.insert(transactional_id.to_string(), m);
            }
            None => {
                self.txns.remove(transactional_id);
            }
        }
    }

    /// After replay: transactions that were preparing when the broker stopped. Their
    /// markers are written again (a marker written twice is harmless: the second finds
    /// no open transaction of that producer).
    pub fn unfinished(&self) -> Vec<Completion> {
        self.txns
            .values()
            .filter(|m| m.state.is_preparing())
            .map(TxnMetadata::completion)
            .collect()
    }

    /// A transactional produce to `partition` by `producer_id` at `epoch` is allowed only
    /// while that producer's transaction is open and the partition was added to it
    /// (AddPartitionsToTxn), as Kafka checks since KIP-890. Scans the transactional ids.
    /// The transactional id producer `producer_id` belongs to, if known here.
    pub fn transactional_id_of(&self, producer_id: i64) -> Option<&str> {
        self.txns
            .values()
            .find(|m| m.producer_id == producer_id)
            .map(|m| m.transactional_id.as_str())
    }

    pub fn check_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        partition: &TxnPartition,
    ) -> Result<(), TxnError> {
        let Some(meta) = self.txns.values().find(|m| m.producer_id == producer_id) else {
            return Err(TxnError::InvalidProducerIdMapping {
                transactional_id: String::new(),
                producer_id,
            });
        };
        meta.check_producer(producer_id, epoch)?;
        if meta.state != TxnState::Ongoing || !meta.partitions.contains(partition) {
            return Err(TxnError::InvalidTxnState {
                transactional_id: meta.transactional_id.clone(),
                request: "a transactional produce to a partition not added to the transaction",
                state: meta.state.name(),
            });
        }
        Ok(())
    }

    fn known(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
    ) -> Result<&mut TxnMetadata, TxnError> {
        self.txns
            .get_mut(transactional_id)
            .ok_or_else(|| TxnError::InvalidProducerIdMapping {
                transactional_id: transactional_id.to_string(),
                producer_id,
            })
    }

    /// InitProducerId with a transactional id. `allocate` hands out a fresh producer id
    /// (for a new transactional id, or when the epoch would overflow).
    pub fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        now: i64,
        allocate: impl FnOnce() -> i64,
    ) -> Result<InitOutcome, TxnError> {
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(TxnError::InvalidTimeout {
                transactional_id: transactional_id.to_string(),
                timeout_ms,
                max_ms: self.max_timeout_ms,
            });
        }
        let Some(meta) = self.txns.get_mut(transactional_id) else {
            let meta = TxnMetadata {
                transactional_id: transactional_id.to_string(),
                producer_id: allocate(),
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                offsets: BTreeMap::new(),
                start_ms: -1,
                update_ms: now,
            };
            self.txns.insert(transactional_id.to_string(), meta.clone());
            return Ok(InitOutcome::Ready {
                producer_id: meta.producer_id,
                producer_epoch: 0,
                persist: meta,
            });
        };
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => Err(meta.concurrent()),
            TxnState::Ongoing => {
                // Fence the old producer (its epoch is now stale) and abort its transaction.
                meta.producer_epoch = meta.producer_epoch.saturating_add(1);
                let completion = meta.prepare(false, now);
                Ok(InitOutcome::AbortFirst {
                    persist: meta.clone(),
                    completion,
                })
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if meta.producer_epoch >= i16::MAX - 1 {
                    meta.producer_id = allocate();
                    meta.producer_epoch = 0;
                } else {
                    meta.producer_epoch += 1;
                }
                meta.timeout_ms = timeout_ms;
                meta.state = TxnState::Empty;
                meta.partitions.clear();
                meta.groups.clear();
                meta.offsets.clear();
                meta.start_ms = -1;
                meta.update_ms = now;
                Ok(InitOutcome::Ready {
                    producer_id: meta.producer_id,
                    producer_epoch: meta.producer_epoch,
                    persist: meta.clone(),
                })
            }
        }
    }

    /// AddPartitionsToTxn. Returns the metadata to persist, or `None` when nothing changed
    /// (every partition was already in the open transaction).
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TxnPartition],
        now: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        let meta = self.known(transactional_id, producer_id)?;
        meta.check_producer(producer_id, epoch)?;
        if meta.state.is_preparing() {
            return Err(meta.concurrent());
        }
        if meta.state == TxnState::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p))
        {
            return Ok(None);
        }
        meta.begin(now);
        meta.partitions.extend(partitions.iter().cloned());
        Ok(Some(meta.clone()))
    }

    /// AddOffsetsToTxn: the group's offsets will be committed by this transaction.
    pub fn add_offsets(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        now: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        let meta = self.known(transactional_id, producer_id)?;
        meta.check_producer(producer_id, epoch)?;
        if meta.state.is_preparing() {
            return Err(meta.concurrent());
        }
        if meta.state == TxnState::Ongoing && meta.groups.contains(group) {
            return Ok(None);
        }
        meta.begin(now);
        meta.groups.insert(group.to_string());
        Ok(Some(meta.clone()))
    }

    /// TxnOffsetCommit, valid only for a producer whose open transaction added the group:
    /// the offsets are held in the transaction. Returns the metadata to persist.
    pub fn offset_commit(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<(String, i32, TxnOffset)>,
        now: i64,
    ) -> Result<TxnMetadata, TxnError> {
        let meta = self.known(transactional_id, producer_id)?;
        meta.check_producer(producer_id, epoch)?;
        if meta.state != TxnState::Ongoing || !meta.groups.contains(group) {
            return Err(TxnError::InvalidTxnState {
                transactional_id: transactional_id.to_string(),
                request: "TxnOffsetCommit",
                state: meta.state.name(),
            });
        }
        for (topic, partition, offset) in offsets {
            meta.offsets
                .insert((group.to_string(), topic, partition), offset);
        }
        meta.update_ms = now;
        Ok(meta.clone())
    }

    /// EndTxn. `Ok(None)`: a retry of a transaction that already completed the same way.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<Option<(TxnMetadata, Completion)>, TxnError> {
        let meta = self.known(transactional_id, producer_id)?;
        meta.check_producer(producer_id, epoch)?;
        let invalid = |meta: &TxnMetadata| TxnError::InvalidTxnState {
            transactional_id: transactional_id.to_string(),
            request: if commit {
                "EndTxn(commit)"
            } else {
                "EndTxn(abort)"
            },
            state: meta.state.name(),
        };
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {
                let completion = meta.prepare(commit, now);
                Ok(Some((meta.clone(), completion)))
            }
            // A retry of a completed EndTxn, or an abort with nothing added (a no-op in
            // Kafka's producer).
            (TxnState::CompleteCommit, true)
            | (TxnState::CompleteAbort | TxnState::Empty, false) => Ok(None),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(meta.concurrent())
            }
            _ => Err(invalid(meta)),
        }
    }

    /// Removes and returns the transactional ids `pick` selects (those another node
    /// coordinates, or those about to be reloaded).
    pub fn take_where(&mut self, pick: impl Fn(&str) -> bool) -> BTreeMap<String, TxnMetadata> {
        let (taken, kept) = std::mem::take(&mut self.txns)
            .into_iter()
            .partition(|(id, _)| pick(id));
        self.txns = kept;
        taken
    }

    /// Puts back what [`TxnCoordinatorState::take_where`] took.
    pub fn restore(&mut self, taken: BTreeMap<String, TxnMetadata>) {
        self.txns.extend(taken);
    }

    /// Ongoing transactions open longer than their timeout: each is fenced (epoch + 1, so
    /// the producer's next request fails) and moved to PrepareAbort.
    pub fn expire(&mut self, now: i64) -> Vec<(TxnMetadata, Completion)> {
        self.txns
            .values_mut()
            .filter(|m| {
                m.state == TxnState::Ongoing
                    && now.saturating_sub(m.start_ms) >= i64::from(m.timeout_ms)
            })
            .map(|m| {
                m.producer_epoch = m.producer_epoch.saturating_add(1);
                let completion = m.prepare(false, now);
                (m.clone(), completion)
            })
            .collect()
    }

    /// The markers of `completion` are written: the transaction is complete. Returns the
    /// metadata to persist, or `None` if the transaction moved on meanwhile.
    pub fn complete(&mut self, completion: &Completion, now: i64) -> Option<TxnMetadata> {
        let meta = self.txns.get_mut(&completion.transactional_id)?;
        let expected = if completion.commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        if meta.state != expected
            || meta.producer_id != completion.producer_id
            || meta.producer_epoch != completion.producer_epoch
        {
            return None;
        }
        meta.state = if completion.commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        meta.partitions.clear();
        meta.groups.clear();
        meta.offsets.clear();
        meta.start_ms = -1;
        meta.update_ms = now;
        Some(meta.clone())
    }

    /// Transactional ids idle (no open transaction) for `expiration_ms`: forgotten; the
    /// caller writes a tombstone for each.
    pub fn expire_ids(&mut self, now: i64, expiration_ms: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .txns
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && now.saturating_sub(m.update_ms) >= expiration_ms
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in &gone {
            self.txns.remove(id);
        }
        gone
    }
}

impl TxnMetadata {
    fn begin(&mut self, now: i64) {
        if self.state != TxnState::Ongoing {
            self.state = TxnState::Ongoing;
            self.partitions.clear();
            self.groups.clear();
            self.offsets.clear();
            self.start_ms = now;
        }
        self.update_ms = now;
    }
}

#[cfg(test)]
mod tests;
