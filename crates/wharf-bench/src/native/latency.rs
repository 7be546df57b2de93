//! `e2e-latency` with the native client: a paced producer (one record per Produce request,
//! acks=all, encoded as it is sent since each value carries its send time) and a consumer
//! with one Fetch outstanding over every partition. Blocking sockets on threads, so pacing
//! sleeps with the operating system's precision rather than a 1 ms async timer.
//!
//! ```text
//! writer thread ──Produce──▶ broker ──Fetch──▶ consumer thread ──▶ histogram
//! acks thread   ◀─responses─┘   (responses checked and counted)
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ProduceRequest};
use wharf_record::{BatchHeader, RecordError, RecordIter};

use super::conn::{decode_response, Prepared};
use super::fetch::fetch_request;
use super::{error_name, topic_name, FETCH_VERSION, PRODUCE_VERSION};
use crate::load::value_of;
use crate::progress::Progress;
use crate::scenarios::latency::{decode, encode};

/// What the scenario needs from one run.
pub struct Paced<'a> {
    pub bootstrap: &'a str,
    pub topic: &'a str,
    pub partitions: i32,
    pub rate_per_sec: u64,
    pub count: u64,
    pub value_bytes: usize,
    /// How long the consumer may lag behind the last send.
    pub drain_limit: Duration,
}

pub struct PacedOutcome {
    pub histogram: Histogram<u64>,
    pub received: u64,
    pub failed_deliveries: u64,
}

/// How often the acks thread looks up from a quiet socket.
const ACK_POLL: Duration = Duration::from_millis(100);

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = usize::try_from(i32::from_be_bytes(size))
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "negative frame size"))?;
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame)?;
    Ok(Bytes::from(frame))
}

fn connect(bootstrap: &str) -> anyhow::Result<TcpStream> {
    let stream =
        TcpStream::connect(bootstrap).with_context(|| format!("connecting to {bootstrap}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn produce_frame(
    run: &Paced<'_>,
    value: &[u8],
    partition: i32,
    correlation_id: i32,
) -> anyhow::Result<Vec<u8>> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let batch = super::produce::batch(value, 1, now_ms);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(run.topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    Ok(Prepared::encode(&request, PRODUCE_VERSION)?.to_frame(correlation_id))
}

pub fn measure(run: &Paced<'_>, label: &str) -> anyhow::Result<PacedOutcome> {
    let origin = Instant::now();
    let warmed_up = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (stream, warmed_up) = (connect(run.bootstrap)?, warmed_up.clone());
        let (topic, partitions, count) = (run.topic.to_string(), run.partitions, run.count);
        let deadline =
            Duration::from_secs(run.count / run.rate_per_sec.max(1)) + 2 * run.drain_limit;
        std::thread::spawn(move || {
            consume(
                stream, &topic, partitions, count, origin, deadline, &warmed_up,
            )
        })
    };

    let mut writer = connect(run.bootstrap)?;
    let mut acks_stream = writer.try_clone()?;
    acks_stream.set_read_timeout(Some(ACK_POLL))?;
    let sent = Arc::new(AtomicU64::new(0));
    let acks = {
        let (sent, done, drain_limit) = (sent.clone(), done.clone(), run.drain_limit);
        std::thread::spawn(move || count_acks(&mut acks_stream, &sent, &done, drain_limit))
    };
    let mut value = value_of(run.value_bytes);
    let mut correlation_id = 0;
    let mut send = |writer: &mut TcpStream, value: &[u8], partition: i32| -> anyhow::Result<()> {
        writer.write_all(&produce_frame(run, value, partition, correlation_id)?)?;
        correlation_id += 1;
        sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    };

    let warm_up_start = Instant::now();
    while !warmed_up.load(Ordering::Relaxed) {
        if warm_up_start.elapsed() > run.drain_limit || consumer.is_finished() {
            bail!(
                "the consumer did not receive the warm-up record within {:?}",
                run.drain_limit
            );
        }
        encode(&mut value, 0, origin.elapsed().as_micros() as u64);
        send(&mut writer, &value, 0)?;
        std::thread::sleep(Duration::from_millis(50));
    }

    let progress = Progress::new(
        label,
        Duration::from_secs(run.count / run.rate_per_sec.max(1)),
    );
    let interval = Duration::from_secs(1) / run.rate_per_sec.max(1) as u32;
    let start = Instant::now();
    for sequence in 1..=run.count {
        let intended = start + interval * (sequence as u32);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        encode(
            &mut value,
            sequence,
            intended.duration_since(origin).as_micros() as u64,
        );
        send(
            &mut writer,
            &value,
            (sequence % run.partitions.max(1) as u64) as i32,
        )?;
        if sequence % run.rate_per_sec == 0 {
            if consumer.is_finished() {
                break;
            }
            progress.update(
                sequence as f64 / run.count as f64,
                format!("{sequence} sent"),
            );
        }
    }
    progress.finish();
    let (histogram, received) = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    done.store(true, Ordering::Relaxed);
    let failed_deliveries = acks
        .join()
        .map_err(|_| anyhow::anyhow!("the acks thread panicked"))?;
    Ok(PacedOutcome {
        histogram,
        received,
        failed_deliveries,
    })
}

/// Reads Produce answers in order until every sent record is answered after `done` (or
/// `drain_limit` after it); returns the records not acknowledged (error codes, no answer).
fn count_acks(
    stream: &mut TcpStream,
    sent: &AtomicU64,
    done: &AtomicBool,
    drain_limit: Duration,
) -> u64 {
    let (mut acked, mut failed) = (0u64, 0u64);
    let mut expected = 0i32;
    let mut draining_since: Option<Instant> = None;
    loop {
        if done.load(Ordering::Relaxed)
            && (acked + failed >= sent.load(Ordering::Relaxed)
                || draining_since.get_or_insert_with(Instant::now).elapsed() > drain_limit)
        {
            break;
        }
        let frame = match read_frame(stream) {
            Ok(frame) => frame,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        match decode_response::<ProduceRequest>(frame, PRODUCE_VERSION, expected) {
            Ok(response) => {
                let errors = response
                    .responses
                    .iter()
                    .flat_map(|t| &t.partition_responses)
                    .filter(|p| p.error_code != 0)
                    .count();
                if errors > 0 {
                    failed += 1;
                } else {
                    acked += 1;
                }
            }
            Err(_) => break,
        }
        expected += 1;
    }
    sent.load(Ordering::Relaxed).saturating_sub(acked)
}

fn consume(
    mut stream: TcpStream,
    topic: &str,
    partitions: i32,
    count: u64,
    origin: Instant,
    deadline: Duration,
    warmed_up: &AtomicBool,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut offsets = vec![0i64; partitions.max(0) as usize];
    let mut received = 0u64;
    let started = Instant::now();
    let mut correlation_id = 0;
    while received < count && started.elapsed() < deadline {
        let asked: Vec<(&str, i32, i64)> = offsets
            .iter()
            .enumerate()
            .map(|(p, &o)| (topic, p as i32, o))
            .collect();
        let request = Prepared::encode(
            &fetch_request(&asked, super::fetch::MAX_WAIT_MS),
            FETCH_VERSION,
        )?;
        stream.write_all(&request.to_frame(correlation_id))?;
        let response = decode_response::<FetchRequest>(
            read_frame(&mut stream)?,
            FETCH_VERSION,
            correlation_id,
        )?;
        correlation_id += 1;
        let now_micros = origin.elapsed().as_micros() as u64;
        for data in response.responses.iter().flat_map(|t| &t.partitions) {
            if data.error_code != 0 {
                bail!(
                    "Fetch {topic}/{}: {}",
                    data.partition_index,
                    error_name(data.error_code)
                );
            }
            let Some(offset) = offsets.get_mut(data.partition_index as usize) else {
                bail!(
                    "Fetch: partition {} was not asked for",
                    data.partition_index
                );
            };
            let mut bytes = data.records.as_deref().unwrap_or_default();
            while !bytes.is_empty() {
                let batch = match BatchHeader::parse(bytes) {
                    Ok(batch) => batch,
                    Err(RecordError::Truncated { .. }) => break,
                    Err(error) => return Err(error.into()),
                };
                batch.verify_crc()?;
                for record in RecordIter::new(&batch)? {
                    let record = record?;
                    if record.offset < *offset {
                        continue;
                    }
                    let Some((sequence, sent_micros)) = record.value.and_then(decode) else {
                        continue;
                    };
                    if sequence == 0 {
                        warmed_up.store(true, Ordering::Relaxed);
                        continue;
                    }
                    histogram.saturating_record(now_micros.saturating_sub(sent_micros).max(1));
                    received += 1;
                }
                *offset = batch.last_offset() + 1;
                bytes = &bytes[batch.len()..];
            }
        }
    }
    Ok((histogram, received))
}
