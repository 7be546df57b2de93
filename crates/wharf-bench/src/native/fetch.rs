//! Reading partitions back with Fetch: every batch's CRC-32C is checked and every record
//! counted. One connection; the partitions are dealt into `in_flight` groups, each with one
//! Fetch outstanding, so several are in flight while each partition's next offset is known.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use wharf_record::{BatchHeader, RecordError, RecordIter};

use super::conn::{self, Prepared};
use super::{error_name, topic_name, FETCH_VERSION};
use crate::cpu::{CpuUsage, Sample};
use crate::progress::Progress;
use crate::stats::mb_per_sec;

/// librdkafka's defaults: fetch.max.bytes and max.partition.fetch.bytes.
const MAX_BYTES: i32 = 52_428_800;
const PARTITION_MAX_BYTES: i32 = 1_048_576;
/// How long the broker may wait for data before answering.
pub const MAX_WAIT_MS: i32 = 100;

/// What one Fetch answer held for one partition, from `fetch_offset` on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chunk {
    pub records: i64,
    pub value_bytes: u64,
    /// The offset after the last whole batch, when there was one.
    pub next_offset: Option<i64>,
}

/// Walks the batches of one partition's `records`: checks each CRC, counts the records at or
/// after `fetch_offset` and their value bytes. A batch cut short at the end is allowed (the
/// broker may stop at its byte limit); any other damage is an error.
pub fn read_batches(mut bytes: &[u8], fetch_offset: i64) -> Result<Chunk, RecordError> {
    let mut chunk = Chunk::default();
    while !bytes.is_empty() {
        let batch = match BatchHeader::parse(bytes) {
            Ok(batch) => batch,
            Err(RecordError::Truncated { .. }) => break,
            Err(error) => return Err(error),
        };
        batch.verify_crc()?;
        for record in RecordIter::new(&batch)? {
            let record = record?;
            if record.offset >= fetch_offset {
                chunk.records += 1;
                chunk.value_bytes += record.value.map_or(0, <[u8]>::len) as u64;
            }
        }
        chunk.next_offset = Some(batch.last_offset() + 1);
        bytes = &bytes[batch.len()..];
    }
    Ok(chunk)
}

/// A Fetch of `partitions` (`(topic, partition, offset)`) with the tool's limits.
pub fn fetch_request(partitions: &[(&str, i32, i64)], max_wait_ms: i32) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for &(topic, partition, offset) in partitions {
        let fetch = FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(PARTITION_MAX_BYTES);
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == topic => last.partitions.push(fetch),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![fetch]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(MAX_BYTES)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// One partition being read: where it is and where it stops.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Where reading stops; `None`: at the high watermark of the first answer.
    pub target: Option<i64>,
    /// Records read so far.
    pub records: i64,
}

impl Cursor {
    pub fn new(topic: &str, partition: i32, offset: i64, target: Option<i64>) -> Cursor {
        Cursor {
            topic: topic.to_string(),
            partition,
            offset,
            target,
            records: 0,
        }
    }

    fn unfinished(&self) -> bool {
        self.target.is_none_or(|target| self.offset < target)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    pub value_bytes: u64,
    pub records: u64,
    pub seconds: f64,
    pub cpu: CpuUsage,
    /// Every cursor, with how far it got.
    pub cursors: Vec<Cursor>,
}

/// How a read runs: its limits and whose CPU it counts.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub in_flight: usize,
    pub max_duration: Duration,
    pub broker_pid: Option<u32>,
}

/// Reads each cursor from its offset to its target (or until `max_duration`).
pub fn read(
    bootstrap: &str,
    cursors: Vec<Cursor>,
    limits: ReadLimits,
    label: &str,
) -> anyhow::Result<ReadOutcome> {
    super::runtime()?.block_on(read_async(bootstrap, cursors, limits, label))
}

async fn read_async(
    bootstrap: &str,
    mut cursors: Vec<Cursor>,
    limits: ReadLimits,
    label: &str,
) -> anyhow::Result<ReadOutcome> {
    let (mut writer, mut reader) = conn::connect(bootstrap).await?;
    let groups = limits.in_flight.clamp(1, cursors.len().max(1));
    let expected: i64 = cursors
        .iter()
        .filter_map(|c| Some((c.target? - c.offset).max(0)))
        .sum();
    let progress = Progress::new(label, limits.max_duration);
    let mut outcome = ReadOutcome::default();
    let mut answers = 0u64;
    let cpu_start = Sample::take(limits.broker_pid);
    let start = Instant::now();
    // Each outstanding Fetch: its group and the cursor indices it asked for.
    let mut outstanding: VecDeque<Vec<usize>> = VecDeque::new();
    for group in 0..groups {
        if let Some(asked) = send_group(&mut writer, &cursors, group, groups).await? {
            outstanding.push_back(asked);
        }
    }
    writer.flush().await?;
    while let Some(asked) = outstanding.pop_front() {
        let response: FetchResponse = reader.receive::<FetchRequest>(FETCH_VERSION).await?;
        if response.error_code != 0 {
            bail!("Fetch: {}", error_name(response.error_code));
        }
        for &index in &asked {
            let cursor = &mut cursors[index];
            let data = response
                .responses
                .iter()
                .filter(|t| t.topic.0.as_str() == cursor.topic)
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition_index == cursor.partition)
                .with_context(|| {
                    format!("Fetch: no answer for {}/{}", cursor.topic, cursor.partition)
                })?;
            if cursor.target.is_none() {
                cursor.target = Some(data.high_watermark);
            }
            if data.error_code != 0 {
                bail!(
                    "Fetch {}/{} at {}: {}",
                    cursor.topic,
                    cursor.partition,
                    cursor.offset,
                    error_name(data.error_code)
                );
            }
            let chunk = read_batches(data.records.as_deref().unwrap_or_default(), cursor.offset)
                .with_context(|| {
                    format!(
                        "Fetch {}/{} at {}",
                        cursor.topic, cursor.partition, cursor.offset
                    )
                })?;
            cursor.records += chunk.records;
            outcome.records += chunk.records as u64;
            outcome.value_bytes += chunk.value_bytes;
            if let Some(next) = chunk.next_offset {
                cursor.offset = cursor.offset.max(next);
            }
        }
        if start.elapsed() < limits.max_duration {
            let group = asked.first().map_or(0, |&i| i % groups);
            if let Some(asked) = send_group(&mut writer, &cursors, group, groups).await? {
                outstanding.push_back(asked);
            }
            writer.flush().await?;
        }
        answers += 1;
        if answers % 16 == 0 {
            progress.update(
                outcome.records as f64 / expected.max(1) as f64,
                format!(
                    "{:.0} MB/s",
                    mb_per_sec(outcome.value_bytes, start.elapsed().as_secs_f64())
                ),
            );
        }
    }
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome.cpu = Sample::take(limits.broker_pid).since(&cpu_start);
    progress.finish();
    outcome.cursors = cursors;
    Ok(outcome)
}

/// Sends a Fetch for the unfinished cursors of `group` (cursor index mod `groups`).
async fn send_group(
    writer: &mut conn::RequestWriter,
    cursors: &[Cursor],
    group: usize,
    groups: usize,
) -> anyhow::Result<Option<Vec<usize>>> {
    let asked: Vec<usize> = (group..cursors.len())
        .step_by(groups)
        .filter(|&i| cursors[i].unfinished())
        .collect();
    if asked.is_empty() {
        return Ok(None);
    }
    let partitions: Vec<(&str, i32, i64)> = asked
        .iter()
        .map(|&i| {
            (
                cursors[i].topic.as_str(),
                cursors[i].partition,
                cursors[i].offset,
            )
        })
        .collect();
    let request = Prepared::encode(&fetch_request(&partitions, MAX_WAIT_MS), FETCH_VERSION)?;
    writer.send(&request).await?;
    Ok(Some(asked))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::{Buf, Bytes};
    use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable};
    use wharf_record::set_base_offset;

    use super::*;
    use crate::native::produce::batch;

    /// Two batches of three 3-byte values, at offsets 0..3 and 3..6.
    fn two_batches() -> Vec<u8> {
        let mut first = batch(b"abc", 3, 0).to_vec();
        let mut second = batch(b"abc", 3, 0).to_vec();
        set_base_offset(&mut first, 0);
        set_base_offset(&mut second, 3);
        first.extend_from_slice(&second);
        first
    }

    #[test]
    fn records_from_the_fetch_offset_on_are_counted() {
        let bytes = two_batches();
        let all = read_batches(&bytes, 0).unwrap();
        assert_eq!(
            all,
            Chunk {
                records: 6,
                value_bytes: 18,
                next_offset: Some(6)
            }
        );
        let from_four = read_batches(&bytes, 4).unwrap();
        assert_eq!((from_four.records, from_four.next_offset), (2, Some(6)));
        assert_eq!(read_batches(&[], 0).unwrap(), Chunk::default());
    }

    #[test]
    fn a_cut_last_batch_is_allowed_and_a_bad_crc_is_not() {
        let bytes = two_batches();
        let cut = read_batches(&bytes[..bytes.len() - 10], 0).unwrap();
        assert_eq!((cut.records, cut.next_offset), (3, Some(3)));
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(matches!(
            read_batches(&damaged, 0),
            Err(RecordError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn a_fetch_request_groups_partitions_by_topic_and_round_trips() {
        let request = fetch_request(&[("a", 0, 5), ("a", 1, 0), ("b", 0, 9)], 100);
        let mut frame = Bytes::from(
            Prepared::encode(&request, FETCH_VERSION)
                .unwrap()
                .to_frame(1),
        );
        frame.advance(4);
        decode_request_header_from_buffer(&mut frame).unwrap();
        let decoded = FetchRequest::decode(&mut frame, FETCH_VERSION).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(decoded.topics.len(), 2);
        assert_eq!(decoded.topics[0].partitions[0].fetch_offset, 5);
        assert_eq!(decoded.topics[1].topic.0.as_str(), "b");
        assert_eq!(decoded.session_epoch, -1);
    }
}
