//! The idempotence state of one partition, as a pure state machine: which producers wrote
//! to it, their epoch, and their last few batches (sequence range and where each landed).
//! Invariant: per producer, `batches` is in append order and holds batches of `epoch` only.
//!
//! ```text
//!  check(batch) ──► Append ──► begin (pending) ──► complete(offsets) | abort
//!        │
//!        └──────► Duplicate(pending ticket | written offsets)   no second write
//! ```
//!
//! Kafka's rules (`ProducerStateManager`, 3.x): a batch equal to one of the last
//! [`MAX_CACHED_BATCHES`] is a duplicate and answered with its original offsets; an older
//! epoch is refused; a newer epoch must start at sequence 0; within an epoch the next batch
//! must follow the last one (sequences wrap from `i32::MAX` to 0); a producer with no state
//! here may start at any sequence.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::error::ProducerError;

/// How many batches per producer are remembered for duplicate detection (Kafka's and the
/// clients' `max.in.flight.requests.per.connection` limit with idempotence).
pub const MAX_CACHED_BATCHES: usize = 5;

/// The producer fields of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdentity {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
}

impl BatchIdentity {
    /// From a batch header's fields; the last sequence wraps like Kafka's
    /// `DefaultRecordBatch.incrementSequence`.
    pub fn new(producer_id: i64, epoch: i16, first_seq: i32, last_offset_delta: i32) -> Self {
        Self {
            producer_id,
            epoch,
            first_seq,
            last_seq: increment_sequence(first_seq, last_offset_delta),
        }
    }
}

/// `sequence + increment`, wrapping past `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    let next = i64::from(sequence) + i64::from(increment.max(0));
    let wrapped = next % (i64::from(i32::MAX) + 1);
    // The remainder is in 0..=i32::MAX, so it fits.
    i32::try_from(wrapped).unwrap_or(0)
}

/// Whether `next` is the sequence right after `last`.
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// Where a remembered batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Handed to storage, offsets not known yet; the ticket names it to the driver.
    Pending(u64),
    Written {
        base_offset: i64,
        last_offset: i64,
    },
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// New and in sequence: append it, then `begin`.
    Append,
    /// Seen before: answer with the original, write nothing.
    Duplicate(Placement),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CachedBatch {
    first_seq: i32,
    last_seq: i32,
    placement: Placement,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<CachedBatch>,
    /// Broker time of the last append (replay: the batch's max timestamp), for expiry.
    last_append_ms: i64,
}

/// One producer as a snapshot stores it: written batches only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerSnapshot {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_append_ms: i64,
    /// `(first_seq, last_seq, base_offset, last_offset)`, oldest first.
    pub batches: Vec<(i32, i32, i64, i64)>,
}

/// Every producer of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionProducers {
    producers: HashMap<i64, ProducerEntry>,
    next_ticket: u64,
}

impl PartitionProducers {
    /// Decides what to do with `batch`; changes nothing.
    pub fn check(&self, batch: &BatchIdentity) -> Result<Check, ProducerError> {
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return Ok(Check::Append);
        };
        if batch.epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                current: entry.epoch,
            });
        }
        if batch.epoch > entry.epoch {
            if batch.first_seq != 0 {
                return Err(ProducerError::OutOfOrder {
                    producer_id: batch.producer_id,
                    first_seq: batch.first_seq,
                    expected: 0,
                });
            }
            return Ok(Check::Append);
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == batch.first_seq && b.last_seq == batch.last_seq)
        {
            return Ok(Check::Duplicate(b.placement));
        }
        match entry.batches.back() {
            Some(last) if !in_sequence(last.last_seq, batch.first_seq) => {
                Err(ProducerError::OutOfOrder {
                    producer_id: batch.producer_id,
                    first_seq: batch.first_seq,
                    expected: increment_sequence(last.last_seq, 1),
                })
            }
            _ => Ok(Check::Append),
        }
    }

    /// Records `batch` (which `check` said to append) as handed to storage; returns its
    /// ticket for `complete` or `abort`.
    pub fn begin(&mut self, batch: &BatchIdentity, now_ms: i64) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.push(batch, Placement::Pending(ticket), now_ms);
        ticket
    }

    /// The pending batch `ticket` landed at these offsets.
    pub fn complete(&mut self, producer_id: i64, ticket: u64, base_offset: i64, last_offset: i64) {
        if let Some(b) = self.find_pending(producer_id, ticket) {
            b.placement = Placement::Written {
                base_offset,
                last_offset,
            };
        }
    }

    /// The pending batch `ticket` was not written: forget it, so a retry is appended.
    pub fn abort(&mut self, producer_id: i64, ticket: u64) {
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            entry
                .batches
                .retain(|b| b.placement != Placement::Pending(ticket));
        }
    }

    /// A transaction marker of `producer_id` with `epoch`: a newer epoch (the coordinator
    /// fenced the producer) replaces the producer's, so batches of older epochs are refused.
    pub fn fence(&mut self, producer_id: i64, epoch: i16, now_ms: i64) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                last_append_ms: now_ms,
                batches: VecDeque::new(),
            });
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
    }

    /// Applies a batch read back from the log (recovery): no checks, as Kafka's replay.
    pub fn replay(
        &mut self,
        batch: &BatchIdentity,
        base_offset: i64,
        last_offset: i64,
        timestamp_ms: i64,
    ) {
        self.push(
            batch,
            Placement::Written {
                base_offset,
                last_offset,
            },
            timestamp_ms,
        );
    }

    fn push(&mut self, batch: &BatchIdentity, placement: Placement, now_ms: i64) {
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                batches: VecDeque::with_capacity(MAX_CACHED_BATCHES),
                last_append_ms: now_ms,
            });
        if batch.epoch != entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == MAX_CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(CachedBatch {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            placement,
        });
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
    }

    fn find_pending(&mut self, producer_id: i64, ticket: u64) -> Option<&mut CachedBatch> {
        self.producers
            .get_mut(&producer_id)?
            .batches
            .iter_mut()
            .find(|b| b.placement == Placement::Pending(ticket))
    }

    /// The remembered batches of `producer_id`, oldest first: `(first_seq, last_seq, where)`.
    pub fn batches_of(&self, producer_id: i64) -> Vec<(i32, i32, Placement)> {
        self.producers.get(&producer_id).map_or_else(Vec::new, |e| {
            e.batches
                .iter()
                .map(|b| (b.first_seq, b.last_seq, b.placement))
                .collect()
        })
    }

    /// Whether any batch is still waiting for its offsets.
    pub fn has_pending(&self) -> bool {
        self.producers.values().any(|e| {
            e.batches
                .iter()
                .any(|b| matches!(b.placement, Placement::Pending(_)))
        })
    }

    /// Forgets producers idle for `expiration_ms` or more (none with a pending batch);
    /// returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            now_ms.saturating_sub(e.last_append_ms) < expiration_ms
                || e.batches
                    .iter()
                    .any(|b| matches!(b.placement, Placement::Pending(_)))
        });
        before - self.producers.len()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Every producer with its written batches, sorted by producer id.
    pub fn snapshot(&self) -> Vec<ProducerSnapshot> {
        let mut out: Vec<ProducerSnapshot> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ProducerSnapshot {
                producer_id,
                epoch: e.epoch,
                last_append_ms: e.last_append_ms,
                batches: e
                    .batches
                    .iter()
                    .filter_map(|b| match b.placement {
                        Placement::Written {
                            base_offset,
                            last_offset,
                        } => Some((b.first_seq, b.last_seq, base_offset, last_offset)),
                        Placement::Pending(_) => None,
                    })
                    .collect(),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// The state a snapshot describes.
    pub fn restore(snapshot: &[ProducerSnapshot]) -> Self {
        let producers = snapshot
            .iter()
            .map(|p| {
                let batches = p
                    .batches
                    .iter()
                    .rev()
                    .take(MAX_CACHED_BATCHES)
                    .rev()
                    .map(
                        |&(first_seq, last_seq, base_offset, last_offset)| CachedBatch {
                            first_seq,
                            last_seq,
                            placement: Placement::Written {
                                base_offset,
                                last_offset,
                            },
                        },
                    )
                    .collect();
                (
                    p.producer_id,
                    ProducerEntry {
                        epoch: p.epoch,
                        batches,
                        last_append_ms: p.last_append_ms,
                    },
                )
            })
            .collect();
        Self {
            producers,
            next_ticket: 0,
        }
    }
}

#[cfg(test)]
mod tests;
