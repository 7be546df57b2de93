//! The produce path: validate every batch (length, magic, CRC-32C, records count against
//! offset range, size limit), stamp `LogAppendTime` where configured, append with the
//! durability `acks` asks for. A batch with a producer id goes through the producer state
//! first (`producer`): a retry is answered with the original's offsets instead of being
//! written again. Records and bytes in are counted per topic once the append succeeds.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use wharf_record::{set_log_append_time, split_batches, BatchHeader, RecordError};
use wharf_storage::{Durability, PendingAppend};

use crate::producer::{Appending, BatchIdentity};
use crate::scheduled::{DedupPending, Diverted, Routed};
use crate::topic::TopicCounters;
use crate::{Broker, BrokerError, MessageType};

/// Kafka's `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: nobody waits.
    None,
    /// acks=1: complete once written to the OS.
    Leader,
    /// acks=all: complete once fdatasync-ed.
    All,
}

impl Acks {
    pub fn from_kafka(acks: i16) -> Option<Self> {
        match acks {
            0 => Some(Self::None),
            1 => Some(Self::Leader),
            -1 => Some(Self::All),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub base_offset: i64,
    /// -1 unless the topic uses `LogAppendTime`.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// Kafka's check on a compacted topic: every record has a key. Records of compressed batches
/// cannot be read here (no codec in Wharf) and are let through; the cleaner keeps such batches
/// whole.
fn reject_keyless(records: &[u8], ranges: &[std::ops::Range<usize>]) -> Result<(), String> {
    for range in ranges {
        let Some(header) = records
            .get(range.clone())
            .and_then(|b| BatchHeader::parse(b).ok())
        else {
            continue;
        };
        let Ok(iter) = wharf_record::RecordIter::new(&header) else {
            continue;
        };
        for record in iter {
            let record = record.map_err(|e| e.to_string())?;
            if record.key.is_none() {
                return Err(format!(
                    "record at offset delta {} has no key; compacted topics require keys",
                    record.offset - header.base_offset()
                ));
            }
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Broker {
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: Acks,
    ) -> Result<ProduceOutcome, BrokerError> {
        self.submit_produce(topic, partition, records, acks)?
            .wait()
            .await
    }

    /// Validates and hands the batches to storage at once; await the result with `wait`.
    /// A request's partitions submitted together share one group commit.
    pub fn submit_produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: Acks,
    ) -> Result<PendingProduce, BrokerError> {
        let t = self
            .topic(topic)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            })?;
        let p = t
            .partition(partition)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            })?
            .clone();
        // A follower refuses before touching producer state: the client re-routes.
        self.check_leader(&p)?;
        let ranges = validate_batches(&records).map_err(|source| BrokerError::CorruptMessage {
            topic: topic.to_string(),
            partition,
            source,
        })?;
        let max = t.config.max_message_bytes.max(0) as usize;
        if let Some(r) = ranges.iter().find(|r| r.len() > max) {
            return Err(BrokerError::MessageTooLarge {
                topic: topic.to_string(),
                size: r.len(),
                max,
            });
        }
        if t.config.cleanup_compact {
            reject_keyless(&records, &ranges).map_err(|reason| BrokerError::InvalidRecord {
                topic: topic.to_string(),
                partition,
                reason,
            })?;
        }
        // Kafka's min.insync.replicas: acks=all needs that many in-sync replicas (a single
        // node has one; a 3-node shard group the voters caught up with its leader).
        if acks == Acks::All
            && t.config.min_insync_replicas > 1
            && (self.partition_role(&p).isr.len() as i64) < i64::from(t.config.min_insync_replicas)
        {
            return Err(BrokerError::NotEnoughReplicas {
                topic: topic.to_string(),
                required: t.config.min_insync_replicas,
            });
        }
        let record_count: u64 = ranges
            .iter()
            .filter_map(|r| records.get(r.clone()))
            .filter_map(|b| BatchHeader::parse(b).ok())
            .map(|h| u64::try_from(h.records_count()).unwrap_or(0))
            .sum();
        let byte_count = records.len() as u64;
        let identity = idempotent_identity(&records, &ranges).map_err(|reason| match reason {
            IdentityError::NotOneBatch => BrokerError::InvalidRequest(format!(
                "{topic}[{partition}]: a produce with a producer id carries exactly one batch"
            )),
        })?;
        let mut dedup = None;
        if t.config.message_type != MessageType::Normal || t.config.dedup_window_ms > 0 {
            match self.divert(&t, &p, &records, &ranges, identity)? {
                Routed::Append(pending_ids) => dedup = pending_ids,
                Routed::Duplicate(offset) => {
                    return Ok(PendingProduce {
                        pending: Waiting::Duplicate(offset),
                        log_append_time: -1,
                        counters: p.counters.clone(),
                        record_count: 0,
                        byte_count: 0,
                        dedup: None,
                    });
                }
                Routed::Diverted(diverted, pending_ids) => {
                    let counted = !matches!(diverted, Diverted::Producer(Appending::Done(_)));
                    return Ok(PendingProduce {
                        pending: Waiting::Diverted(diverted),
                        log_append_time: -1,
                        counters: p.counters.clone(),
                        record_count: if counted { record_count } else { 0 },
                        byte_count: if counted { byte_count } else { 0 },
                        dedup: pending_ids,
                    });
                }
            }
        }
        let mut log_append_time = -1;
        let mut records = records;
        if t.config.log_append_time {
            // The one case where the broker rewrites CRC-covered bytes: copy, stamp, re-CRC.
            log_append_time = now_ms();
            let mut stamped = BytesMut::from(&records[..]);
            for r in ranges {
                set_log_append_time(&mut stamped[r], log_append_time);
            }
            records = stamped.freeze();
        }
        let durability = if acks == Acks::All {
            Durability::Synced
        } else {
            Durability::Written
        };
        let shard_log = self.shard_log(&p.log).map_err(BrokerError::from);
        let submitted = match (shard_log, identity) {
            (Err(e), _) => Err(e),
            (Ok(shard_log), None) => shard_log
                .append(&p.log, records, durability)
                .map(|pending| (Waiting::Storage(pending), record_count, byte_count))
                .map_err(BrokerError::from),
            (Ok(shard_log), Some((batch, transactional))) => {
                let checked = if transactional {
                    self.check_transactional_produce(
                        batch.producer_id,
                        batch.epoch,
                        topic,
                        partition,
                    )
                } else {
                    Ok(())
                };
                checked.and_then(|()| {
                    self.producers()
                        .submit(&p.log, batch, transactional, || {
                            shard_log.append(&p.log, records, durability)
                        })
                        .map(|appending| match appending {
                            // A duplicate of a written batch: nothing is written, nothing
                            // counted.
                            done @ Appending::Done(_) => (Waiting::Producer(done), 0, 0),
                            wait => (Waiting::Producer(wait), record_count, byte_count),
                        })
                })
            }
        };
        let (pending, record_count, byte_count) = match submitted {
            Ok(submitted) => submitted,
            Err(e) => {
                // Not stored: its message ids must not count as stored.
                if let Some(dedup) = dedup {
                    dedup.finish(None);
                }
                return Err(e);
            }
        };
        Ok(PendingProduce {
            pending,
            log_append_time,
            counters: p.counters.clone(),
            record_count,
            byte_count,
            dedup,
        })
    }
}

/// Kafka's LogValidator checks on a producer's batches: at least one batch, each framed with
/// magic 2 and a good CRC (`split_batches`), each with a records count that matches its offset
/// range. Returns each batch's byte range.
fn validate_batches(records: &[u8]) -> Result<Vec<std::ops::Range<usize>>, RecordError> {
    let ranges = split_batches(records)?;
    if ranges.is_empty() {
        return Err(RecordError::NoBatch);
    }
    for range in &ranges {
        let bytes = records.get(range.clone()).ok_or(RecordError::Truncated {
            need: range.end,
            have: records.len(),
        })?;
        BatchHeader::parse(bytes)?.check_records_count()?;
    }
    Ok(ranges)
}

enum IdentityError {
    NotOneBatch,
}

/// The producer identity of an idempotent produce (`None` without a producer id) and
/// whether its batch is transactional. Like Kafka, such a produce must hold exactly one
/// batch.
fn idempotent_identity(
    records: &Bytes,
    ranges: &[std::ops::Range<usize>],
) -> Result<Option<(BatchIdentity, bool)>, IdentityError> {
    let headers: Vec<BatchHeader<'_>> = ranges
        .iter()
        .filter_map(|r| records.get(r.clone()))
        .filter_map(|b| BatchHeader::parse(b).ok())
        .collect();
    if !headers.iter().any(|h| h.producer_id() >= 0) {
        return Ok(None);
    }
    match headers.as_slice() {
        [h] => Ok(Some((
            BatchIdentity::new(
                h.producer_id(),
                h.producer_epoch(),
                h.base_sequence(),
                h.last_offset_delta(),
            ),
            h.is_transactional(),
        ))),
        _ => Err(IdentityError::NotOneBatch),
    }
}

/// Where a produce's outcome comes from.
enum Waiting {
    Storage(PendingAppend),
    Producer(Appending),
    /// Stored in `__wharf_scheduled`: no offset in the target partition yet.
    Diverted(Diverted),
    /// Every record's message id was stored before, the first at this offset.
    Duplicate(i64),
}

/// A produce handed to storage (or recognised as a retry).
pub struct PendingProduce {
    pending: Waiting,
    log_append_time: i64,
    counters: Arc<TopicCounters>,
    record_count: u64,
    byte_count: u64,
    /// Message ids this produce stores, with a dedup window.
    dedup: Option<DedupPending>,
}

impl PendingProduce {
    pub async fn wait(self) -> Result<ProduceOutcome, BrokerError> {
        let waited = match self.pending {
            Waiting::Storage(pending) => pending
                .wait()
                .await
                .map(|i| (i, false))
                .map_err(BrokerError::from),
            Waiting::Producer(appending) => appending
                .wait()
                .await
                .map(|i| (i, false))
                .map_err(BrokerError::from),
            Waiting::Diverted(Diverted::Storage(pending)) => pending
                .wait()
                .await
                .map(|i| (i, true))
                .map_err(BrokerError::from),
            Waiting::Diverted(Diverted::Producer(appending)) => appending
                .wait()
                .await
                .map(|i| (i, true))
                .map_err(BrokerError::from),
            Waiting::Duplicate(base_offset) => {
                return Ok(ProduceOutcome {
                    base_offset,
                    log_append_time: -1,
                    log_start_offset: -1,
                })
            }
        };
        if let Some(dedup) = self.dedup {
            dedup.finish(waited.as_ref().ok().map(|(info, _)| info.base_offset));
        }
        let (info, diverted) = waited?;
        self.counters.records_in.increment(self.record_count);
        self.counters.bytes_in.increment(self.byte_count);
        Ok(ProduceOutcome {
            // A diverted record gets its offset when it is delivered.
            base_offset: if diverted { -1 } else { info.base_offset },
            log_append_time: self.log_append_time,
            log_start_offset: if diverted { -1 } else { info.log_start_offset },
        })
    }
}

#[cfg(test)]
mod tests;
