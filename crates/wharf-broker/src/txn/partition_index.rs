//! One partition's transactions, rebuilt from its batch headers: the first offset of each
//! producer's open transaction and the offset ranges of aborted transactions. Invariant: the
//! last stable offset is the first offset of the earliest open transaction, or the high
//! watermark when none is open, so a read_committed reader never passes an open transaction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An aborted transaction as Fetch reports it: the producer and its first offset; the
/// abort marker sits at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// The first offset of an open transaction; `exact` is false while its first batch is on
/// its way to storage and `first_offset` is only a lower bound (the high watermark when the
/// batch was submitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct OpenTxn {
    first_offset: i64,
    exact: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTxnIndex {
    /// Producer id → its open transaction.
    open: BTreeMap<i64, OpenTxn>,
    /// Ordered by `last_offset` (markers arrive in log order).
    aborted: Vec<AbortedTxn>,
}

impl PartitionTxnIndex {
    /// A transactional data batch at `base_offset` (any retry of the same transaction
    /// keeps the first offset).
    pub fn on_data(&mut self, producer_id: i64, base_offset: i64) {
        self.open.entry(producer_id).or_insert(OpenTxn {
            first_offset: base_offset,
            exact: true,
        });
    }

    /// A transactional batch is handed to storage; it will land at or after
    /// `high_watermark`, so the last stable offset stops there until it lands.
    pub fn on_submit(&mut self, producer_id: i64, high_watermark: i64) {
        self.open.entry(producer_id).or_insert(OpenTxn {
            first_offset: high_watermark,
            exact: false,
        });
    }

    /// A submitted transactional batch landed at `base_offset`. Changes nothing if the
    /// transaction was meanwhile ended by a marker.
    pub fn on_written(&mut self, producer_id: i64, base_offset: i64) {
        if let Some(open) = self.open.get_mut(&producer_id) {
            if !open.exact {
                *open = OpenTxn {
                    first_offset: base_offset,
                    exact: true,
                };
            }
        }
    }

    /// A commit or abort marker of `producer_id` at `offset`. A marker without an open
    /// transaction (written again after a restart) changes nothing.
    pub fn on_marker(&mut self, producer_id: i64, offset: i64, commit: bool) {
        let Some(OpenTxn { first_offset, .. }) = self.open.remove(&producer_id) else {
            return;
        };
        if !commit {
            self.aborted.push(AbortedTxn {
                producer_id,
                first_offset,
                last_offset: offset,
            });
        }
    }

    /// The last stable offset given the partition's high watermark.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.open
            .values()
            .map(|o| o.first_offset)
            .min()
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Whether `producer_id` has an open transaction here.
    pub fn is_open(&self, producer_id: i64) -> bool {
        self.open.contains_key(&producer_id)
    }

    /// Aborted transactions that overlap `[from, to)`: what a read_committed fetch of that
    /// range must be told to skip.
    pub fn aborted_in(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted ranges that end before the log start (retention, DeleteRecords).
    pub fn truncate_before(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lso_stops_at_the_earliest_open_transaction() {
        let mut index = PartitionTxnIndex::default();
        assert_eq!(index.last_stable_offset(10), 10);
        index.on_data(7, 10);
        index.on_data(8, 12);
        index.on_data(7, 14);
        assert_eq!(index.last_stable_offset(16), 10);
        index.on_marker(7, 16, true);
        assert_eq!(index.last_stable_offset(17), 12);
        index.on_marker(8, 17, false);
        assert_eq!(index.last_stable_offset(18), 18);
        assert!(!index.is_open(7));
    }

    #[test]
    fn aborted_ranges_are_reported_where_they_overlap_the_fetch() {
        let mut index = PartitionTxnIndex::default();
        index.on_data(1, 0);
        index.on_marker(1, 5, false);
        index.on_data(2, 6);
        index.on_marker(2, 8, true);
        index.on_data(3, 9);
        index.on_marker(3, 12, false);
        let aborted = |index: &PartitionTxnIndex, from, to| -> Vec<i64> {
            index
                .aborted_in(from, to)
                .iter()
                .map(|a| a.producer_id)
                .collect()
        };
        assert_eq!(aborted(&index, 0, 13), vec![1, 3]);
        assert_eq!(aborted(&index, 6, 9), Vec::<i64>::new());
        assert_eq!(aborted(&index, 5, 6), vec![1]);
        assert_eq!(aborted(&index, 10, 11), vec![3]);
        index.truncate_before(6);
        assert_eq!(aborted(&index, 0, 13), vec![3]);
    }

    #[test]
    fn a_batch_in_flight_holds_the_lso_at_the_high_watermark_of_its_submission() {
        let mut index = PartitionTxnIndex::default();
        index.on_submit(4, 20);
        assert_eq!(index.last_stable_offset(25), 20);
        index.on_written(4, 23);
        index.on_submit(4, 30);
        assert_eq!(index.last_stable_offset(31), 23);
        index.on_marker(4, 31, false);
        index.on_written(4, 30);
        assert_eq!(
            index.last_stable_offset(32),
            32,
            "a late write reopens nothing"
        );
        assert_eq!(index.aborted_in(0, 40)[0].first_offset, 23);
    }

    #[test]
    fn a_repeated_marker_changes_nothing() {
        let mut index = PartitionTxnIndex::default();
        index.on_data(1, 0);
        index.on_marker(1, 1, false);
        index.on_marker(1, 2, false);
        assert_eq!(index.aborted_in(0, 10).len(), 1);
        assert_eq!(index.last_stable_offset(3), 3);
    }
}
