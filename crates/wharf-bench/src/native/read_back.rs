//! Reading produced data back with the native client: as the measured `consume-1k`, and as
//! the check after every native produce run (not measured): each partition must hold exactly
//! the records acknowledged to it (more only when some requests failed, as a failed request
//! may still have been written), every batch with a valid CRC-32C.

use std::time::{Duration, Instant};

use anyhow::bail;
use kafka_protocol::messages::FetchRequest;

use super::conn::{self, Prepared};
use super::fetch::{self, fetch_request, read_batches, Cursor, ReadLimits};
use super::produce::NativeProduced;
use super::FETCH_VERSION;
use crate::consume::ConsumeOutcome;
use crate::load::ProduceLoad;

/// Time allowed to read a produce run back.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads every partition `load` wrote to from offset 0 to its high watermark and compares
/// the records found with the records acknowledged.
pub fn check(load: &ProduceLoad, produced: &NativeProduced, label: &str) -> anyhow::Result<()> {
    let cursors: Vec<Cursor> = load
        .topics
        .iter()
        .zip(&produced.partition_counts)
        .flat_map(|(topic, &count)| (0..count).map(move |p| Cursor::new(topic, p, 0, None)))
        .collect();
    let limits = ReadLimits {
        in_flight: load.in_flight.max(1),
        max_duration: CHECK_TIMEOUT,
        broker_pid: None,
    };
    let read = fetch::read(&load.bootstrap, cursors, limits, label)?;
    let failed = produced.outcome.failed_messages > 0;
    let mut index = 0;
    for (topic_index, &count) in produced.partition_counts.iter().enumerate() {
        for partition in 0..count {
            let cursor = &read.cursors[index];
            index += 1;
            let acked = produced
                .acked
                .get(&(topic_index, partition))
                .copied()
                .unwrap_or(0);
            let topic = &cursor.topic;
            if cursor.target != Some(cursor.offset) {
                bail!(
                    "read-back: {topic}/{partition} stopped at offset {} before its high watermark {:?}",
                    cursor.offset,
                    cursor.target
                );
            }
            if cursor.records != cursor.offset {
                bail!(
                    "read-back: {topic}/{partition} holds {} records below high watermark {}",
                    cursor.records,
                    cursor.offset
                );
            }
            if cursor.records < acked || (!failed && cursor.records != acked) {
                bail!(
                    "read-back: {topic}/{partition} holds {} records, {acked} were acknowledged",
                    cursor.records
                );
            }
        }
    }
    Ok(())
}

/// `consume-1k` with the native client: reads `topic` partitions `0..high_watermarks.len()`
/// from the beginning up to their watermarks, measured.
pub fn consume(
    bootstrap: &str,
    topic: &str,
    high_watermarks: &[i64],
    limits: ReadLimits,
    label: &str,
) -> anyhow::Result<ConsumeOutcome> {
    let cursors = high_watermarks
        .iter()
        .enumerate()
        .map(|(partition, &hw)| Cursor::new(topic, partition as i32, 0, Some(hw)))
        .collect();
    let read = fetch::read(bootstrap, cursors, limits, label)?;
    Ok(ConsumeOutcome {
        bytes: read.value_bytes,
        messages: read.records,
        expected_messages: high_watermarks.iter().map(|&hw| hw.max(0) as u64).sum(),
        seconds: read.seconds,
        cpu: read.cpu,
    })
}

/// `recovery` with the native client: polls (reconnecting after errors) until the record at
/// `high_watermark − 1` of every non-empty partition was fetched.
pub fn fetch_last_offsets(
    bootstrap: &str,
    topic: &str,
    high_watermarks: &[i64],
    timeout: Duration,
) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let mut waiting: Vec<(i32, i64)> = high_watermarks
            .iter()
            .enumerate()
            .filter(|(_, &hw)| hw > 0)
            .map(|(p, &hw)| (p as i32, hw - 1))
            .collect();
        let mut connection = None;
        let mut last_error = String::from("none");
        let start = Instant::now();
        while !waiting.is_empty() {
            if start.elapsed() > timeout {
                bail!(
                    "{} partitions' last offsets not fetched within {timeout:?}; last error: {last_error}",
                    waiting.len()
                );
            }
            if connection.is_none() {
                match conn::connect(bootstrap).await {
                    Ok(c) => connection = Some(c),
                    Err(error) => {
                        last_error = format!("{error:#}");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
            }
            let Some((writer, reader)) = connection.as_mut() else {
                continue;
            };
            match fetch_once(writer, reader, topic, &waiting).await {
                Ok(still) => waiting = still,
                Err(error) => {
                    last_error = format!("{error:#}");
                    connection = None;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        Ok(())
    })
}

/// One Fetch of every waiting `(partition, offset)`; returns those not yet served.
async fn fetch_once(
    writer: &mut conn::RequestWriter,
    reader: &mut conn::ResponseReader,
    topic: &str,
    waiting: &[(i32, i64)],
) -> anyhow::Result<Vec<(i32, i64)>> {
    let asked: Vec<(&str, i32, i64)> = waiting.iter().map(|&(p, o)| (topic, p, o)).collect();
    let request = Prepared::encode(&fetch_request(&asked, fetch::MAX_WAIT_MS), FETCH_VERSION)?;
    writer.send(&request).await?;
    writer.flush().await?;
    let response = reader.receive::<FetchRequest>(FETCH_VERSION).await?;
    Ok(waiting
        .iter()
        .copied()
        .filter(|&(partition, offset)| {
            let served = response
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .find(|d| d.partition_index == partition)
                .filter(|d| d.error_code == 0)
                .and_then(|d| read_batches(d.records.as_deref().unwrap_or_default(), offset).ok())
                .is_some_and(|chunk| chunk.records > 0);
            !served
        })
        .collect())
}
