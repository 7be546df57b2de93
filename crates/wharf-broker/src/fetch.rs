//! Fetch reads: one partition at a time within the response's byte budget (KIP-74), cut at
//! the last stable offset for read_committed. Front ends wait for data and encode answers;
//! the byte rules live here.
//!
//! Invariant: a fetch response holds at most `max_bytes` of records and each partition at
//! most its `partition_max_bytes`, except the first batch of the first partition that returns
//! data, which is returned whole whatever its size so a consumer can always make progress.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use wharf_record::BatchHeader;
use wharf_storage::stage;

use crate::txn::AbortedTxn;
use crate::{Broker, BrokerError, Partition};

/// What is left of one fetch response's byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchBudget {
    remaining: usize,
    /// No partition has returned records yet: the next one may exceed the limits by its
    /// first batch.
    first: bool,
}

impl FetchBudget {
    /// The budget of a response of at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            remaining: max_bytes,
            first: true,
        }
    }

    /// The bytes a partition with `partition_max_bytes` may return, and whether its first
    /// batch may exceed them.
    fn limit(&self, partition_max_bytes: usize) -> (usize, bool) {
        (partition_max_bytes.min(self.remaining), self.first)
    }

    fn spend(&mut self, bytes: usize) {
        if bytes > 0 {
            self.remaining = self.remaining.saturating_sub(bytes);
            self.first = false;
        }
    }
}

/// One partition's part of a fetch answer.
#[derive(Debug, Clone)]
pub struct PartitionRead {
    pub high_watermark: i64,
    pub last_stable: i64,
    pub log_start: i64,
    /// Whole stored batches, as written.
    pub records: Bytes,
    /// With read_committed: aborted transactions overlapping the records.
    pub aborted: Vec<AbortedTxn>,
}

/// A read that failed, with the partition's offsets as they were when it was tried.
#[derive(Debug)]
pub struct FetchError {
    pub error: BrokerError,
    pub high_watermark: i64,
    pub last_stable: i64,
    pub log_start: i64,
}

/// The prefix of `records` made of whole batches that end before offset `end` and fit in
/// `max_bytes` (`None`: no byte limit).
fn whole_batches(records: &Bytes, end: Option<i64>, max_bytes: Option<usize>) -> Bytes {
    let mut at = 0usize;
    while let Some(header) = records.get(at..).and_then(|b| BatchHeader::parse(b).ok()) {
        if header.is_empty()
            || end.is_some_and(|end| header.last_offset() >= end)
            || max_bytes.is_some_and(|max| at + header.len() > max)
        {
            break;
        }
        at += header.len();
    }
    records.slice(..at.min(records.len()))
}

impl Broker {
    /// Reads `partition` from `offset`, returning at most `partition_max_bytes` and what is
    /// left of `budget` (see the invariant at the top), and spends what it returns.
    /// read_committed stops at the last stable offset. Blocking (file reads).
    pub fn fetch_partition(
        &self,
        partition: &Partition,
        offset: i64,
        partition_max_bytes: usize,
        budget: &mut FetchBudget,
        read_committed: bool,
    ) -> Result<PartitionRead, FetchError> {
        // Only the shard's leader serves fetches (Kafka's routing; clients re-route).
        if let Err(error) = self.check_leader(partition) {
            return Err(FetchError {
                error,
                high_watermark: -1,
                last_stable: -1,
                log_start: -1,
            });
        }
        // The LSO first: the high watermark read after it is never below it.
        let last_stable = self.last_stable_offset(partition);
        let (high_watermark, log_start) = (
            self.high_watermark(&partition.log),
            partition.log.log_start_offset(),
        );
        let visible_end = if read_committed {
            last_stable
        } else {
            high_watermark
        };
        let (limit, may_exceed) = budget.limit(partition_max_bytes);
        let empty = PartitionRead {
            high_watermark,
            last_stable,
            log_start,
            records: Bytes::new(),
            aborted: Vec::new(),
        };
        if (limit == 0 && !may_exceed) || (offset >= visible_end && offset <= high_watermark) {
            return Ok(empty);
        }
        let read = partition.log.read(offset, limit).map_err(|e| FetchError {
            error: BrokerError::Storage(e),
            high_watermark,
            last_stable,
            log_start,
        })?;
        // Records past the committed high watermark are never served (a replicated shard log
        // writes them before a majority holds them); read after the log read, so locally it
        // covers every record read.
        let committed = self.high_watermark(&partition.log);
        let end = if read_committed {
            last_stable
        } else {
            committed
        };
        // Storage returns at least one batch; only the first returning partition keeps it
        // when it is over the limit.
        let first_len = BatchHeader::parse(&read.records).map_or(0, |h| h.len());
        let max_bytes = (!may_exceed || first_len <= limit).then_some(limit);
        let records = whole_batches(&read.records, Some(end), max_bytes);
        let aborted = if read_committed && !records.is_empty() {
            self.aborted_transactions(partition, offset, last_stable)
        } else {
            Vec::new()
        };
        budget.spend(records.len());
        Ok(PartitionRead {
            high_watermark: committed.max(high_watermark),
            last_stable,
            log_start: read.log_start_offset,
            records,
            aborted,
        })
    }
}

/// Stages of a fetch that delivers records (`wharf_storage::stage`).
struct FetchStages {
    /// From the publish that woke a parked fetch to the fetch running again.
    wake: metrics::Histogram,
    /// A read that returned records, with its hop to the blocking pool.
    read: metrics::Histogram,
}

static FETCH_STAGES: LazyLock<FetchStages> = LazyLock::new(|| FetchStages {
    wake: stage::fetch_histogram("wake"),
    read: stage::fetch_histogram("read"),
});

/// One partition a fetch asks for, in the order the answer lists them.
pub struct FetchTarget {
    pub topic: String,
    pub index: i32,
    /// `None` when the topic or partition does not exist.
    pub partition: Option<Partition>,
    pub offset: i64,
    pub max_bytes: usize,
}

impl FetchTarget {
    /// The target `topic`[`index`] of `broker`, found now.
    pub fn new(broker: &Broker, topic: String, index: i32, offset: i64, max_bytes: usize) -> Self {
        let partition = broker.partition(&topic, index).ok();
        Self {
            topic,
            index,
            partition,
            offset,
            max_bytes,
        }
    }
}

/// The limits of a whole fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchSpec {
    pub max_bytes: usize,
    pub min_bytes: usize,
    pub max_wait: Duration,
    pub read_committed: bool,
}

impl Broker {
    /// Reads every target within one byte budget (see the invariant at the top). With
    /// `min_bytes` above 0 it waits, parked on the partitions' high watermarks (no polling),
    /// until that many bytes are there, a partition fails, or `max_wait` passes; a last read
    /// at the deadline catches data that raced the timer. File reads run off the async
    /// workers.
    pub async fn fetch(
        self: &Arc<Self>,
        targets: Arc<Vec<FetchTarget>>,
        spec: FetchSpec,
    ) -> Vec<Result<PartitionRead, FetchError>> {
        let deadline = tokio::time::Instant::now() + spec.max_wait;
        let notify = Arc::new(Notify::new());
        // A read that may reach older segments goes off the async workers. One that reads only
        // what the active segments hold, or nothing (a consumer at the log end), and any read
        // after a publish woke this fetch, reads bytes just written (page cache): in place,
        // without a hop to the blocking pool (ADR 0017).
        let mut in_place = targets.iter().all(|t| {
            t.partition
                .as_ref()
                .is_none_or(|p| p.log.reads_only_active(t.offset))
        });
        loop {
            // Taken before registering: the publish that wakes this fetch comes after them.
            let marks: Vec<_> = if stage::enabled() {
                targets
                    .iter()
                    .filter_map(|t| t.partition.as_ref().map(|p| (p, p.log.publish_mark())))
                    .collect()
            } else {
                Vec::new()
            };
            for t in targets.iter() {
                if let Some(p) = &t.partition {
                    p.log.register_waiter(&notify);
                }
            }
            let read_started = stage::now();
            let results = if in_place {
                self.read_targets_now(&targets, spec)
            } else {
                self.read_targets(&targets, spec).await
            };
            let bytes: usize = results
                .iter()
                .map(|r| r.as_ref().map_or(0, |r| r.records.len()))
                .sum();
            if bytes > 0 {
                stage::record_since(&FETCH_STAGES.read, read_started);
            }
            let failed = results.iter().any(Result::is_err);
            if spec.min_bytes == 0
                || bytes >= spec.min_bytes
                || failed
                || tokio::time::Instant::now() >= deadline
            {
                return results;
            }
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                return self.read_targets(&targets, spec).await;
            }
            let woken_by = marks
                .iter()
                .filter_map(|(p, mark)| p.log.first_publish_after(*mark))
                .min();
            stage::record_since(&FETCH_STAGES.wake, woken_by);
            in_place = true;
        }
    }

    /// Reads every target on this thread (see `fetch`: only data in the page cache); the
    /// time is the poll's own, so `work::measure` counts it already.
    fn read_targets_now(
        &self,
        targets: &[FetchTarget],
        spec: FetchSpec,
    ) -> Vec<Result<PartitionRead, FetchError>> {
        self.read_all(targets, spec)
    }

    fn read_all(
        &self,
        targets: &[FetchTarget],
        spec: FetchSpec,
    ) -> Vec<Result<PartitionRead, FetchError>> {
        let mut budget = FetchBudget::new(spec.max_bytes);
        targets
            .iter()
            .map(|t| match &t.partition {
                Some(p) => {
                    self.fetch_partition(p, t.offset, t.max_bytes, &mut budget, spec.read_committed)
                }
                None => Err(FetchError {
                    error: BrokerError::UnknownTopicOrPartition {
                        topic: t.topic.clone(),
                        partition: t.index,
                    },
                    high_watermark: -1,
                    last_stable: -1,
                    log_start: -1,
                }),
            })
            .collect()
    }

    async fn read_targets(
        self: &Arc<Self>,
        targets: &Arc<Vec<FetchTarget>>,
        spec: FetchSpec,
    ) -> Vec<Result<PartitionRead, FetchError>> {
        let broker = self.clone();
        let batch = targets.clone();
        let read = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let reads = broker.read_all(&batch, spec);
            (reads, started.elapsed())
        })
        .await
        .map(|(reads, work)| {
            crate::work::charge(work);
            reads
        });
        read.unwrap_or_else(|error| {
            tracing::error!(%error, "fetch read task failed");
            targets
                .iter()
                .map(|_| {
                    Err(FetchError {
                        error: BrokerError::InvalidRequest("fetch read task failed".into()),
                        high_watermark: -1,
                        last_stable: -1,
                        log_start: -1,
                    })
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_record::{set_base_offset, BatchBuilder};

    /// Batches of one record each, at offsets 0, 1, 2, ...
    fn batches(sizes: &[usize]) -> Bytes {
        let mut out = Vec::new();
        for (offset, &size) in (0i64..).zip(sizes) {
            let mut b = BatchBuilder::new(0);
            b.push(None, Some(&vec![0u8; size]), &[], 0);
            let mut batch = b.build();
            set_base_offset(&mut batch, offset);
            out.extend_from_slice(&batch);
        }
        Bytes::from(out)
    }

    #[test]
    fn budget_lets_only_the_first_returning_partition_exceed() {
        let mut budget = FetchBudget::new(1000);
        assert_eq!(budget.limit(600), (600, true));
        budget.spend(0);
        assert_eq!(
            budget.limit(600),
            (600, true),
            "an empty partition does not count"
        );
        budget.spend(1500);
        assert_eq!(budget.limit(600), (0, false));
        let mut budget = FetchBudget::new(1000);
        budget.spend(700);
        assert_eq!(budget.limit(600), (300, false));
    }

    #[test]
    fn whole_batches_stop_at_the_byte_limit_and_the_stable_offset() {
        let records = batches(&[100, 100, 100]);
        let one = BatchHeader::parse(&records).unwrap().len();
        assert_eq!(whole_batches(&records, None, None).len(), 3 * one);
        assert_eq!(whole_batches(&records, None, Some(2 * one)).len(), 2 * one);
        assert_eq!(whole_batches(&records, None, Some(2 * one - 1)).len(), one);
        assert_eq!(whole_batches(&records, None, Some(one - 1)).len(), 0);
        assert_eq!(whole_batches(&records, Some(1), None).len(), one);
        assert_eq!(whole_batches(&records, Some(0), Some(10 * one)).len(), 0);
    }
}
