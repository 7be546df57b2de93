//! Queue consume state kept beside a log: which offsets are ready, delivered and not yet
//! settled (in flight), or done (acked, dead-lettered, expired, purged), with a delivery count
//! per message. Front ends (AMQP queues) translate their acks into calls here.
//!
//! Invariant: an offset is in at most one of `requeued`, `in_flight` and `done`; offsets below
//! `next` that are in none of them do not exist (they were never readable).
//!
//! This is the stand-in behind [`MessageCursor`] until the shared cursor module of share
//! groups (ARCHITECTURE decision 8) is merged; `acks` persists settled offsets in the
//! internal topic `__wharf_queue_acks` and replays them at start.

mod acks;

use std::collections::{BTreeMap, BTreeSet};

pub use acks::{AckLog, QUEUE_ACKS_TOPIC};

/// A message handed to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub offset: i64,
    /// Deliveries of this message so far, this one included (1 on the first delivery).
    pub delivery_count: u32,
}

/// Per-message consume state over one log partition.
pub trait MessageCursor: Send {
    /// The next ready message below `end` (requeued ones first), now in flight.
    fn acquire(&mut self, end: i64) -> Option<Acquired>;
    /// The first ready offset below `end` without acquiring it.
    fn peek(&mut self, end: i64) -> Option<i64>;
    /// Settles an in-flight or ready message for good; false if it was neither.
    fn settle(&mut self, offset: i64) -> bool;
    /// Puts an in-flight message back to ready; its delivery count so far, or `None` when
    /// it was not in flight.
    fn release(&mut self, offset: i64) -> Option<u32>;
    /// Ready messages below `end`.
    fn ready(&self, end: i64) -> u64;
    /// Delivered, unsettled messages.
    fn in_flight(&self) -> u64;
    /// Settles every ready message below `end`; returns them.
    fn purge(&mut self, end: i64) -> Vec<i64>;
    /// Messages below `start` are gone from the log (retention): forget them.
    fn advance_start(&mut self, start: i64);
}

/// The local cursor: state in memory, settled offsets persisted by [`AckLog`].
#[derive(Debug, Default, Clone)]
pub struct LocalCursor {
    /// The lowest offset never acquired.
    next: i64,
    requeued: BTreeSet<i64>,
    in_flight: BTreeMap<i64, u32>,
    /// Deliveries of requeued messages.
    counts: BTreeMap<i64, u32>,
    /// Settled offsets at or above `next` are kept here too (settled while ready).
    done: BTreeSet<i64>,
}

impl LocalCursor {
    /// A cursor that starts at `start` with `settled` offsets already done.
    pub fn restore(start: i64, settled: impl IntoIterator<Item = i64>) -> Self {
        let mut cursor = Self {
            next: start,
            ..Self::default()
        };
        cursor
            .done
            .extend(settled.into_iter().filter(|o| *o >= start));
        cursor.compact();
        cursor
    }

    /// Drops settled offsets the cursor has passed with nothing pending below them.
    fn compact(&mut self) {
        while self.done.first().is_some_and(|o| *o == self.next) {
            self.done.pop_first();
            self.next += 1;
        }
        let floor = self
            .requeued
            .first()
            .copied()
            .into_iter()
            .chain(self.in_flight.keys().next().copied())
            .min()
            .unwrap_or(self.next);
        while self.done.first().is_some_and(|o| *o < floor) {
            self.done.pop_first();
        }
    }
}

impl MessageCursor for LocalCursor {
    fn acquire(&mut self, end: i64) -> Option<Acquired> {
        if let Some(offset) = self.requeued.pop_first() {
            let delivery_count = self.counts.remove(&offset).unwrap_or(0) + 1;
            self.in_flight.insert(offset, delivery_count);
            return Some(Acquired {
                offset,
                delivery_count,
            });
        }
        while self.next < end {
            let offset = self.next;
            self.next += 1;
            if self.done.remove(&offset) {
                continue;
            }
            self.in_flight.insert(offset, 1);
            return Some(Acquired {
                offset,
                delivery_count: 1,
            });
        }
        None
    }

    fn peek(&mut self, end: i64) -> Option<i64> {
        self.compact();
        let fresh = (self.next < end).then_some(self.next);
        self.requeued
            .first()
            .copied()
            .into_iter()
            .chain(fresh)
            .min()
    }

    fn settle(&mut self, offset: i64) -> bool {
        let was = self.in_flight.remove(&offset).is_some() || self.requeued.remove(&offset);
        self.counts.remove(&offset);
        let fresh = offset >= self.next && self.done.insert(offset);
        self.compact();
        was || fresh
    }

    fn release(&mut self, offset: i64) -> Option<u32> {
        let count = self.in_flight.remove(&offset)?;
        self.requeued.insert(offset);
        self.counts.insert(offset, count);
        Some(count)
    }

    fn ready(&self, end: i64) -> u64 {
        let fresh = (end - self.next).max(0) as u64;
        let settled_ahead = self.done.range(self.next..end).count() as u64;
        self.requeued.len() as u64 + fresh - settled_ahead.min(fresh)
    }

    fn in_flight(&self) -> u64 {
        self.in_flight.len() as u64
    }

    fn purge(&mut self, end: i64) -> Vec<i64> {
        let mut purged: Vec<i64> = std::mem::take(&mut self.requeued).into_iter().collect();
        self.counts.clear();
        while self.next < end {
            if !self.done.remove(&self.next) {
                purged.push(self.next);
            }
            self.next += 1;
        }
        purged.sort_unstable();
        self.compact();
        purged
    }

    fn advance_start(&mut self, start: i64) {
        if start > self.next {
            self.next = start;
        }
        self.requeued.retain(|o| *o >= start);
        self.counts.retain(|o, _| *o >= start);
        self.compact();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_release_settle() {
        let mut c = LocalCursor::restore(0, [1]);
        assert_eq!(c.ready(4), 3);
        let a = c.acquire(4).unwrap();
        assert_eq!((a.offset, a.delivery_count), (0, 1));
        assert_eq!(
            c.acquire(4).unwrap().offset,
            2,
            "1 was settled before the restart"
        );
        assert_eq!(c.release(0), Some(1));
        assert_eq!(c.ready(4), 2);
        let again = c.acquire(4).unwrap();
        assert_eq!((again.offset, again.delivery_count), (0, 2));
        assert!(c.settle(0));
        assert!(c.settle(2));
        assert!(!c.settle(2));
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.peek(4), Some(3));
        assert!(c.settle(3), "a ready message can be settled (expired)");
        assert_eq!(c.acquire(4), None);
        assert_eq!(c.ready(4), 0);
    }

    #[test]
    fn purge_takes_only_ready() {
        let mut c = LocalCursor::default();
        let a = c.acquire(5).unwrap();
        assert_eq!(c.purge(5), vec![1, 2, 3, 4]);
        assert_eq!(c.in_flight(), 1);
        assert_eq!(c.release(a.offset), Some(1));
        assert_eq!(c.ready(5), 1);
    }
}
