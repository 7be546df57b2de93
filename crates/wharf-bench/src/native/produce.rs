//! The native produce load. Ahead of time: one record batch of fixed-size values (built once,
//! the same bytes for every partition: the broker assigns offsets), and Produce requests that
//! cover every partition once, each encoded once. A request carries consecutive partitions,
//! across topics, up to [`REQUEST_BYTES`] of batches, as a Kafka client fills one request per
//! broker with every partition's ready batch: 8 partitions of 64 KiB, or 85 of the 6 KiB
//! batches 10,000 partitions get. Then each connection cycles through those requests with
//! `in_flight` of them outstanding and checks every answer: no error code, every partition
//! answered, base offsets increasing per partition on the connection. At the end the acked
//! offset ranges of each partition must not overlap (`acks`), and (done by the caller)
//! reading the topics back must find every acked record.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use wharf_record::BatchBuilder;

use super::acks::{merge_ranges, PartitionKey, Tally};
use super::conn::{self, Prepared};
use super::{topic_name, PRODUCE_VERSION};
use crate::cpu::Sample;
use crate::load::{value_of, ProduceLoad, ProduceOutcome};
use crate::progress::Progress;
use crate::stats::mb_per_sec;

/// Target size of one partition's batch.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Batch bytes one Produce request carries at most (unless one batch is larger): 8 full
/// batches.
pub const REQUEST_BYTES: usize = 8 * BATCH_BYTES;
/// Partitions one Produce request carries at most, however small the batches.
const MAX_PARTITIONS_PER_REQUEST: usize = 1000;
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// One distinct Produce request and the partitions it writes to, in request order.
pub struct ProduceSlot {
    pub request: Prepared,
    pub partitions: Vec<PartitionKey>,
}

/// Records per batch: [`BATCH_BYTES`] worth, less when many partitions would exceed the
/// memory budget, at least one.
pub fn records_per_batch(value_bytes: usize, total_partitions: usize, budget: usize) -> i32 {
    (batch_target(total_partitions, budget) / value_bytes.max(1)).clamp(1, 1 << 20) as i32
}

/// One partition's batch target: [`BATCH_BYTES`], or its share of the memory budget.
fn batch_target(total_partitions: usize, budget: usize) -> usize {
    BATCH_BYTES.min(budget / total_partitions.max(1))
}

/// One batch of `count` copies of `value`, no key, base offset 0, valid CRC-32C.
pub fn batch(value: &[u8], count: i32, timestamp_ms: i64) -> Bytes {
    let mut builder = BatchBuilder::new(timestamp_ms);
    for _ in 0..count {
        builder.push(None, Some(value), &[], timestamp_ms);
    }
    Bytes::from(builder.build())
}

/// One batch of `values`, in order.
pub fn batch_of(values: &[Vec<u8>], timestamp_ms: i64) -> Bytes {
    let mut builder = BatchBuilder::new(timestamp_ms);
    for value in values {
        builder.push(None, Some(value), &[], timestamp_ms);
    }
    Bytes::from(builder.build())
}

/// Partitions per request: [`REQUEST_BYTES`] of batch targets (8 at 64 KiB), at least one.
pub fn partitions_per_request(total_partitions: usize, budget: usize) -> usize {
    (REQUEST_BYTES / batch_target(total_partitions, budget).max(1))
        .clamp(1, MAX_PARTITIONS_PER_REQUEST)
}

/// The distinct requests: every partition of every topic once, in order, `per_request`
/// partitions to a request (a request may span topics).
pub fn build_slots(
    topics: &[String],
    partition_counts: &[i32],
    batch: &Bytes,
    acks: i16,
    per_request: usize,
) -> anyhow::Result<Vec<ProduceSlot>> {
    let every: Vec<PartitionKey> = partition_counts
        .iter()
        .enumerate()
        .flat_map(|(topic_index, &count)| (0..count).map(move |p| (topic_index, p)))
        .collect();
    let mut slots = Vec::new();
    for group in every.chunks(per_request.max(1)) {
        let mut topic_data: Vec<TopicProduceData> = Vec::new();
        for run in group.chunk_by(|a, b| a.0 == b.0) {
            topic_data.push(
                TopicProduceData::default()
                    .with_name(topic_name(&topics[run[0].0]))
                    .with_partition_data(
                        run.iter()
                            .map(|&(_, p)| {
                                PartitionProduceData::default()
                                    .with_index(p)
                                    .with_records(Some(batch.clone()))
                            })
                            .collect(),
                    ),
            );
        }
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(topic_data);
        slots.push(ProduceSlot {
            request: Prepared::encode(&request, PRODUCE_VERSION)?,
            partitions: group.to_vec(),
        });
    }
    Ok(slots)
}

/// The outcome of a native load plus what reading it back needs.
pub struct NativeProduced {
    pub outcome: ProduceOutcome,
    pub partition_counts: Vec<i32>,
    /// Acked records per `(topic index, partition)`.
    pub acked: BTreeMap<PartitionKey, i64>,
    pub notes: Vec<String>,
}

/// Runs `load` with the native client to its byte or time limit.
pub fn run(load: &ProduceLoad, label: &str) -> anyhow::Result<NativeProduced> {
    let runtime = super::runtime()?;
    runtime.block_on(run_async(load, label))
}

struct Shared {
    stop: AtomicBool,
    sent_bytes: AtomicU64,
    acked_bytes: AtomicU64,
}

async fn run_async(load: &ProduceLoad, label: &str) -> anyhow::Result<NativeProduced> {
    let partition_counts = super::partition_counts(&load.bootstrap, &load.topics).await?;
    let total: usize = partition_counts.iter().map(|&c| c.max(0) as usize).sum();
    let records = records_per_batch(load.value_bytes, total, load.encoded_budget);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let batch = batch(&value_of(load.value_bytes), records, now_ms);
    let acks = if load.acks == "all" { -1 } else { 1 };
    let per_request = partitions_per_request(total, load.encoded_budget);
    let slots: Arc<[ProduceSlot]> =
        build_slots(&load.topics, &partition_counts, &batch, acks, per_request)?.into();
    let topics: Arc<[String]> = load.topics.clone().into();
    let value_bytes_per_batch = records as u64 * load.value_bytes as u64;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        sent_bytes: AtomicU64::new(0),
        acked_bytes: AtomicU64::new(0),
    });
    let mut connections = Vec::new();
    for _ in 0..load.producers {
        connections.push(conn::connect(&load.bootstrap).await?);
    }

    let max_duration = Duration::from_secs_f64(load.max_seconds);
    let cpu_start = Sample::take(load.broker_pid);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, connection) in connections.into_iter().enumerate() {
        let (slots, topics, shared) = (slots.clone(), topics.clone(), shared.clone());
        let (in_flight, max_bytes) = (load.in_flight.max(1), load.max_bytes);
        tasks.spawn(async move {
            drive(
                index,
                connection,
                &slots,
                &topics,
                records,
                value_bytes_per_batch,
                in_flight,
                max_bytes,
                &shared,
            )
            .await
            .with_context(|| format!("native producer {index}"))
        });
    }
    let progress = Progress::new(label, max_duration);
    let mut tallies = Vec::new();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(result) => tallies.push(result.context("a native producer task panicked")??),
            },
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                let elapsed = start.elapsed();
                if elapsed >= max_duration {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                let by_bytes = shared.sent_bytes.load(Ordering::Relaxed) as f64 / load.max_bytes.max(1) as f64;
                let acked = shared.acked_bytes.load(Ordering::Relaxed);
                progress.update(
                    by_bytes.max(elapsed.as_secs_f64() / load.max_seconds.max(f64::EPSILON)),
                    format!("{:.0} MB/s acked", mb_per_sec(acked, elapsed.as_secs_f64())),
                );
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = Sample::take(load.broker_pid).since(&cpu_start);
    progress.finish();

    let mut merged: BTreeMap<PartitionKey, Vec<(i64, i64)>> = BTreeMap::new();
    let (mut acked_records, mut failed_records, mut first_error) = (0, 0, None);
    for tally in tallies {
        acked_records += tally.acked_records;
        failed_records += tally.failed_records;
        first_error = first_error.or(tally.first_error);
        for (key, ranges) in tally.acked {
            merged.entry(key).or_default().extend(ranges);
        }
    }
    let mut notes = Vec::new();
    let mut acked = BTreeMap::new();
    for (key, ranges) in merged {
        let (total, gaps) = merge_ranges(ranges)
            .map_err(|error| anyhow::anyhow!("Produce: {}/{}: {error}", topics[key.0], key.1))?;
        if gaps && failed_records == 0 {
            notes.push(format!(
                "{}/{}: acked offsets leave gaps",
                topics[key.0], key.1
            ));
        }
        acked.insert(key, total);
    }
    Ok(NativeProduced {
        outcome: ProduceOutcome {
            acked_bytes: acked_records * load.value_bytes as u64,
            acked_messages: acked_records,
            failed_messages: failed_records,
            first_error,
            seconds,
            cpu,
            batch_records: Some(records),
        },
        partition_counts,
        acked,
        notes,
    })
}

/// One connection: keeps `in_flight` requests outstanding until the limit, then drains.
#[allow(clippy::too_many_arguments)]
async fn drive(
    index: usize,
    (mut writer, mut reader): (conn::RequestWriter, conn::ResponseReader),
    slots: &[ProduceSlot],
    topics: &[String],
    records: i32,
    value_bytes_per_batch: u64,
    in_flight: usize,
    max_bytes: u64,
    shared: &Shared,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut outstanding = VecDeque::with_capacity(in_flight);
    // Connections start on different requests when there are several.
    let mut next = index;
    loop {
        while outstanding.len() < in_flight
            && !shared.stop.load(Ordering::Relaxed)
            && shared.sent_bytes.load(Ordering::Relaxed) < max_bytes
        {
            let slot_index = next % slots.len();
            next += 1;
            let slot = &slots[slot_index];
            writer.send(&slot.request).await?;
            shared.sent_bytes.fetch_add(
                value_bytes_per_batch * slot.partitions.len() as u64,
                Ordering::Relaxed,
            );
            outstanding.push_back(slot_index);
        }
        writer.flush().await?;
        let Some(slot_index) = outstanding.pop_front() else {
            return Ok(tally);
        };
        let response = reader.receive::<ProduceRequest>(PRODUCE_VERSION).await?;
        let before = tally.acked_records;
        tally.check(topics, &slots[slot_index], records, &response)?;
        let newly = (tally.acked_records - before) * (value_bytes_per_batch / records as u64);
        shared.acked_bytes.fetch_add(newly, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Buf;
    use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable};
    use wharf_record::{BatchHeader, RecordIter};

    use super::*;

    fn topics() -> Vec<String> {
        vec!["a".to_string(), "b".to_string()]
    }

    #[test]
    fn batch_size_follows_the_target_and_shrinks_over_many_partitions() {
        assert_eq!(records_per_batch(1024, 8, 64 << 20), 64);
        assert_eq!(records_per_batch(100, 8, 64 << 20), 655);
        assert_eq!(records_per_batch(1024, 10_000, 64 << 20), 6);
        assert_eq!(records_per_batch(1_000_000, 1, 64 << 20), 1);
    }

    #[test]
    fn requests_carry_eight_full_batches_or_as_many_small_ones() {
        assert_eq!(partitions_per_request(8, 64 << 20), 8);
        assert_eq!(partitions_per_request(1, 64 << 20), 8);
        assert_eq!(partitions_per_request(10_000, 64 << 20), 78);
        assert_eq!(partitions_per_request(10_000, 640 << 20), 8);
        assert_eq!(partitions_per_request(1_000_000, 1 << 20), 1000);
    }

    #[test]
    fn the_batch_is_valid_and_holds_the_values() {
        let batch = batch(b"value", 3, 1_000);
        let header = BatchHeader::parse_checked(&batch).unwrap();
        assert_eq!(header.records_count(), 3);
        let values: Vec<_> = RecordIter::new(&header)
            .unwrap()
            .map(|r| r.unwrap().value.unwrap().to_vec())
            .collect();
        assert_eq!(values, vec![b"value".to_vec(); 3]);
    }

    #[test]
    fn slots_cover_every_partition_once_and_decode_as_produce_requests() {
        let batch = batch(b"v", 2, 0);
        let slots = build_slots(&topics(), &[10, 3], &batch, -1, 8).unwrap();
        let covered: Vec<PartitionKey> = slots.iter().flat_map(|s| s.partitions.clone()).collect();
        let expected: Vec<PartitionKey> = (0..10)
            .map(|p| (0, p))
            .chain((0..3).map(|p| (1, p)))
            .collect();
        assert_eq!(covered, expected);
        assert_eq!(slots.len(), 2);
        let mut frame = Bytes::from(slots[1].request.to_frame(9));
        frame.advance(4);
        assert_eq!(
            decode_request_header_from_buffer(&mut frame)
                .unwrap()
                .correlation_id,
            9
        );
        let request = ProduceRequest::decode(&mut frame, PRODUCE_VERSION).unwrap();
        assert_eq!(request.acks, -1);
        let shape: Vec<(&str, Vec<i32>)> = request
            .topic_data
            .iter()
            .map(|t| {
                let indices = t.partition_data.iter().map(|p| p.index).collect();
                (t.name.0.as_str(), indices)
            })
            .collect();
        assert_eq!(shape, vec![("a", vec![8, 9]), ("b", vec![0, 1, 2])]);
        assert_eq!(
            request.topic_data[1].partition_data[0].records.as_ref(),
            Some(&batch)
        );
    }
}
