//! `e2e-latency` with the native client: a paced producer (acks=all; each record is sent at
//! once when fewer than `in_flight` requests are outstanding, else batched with the next
//! ones, as librdkafka does with `linger.ms=0`; requests are encoded as they are sent since
//! each value carries its send time) and a consumer with one Fetch outstanding over every
//! partition. Blocking sockets on threads, so pacing
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

use super::conn::{decode_response, Prepared, RESPONSE_TIMEOUT};
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
    /// Produce requests outstanding at most; records wait (and are batched) meanwhile.
    pub in_flight: usize,
}

pub struct PacedOutcome {
    pub histogram: Histogram<u64>,
    /// How long each record waited in the client (from its intended send time to its
    /// Produce being written: a late producer thread, or no free request slot), µs. The part
    /// of `histogram` the broker had no hand in.
    pub send_delay: Histogram<u64>,
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
    // A broker that stops answering ends the run instead of hanging it.
    stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    stream.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
    Ok(stream)
}

/// Records waiting for a free request slot, per partition: what librdkafka with
/// `linger.ms=0` does too, sending at once when it can and batching what piled up.
struct Pending {
    values: Vec<Vec<Vec<u8>>>,
    /// Intended send time of each record waiting, oldest first: one per record.
    intended: Vec<Instant>,
}

/// The writer's side of the producer connection.
struct Producer<'a> {
    run: &'a Paced<'a>,
    stream: TcpStream,
    correlation_id: i32,
    in_flight: u64,
    sent_requests: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    sent_records: Arc<AtomicU64>,
    counts: std::sync::mpsc::Sender<u64>,
    send_delay: Histogram<u64>,
}

impl Producer<'_> {
    fn can_send(&self) -> bool {
        self.sent_requests.load(Ordering::Relaxed) - self.answered.load(Ordering::Relaxed)
            < self.in_flight
    }

    /// One Produce request (acks=all) with a batch per partition that has pending records.
    fn send(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        let records = pending.intended.len() as u64;
        if records == 0 {
            return Ok(());
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let partitions = pending
            .values
            .iter_mut()
            .enumerate()
            .filter(|(_, values)| !values.is_empty())
            .map(|(partition, values)| {
                let batch = super::produce::batch_of(values, now_ms);
                values.clear();
                PartitionProduceData::default()
                    .with_index(partition as i32)
                    .with_records(Some(batch))
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(self.run.topic))
                .with_partition_data(partitions)]);
        let frame = Prepared::encode(&request, PRODUCE_VERSION)?.to_frame(self.correlation_id);
        self.stream.write_all(&frame)?;
        let written = Instant::now();
        for intended in pending.intended.drain(..) {
            let waited = written.saturating_duration_since(intended).as_micros() as u64;
            self.send_delay.saturating_record(waited.max(1));
        }
        self.correlation_id += 1;
        self.counts.send(records)?;
        self.sent_records.fetch_add(records, Ordering::Relaxed);
        self.sent_requests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
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

    let stream = connect(run.bootstrap)?;
    let mut acks_stream = stream.try_clone()?;
    acks_stream.set_read_timeout(Some(ACK_POLL))?;
    let (counts, counts_received) = std::sync::mpsc::channel();
    let mut producer = Producer {
        run,
        stream,
        correlation_id: 0,
        in_flight: run.in_flight.max(1) as u64,
        sent_requests: Arc::new(AtomicU64::new(0)),
        answered: Arc::new(AtomicU64::new(0)),
        sent_records: Arc::new(AtomicU64::new(0)),
        counts,
        send_delay: Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?,
    };
    let acks = {
        let tally = AckTally {
            sent_requests: producer.sent_requests.clone(),
            answered: producer.answered.clone(),
            sent_records: producer.sent_records.clone(),
            counts: counts_received,
            done: done.clone(),
            drain_limit: run.drain_limit,
        };
        std::thread::spawn(move || tally.run(&mut acks_stream))
    };
    let mut value = value_of(run.value_bytes);
    let mut pending = Pending {
        values: vec![Vec::new(); run.partitions.max(1) as usize],
        intended: Vec::new(),
    };
    let push = |pending: &mut Pending, value: &[u8], partition: usize, intended: Instant| {
        pending.values[partition].push(value.to_vec());
        pending.intended.push(intended);
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
        push(&mut pending, &value, 0, Instant::now());
        producer.send(&mut pending)?;
        std::thread::sleep(Duration::from_millis(50));
    }

    // Only the measured records count.
    producer.send_delay.reset();
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
        push(
            &mut pending,
            &value,
            (sequence % run.partitions.max(1) as u64) as usize,
            intended,
        );
        if producer.can_send() {
            producer.send(&mut pending)?;
        }
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
    let drain_start = Instant::now();
    while !pending.intended.is_empty() && drain_start.elapsed() < run.drain_limit {
        if producer.can_send() {
            producer.send(&mut pending)?;
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let (histogram, received) = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    done.store(true, Ordering::Relaxed);
    let failed_deliveries = acks
        .join()
        .map_err(|_| anyhow::anyhow!("the acks thread panicked"))?;
    Ok(PacedOutcome {
        histogram,
        send_delay: producer.send_delay,
        received,
        failed_deliveries,
    })
}

/// The acks thread's view of the producer.
struct AckTally {
    sent_requests: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    sent_records: Arc<AtomicU64>,
    /// Records per request, in the order sent.
    counts: std::sync::mpsc::Receiver<u64>,
    done: Arc<AtomicBool>,
    drain_limit: Duration,
}

impl AckTally {
    /// Reads Produce answers in order until every request is answered after `done` (or
    /// `drain_limit` after it); returns the records not acknowledged (error codes, no answer).
    fn run(&self, stream: &mut TcpStream) -> u64 {
        let mut acked = 0u64;
        let mut expected = 0i32;
        let mut draining_since: Option<Instant> = None;
        loop {
            if self.done.load(Ordering::Relaxed)
                && (self.answered.load(Ordering::Relaxed)
                    >= self.sent_requests.load(Ordering::Relaxed)
                    || draining_since.get_or_insert_with(Instant::now).elapsed() > self.drain_limit)
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
            let Ok(response) = decode_response::<ProduceRequest>(frame, PRODUCE_VERSION, expected)
            else {
                break;
            };
            expected += 1;
            let records = self.counts.recv().unwrap_or(0);
            let failed = response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .any(|p| p.error_code != 0);
            if !failed {
                acked += records;
            }
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        self.sent_records
            .load(Ordering::Relaxed)
            .saturating_sub(acked)
    }
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
