//! [`Cursor`], the pure state of one cursor over one partition: which offsets in the in-flight
//! window `[start, next)` are available, acquired (locked by a consumer until a deadline),
//! acknowledged or archived, with their delivery counts. No I/O and no clock: every call
//! takes `now_ms`.
//!
//! Invariant: every offset in `[start, next)` has a slot; every offset below `start` is done
//! (acknowledged, archived or a gap) and every offset from `next` on was never acquired.
//!
//! ```text
//!            acquire (count + 1)          accept
//!  Available ───────────────► Acquired ──────────► Acknowledged
//!     ▲  (after backoff)         │ release / lock expiry
//!     └──────────────────────────┤ (count < limit)
//!                                │ reject, or count ≥ limit
//!                                ▼
//!                             Archived ──► dead-letter step (once)
//! ```

use std::collections::BTreeMap;

use super::error::CursorError;

/// How an acquired offset range is settled by its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckType {
    /// Processed: never delivered again.
    Accept,
    /// Not processed: delivered again (after the retry backoff) unless the delivery limit is
    /// reached, then archived.
    Release,
    /// Unprocessable: archived at once.
    Reject,
}

/// Where a new cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The partition's log start offset.
    Earliest,
    /// The partition's high watermark: only records written from now on.
    Latest,
}

/// Why a record was archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveReason {
    Rejected,
    DeliveryLimit,
}

impl ArchiveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected by the consumer",
            Self::DeliveryLimit => "delivery count limit reached",
        }
    }

    pub(super) fn code(self) -> u8 {
        match self {
            Self::Rejected => 0,
            Self::DeliveryLimit => 1,
        }
    }

    pub(super) fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Rejected),
            1 => Some(Self::DeliveryLimit),
            _ => None,
        }
    }
}

/// The settings a cursor obeys; passed with every call, so a changed group or queue config
/// applies to the next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorConfig {
    /// How long an acquired record stays locked to its consumer.
    pub lock_ms: i64,
    /// A record released or expired with this many deliveries is archived (at least 1).
    pub delivery_limit: u16,
    /// The delay before a released or expired record with delivery count `n` is available
    /// again: entry `n - 1`, the last entry repeating. Empty: at once.
    pub retry_backoff_ms: Vec<i64>,
    /// At most this many records locked at once (Kafka's share-partition record locks);
    /// new records wait beyond it.
    pub max_in_flight: usize,
    /// Where a cursor without state starts.
    pub start: StartFrom,
    /// Stop at the last stable offset and skip aborted transactional records.
    pub read_committed: bool,
}

impl Default for CursorConfig {
    fn default() -> Self {
        Self {
            lock_ms: 30_000,
            delivery_limit: 5,
            retry_backoff_ms: Vec::new(),
            max_in_flight: 2_000,
            start: StartFrom::Latest,
            read_committed: false,
        }
    }
}

impl CursorConfig {
    /// The delay before a record released with `delivery_count` deliveries is available.
    pub fn backoff_ms(&self, delivery_count: u16) -> i64 {
        let at = usize::from(delivery_count.max(1)) - 1;
        self.retry_backoff_ms
            .get(at)
            .or(self.retry_backoff_ms.last())
            .copied()
            .unwrap_or(0)
            .max(0)
    }
}

/// The state of one offset in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// Deliverable from `at_ms` on.
    Available {
        at_ms: i64,
    },
    Acquired {
        consumer: String,
        until_ms: i64,
    },
    Acknowledged,
    Archived,
    /// Not a deliverable record (a transaction marker or an aborted record): done.
    Gap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub state: SlotState,
    pub delivery_count: u16,
}

/// An archived record waiting for the dead-letter step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadPending {
    pub delivery_count: u16,
    pub reason: ArchiveReason,
    /// The dead-letter partition's high watermark when its write began (-1: not begun). A
    /// write found at or after it on recovery counts as done.
    pub begun_at: i64,
}

/// Acquired offsets with one delivery count, as front ends report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquiredRange {
    pub first: i64,
    pub last: i64,
    pub delivery_count: u16,
}

/// Totals since the cursor was created (persisted with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CursorTotals {
    pub acquired: u64,
    pub accepted: u64,
    pub released: u64,
    pub rejected: u64,
    pub lock_expiries: u64,
    pub redelivered: u64,
    pub archived: u64,
    pub dead_lettered: u64,
}

/// What a batch read from the log is to the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Deliverable records.
    Data,
    /// A control batch or an aborted transactional batch.
    Skip,
}

/// One cursor's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub(super) start: i64,
    pub(super) next: i64,
    pub(super) slots: BTreeMap<i64, Slot>,
    pub(super) dead: BTreeMap<i64, DeadPending>,
    pub(super) totals: CursorTotals,
}

/// What changed records to archive, to hand to the dead-letter step.
pub type Archived = Vec<(i64, DeadPending)>;

impl Cursor {
    /// A cursor whose first record is `start`.
    pub fn new(start: i64) -> Self {
        Self {
            start,
            next: start,
            slots: BTreeMap::new(),
            dead: BTreeMap::new(),
            totals: CursorTotals::default(),
        }
    }

    /// The first offset not yet settled.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// The first offset never acquired.
    pub fn next(&self) -> i64 {
        self.next
    }

    pub fn totals(&self) -> CursorTotals {
        self.totals
    }

    pub fn slots(&self) -> impl Iterator<Item = (i64, &Slot)> {
        self.slots.iter().map(|(o, s)| (*o, s))
    }

    /// Archived records still waiting for the dead-letter step.
    pub fn dead_pending(&self) -> impl Iterator<Item = (i64, &DeadPending)> {
        self.dead.iter().map(|(o, d)| (*o, d))
    }

    /// Offsets currently acquired.
    pub fn acquired_count(&self) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s.state, SlotState::Acquired { .. }))
            .count()
    }

    /// Offsets in the window available to acquire (now or after their retry backoff): not
    /// settled, not acquired. Records from `next` on are not counted.
    pub fn available_count(&self) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s.state, SlotState::Available { .. }))
            .count()
    }

    /// Offsets locked to `consumer`.
    pub fn held_by(&self, consumer: &str) -> usize {
        self.slots
            .values()
            .filter(
                |s| matches!(&s.state, SlotState::Acquired { consumer: c, .. } if c == consumer),
            )
            .count()
    }

    /// Offsets in flight (`next - start`).
    pub fn in_flight(&self) -> usize {
        usize::try_from(self.next - self.start).unwrap_or(0)
    }

    /// Moves the cursor to `offset`, forgetting every in-flight offset (archived records
    /// waiting for the dead-letter step are kept).
    pub fn reset(&mut self, offset: i64) {
        self.slots.clear();
        self.start = offset;
        self.next = offset;
    }

    /// Settles every available offset and every offset from `next` to `end` (never
    /// acquired) as done, keeping acquired ones with their consumers (RabbitMQ's
    /// queue.purge); returns how many records it settled.
    pub fn purge_available(&mut self, end: i64) -> u64 {
        let mut purged = 0u64;
        for slot in self.slots.values_mut() {
            if matches!(slot.state, SlotState::Available { .. }) {
                slot.state = SlotState::Gap;
                purged += 1;
            }
        }
        if end > self.next {
            purged += u64::try_from(end - self.next).unwrap_or(0);
            if self
                .slots
                .values()
                .any(|s| matches!(s.state, SlotState::Acquired { .. }))
            {
                for offset in self.next..end {
                    self.slots.insert(
                        offset,
                        Slot {
                            state: SlotState::Gap,
                            delivery_count: 0,
                        },
                    );
                }
            }
            self.next = end;
        }
        self.advance();
        purged
    }

    /// Follows the log start: offsets deleted by retention are done.
    pub fn follow_log_start(&mut self, log_start: i64) {
        if log_start > self.start {
            self.slots = self.slots.split_off(&log_start);
            self.start = log_start;
            self.next = self.next.max(log_start);
        }
    }

    /// How many more records may be locked.
    pub fn room(&self, config: &CursorConfig) -> usize {
        config.max_in_flight.saturating_sub(self.acquired_count())
    }

    /// Makes expired locks available again (or archives them at the limit); returns the
    /// newly archived records.
    pub fn expire(&mut self, now_ms: i64, config: &CursorConfig) -> Archived {
        let expired: Vec<i64> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.state, SlotState::Acquired { until_ms, .. } if until_ms <= now_ms))
            .map(|(o, _)| *o)
            .collect();
        let mut archived = Vec::new();
        for offset in expired {
            self.totals.lock_expiries += 1;
            self.give_back(offset, now_ms, config, &mut archived);
        }
        self.advance();
        archived
    }

    /// Releases every lock held by `consumer` (it left), as if each lock expired now.
    pub fn release_consumer(
        &mut self,
        consumer: &str,
        now_ms: i64,
        config: &CursorConfig,
    ) -> Archived {
        let held: Vec<i64> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(&s.state, SlotState::Acquired { consumer: c, .. } if c == consumer))
            .map(|(o, _)| *o)
            .collect();
        let mut archived = Vec::new();
        for offset in held {
            self.give_back(offset, now_ms, config, &mut archived);
        }
        self.advance();
        archived
    }

    /// Offsets available for redelivery at `now_ms`, at most `max`, lowest first.
    pub fn available(&self, now_ms: i64, max: usize) -> Vec<i64> {
        self.slots
            .iter()
            .filter(|(_, s)| matches!(s.state, SlotState::Available { at_ms } if at_ms <= now_ms))
            .map(|(o, _)| *o)
            .take(max)
            .collect()
    }

    /// The earliest time an available offset becomes deliverable, or a lock expires.
    pub fn next_due(&self) -> Option<i64> {
        self.slots
            .values()
            .filter_map(|s| match s.state {
                SlotState::Available { at_ms } => Some(at_ms),
                SlotState::Acquired { until_ms, .. } => Some(until_ms),
                _ => None,
            })
            .min()
    }

    /// Locks the available `offsets` (from [`Cursor::available`]) to `consumer`.
    pub fn acquire_available(
        &mut self,
        offsets: &[i64],
        consumer: &str,
        now_ms: i64,
        config: &CursorConfig,
    ) -> Vec<AcquiredRange> {
        let mut ranges = Vec::new();
        for &offset in offsets {
            let Some(slot) = self.slots.get_mut(&offset) else {
                continue;
            };
            if !matches!(slot.state, SlotState::Available { .. }) {
                continue;
            }
            slot.delivery_count = slot.delivery_count.saturating_add(1);
            slot.state = SlotState::Acquired {
                consumer: consumer.to_string(),
                until_ms: now_ms.saturating_add(config.lock_ms),
            };
            self.totals.acquired += 1;
            if slot.delivery_count > 1 {
                self.totals.redelivered += 1;
            }
            push_range(&mut ranges, offset, slot.delivery_count);
        }
        ranges
    }

    /// Takes the next batch of the log, `first..=last` (which must start at or before
    /// `next` and end at or after it): data records are locked to `consumer`, skipped ones
    /// are done. Returns the acquired ranges.
    pub fn acquire_new(
        &mut self,
        first: i64,
        last: i64,
        kind: BatchKind,
        consumer: &str,
        now_ms: i64,
        config: &CursorConfig,
    ) -> Vec<AcquiredRange> {
        let mut ranges = Vec::new();
        let from = first.max(self.next);
        if last < from {
            return ranges;
        }
        for offset in from..=last {
            let slot = match kind {
                BatchKind::Skip => Slot {
                    state: SlotState::Gap,
                    delivery_count: 0,
                },
                BatchKind::Data => {
                    self.totals.acquired += 1;
                    push_range(&mut ranges, offset, 1);
                    Slot {
                        state: SlotState::Acquired {
                            consumer: consumer.to_string(),
                            until_ms: now_ms.saturating_add(config.lock_ms),
                        },
                        delivery_count: 1,
                    }
                }
            };
            self.slots.insert(offset, slot);
        }
        self.next = last + 1;
        self.advance();
        ranges
    }

    /// Settles `first..=last` for `consumer`. Every offset must be acquired by it (gaps are
    /// allowed); nothing changes otherwise. Returns the newly archived records.
    pub fn ack(
        &mut self,
        consumer: &str,
        first: i64,
        last: i64,
        kind: AckType,
        now_ms: i64,
        config: &CursorConfig,
    ) -> Result<Archived, CursorError> {
        if first > last || first < self.start || last >= self.next {
            return Err(CursorError::InvalidRecordState {
                first,
                last,
                reason: "not in flight",
            });
        }
        for (_, slot) in self.slots.range(first..=last) {
            match &slot.state {
                SlotState::Acquired { consumer: c, .. } if c == consumer => {}
                SlotState::Gap => {}
                SlotState::Acquired { .. } => {
                    return Err(CursorError::InvalidRecordState {
                        first,
                        last,
                        reason: "acquired by another consumer",
                    })
                }
                _ => {
                    return Err(CursorError::InvalidRecordState {
                        first,
                        last,
                        reason: "not acquired",
                    })
                }
            }
        }
        let offsets: Vec<i64> = self
            .slots
            .range(first..=last)
            .filter(|(_, s)| s.state != SlotState::Gap)
            .map(|(o, _)| *o)
            .collect();
        let mut archived = Vec::new();
        for offset in offsets {
            match kind {
                AckType::Accept => {
                    self.totals.accepted += 1;
                    if let Some(slot) = self.slots.get_mut(&offset) {
                        slot.state = SlotState::Acknowledged;
                    }
                }
                AckType::Release => {
                    self.totals.released += 1;
                    self.give_back(offset, now_ms, config, &mut archived);
                }
                AckType::Reject => {
                    self.totals.rejected += 1;
                    self.archive(offset, ArchiveReason::Rejected, &mut archived);
                }
            }
        }
        self.advance();
        Ok(archived)
    }

    /// Records the start of the dead-letter write of `offsets` at `high_watermark`.
    pub fn begin_dead_letter(&mut self, offsets: &[i64], high_watermark: i64) {
        for offset in offsets {
            if let Some(d) = self.dead.get_mut(offset) {
                d.begun_at = high_watermark;
            }
        }
    }

    /// The dead-letter step is over for `offsets`: `written` to a dead-letter topic (or
    /// found there), or archive only.
    pub fn end_dead_letter(&mut self, offsets: &[i64], written: bool) {
        for offset in offsets {
            if self.dead.remove(offset).is_some() && written {
                self.totals.dead_lettered += 1;
            }
        }
    }

    fn give_back(
        &mut self,
        offset: i64,
        now_ms: i64,
        config: &CursorConfig,
        archived: &mut Archived,
    ) {
        let Some(slot) = self.slots.get_mut(&offset) else {
            return;
        };
        if slot.delivery_count >= config.delivery_limit.max(1) {
            self.archive(offset, ArchiveReason::DeliveryLimit, archived);
        } else {
            slot.state = SlotState::Available {
                at_ms: now_ms.saturating_add(config.backoff_ms(slot.delivery_count)),
            };
        }
    }

    fn archive(&mut self, offset: i64, reason: ArchiveReason, archived: &mut Archived) {
        let Some(slot) = self.slots.get_mut(&offset) else {
            return;
        };
        slot.state = SlotState::Archived;
        self.totals.archived += 1;
        let pending = DeadPending {
            delivery_count: slot.delivery_count,
            reason,
            begun_at: -1,
        };
        self.dead.insert(offset, pending);
        archived.push((offset, pending));
    }

    /// Moves `start` past settled offsets.
    fn advance(&mut self) {
        while let Some(entry) = self.slots.first_entry() {
            if matches!(
                entry.get().state,
                SlotState::Acknowledged | SlotState::Archived | SlotState::Gap
            ) {
                let offset = *entry.key();
                entry.remove();
                self.start = offset + 1;
            } else {
                break;
            }
        }
        if self.slots.is_empty() {
            self.start = self.next;
        } else if let Some((&first, _)) = self.slots.first_key_value() {
            self.start = first;
        }
    }
}

fn push_range(ranges: &mut Vec<AcquiredRange>, offset: i64, delivery_count: u16) {
    if let Some(last) = ranges.last_mut() {
        if last.last + 1 == offset && last.delivery_count == delivery_count {
            last.last = offset;
            return;
        }
    }
    ranges.push(AcquiredRange {
        first: offset,
        last: offset,
        delivery_count,
    });
}
