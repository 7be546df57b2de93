//! `e2e-latency`: one producer at a fixed 5,000 msg/s (1 KiB, acks=all) and one consumer on
//! the same topic. Each value carries its sequence number and its *intended* send time (so a
//! producer that falls behind does not hide the delay), and the consumer records
//! consume time − intended send time in an HDR histogram.
//!
//! ```text
//! producer thread ──(paced sends)──▶ broker ──(fetch)──▶ consumer thread ──▶ histogram
//!        └──────── origin: one Instant shared by both threads ───────┘
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;

use super::{repeat, throughput::PARTITIONS, Context};
use crate::admin::consumer_config;
use crate::cli::Client;
use crate::load::{producer_config, value_of, Counting, DeliveryCounter};
use crate::native;
use crate::progress::Progress;
use crate::report::{Ceiling, Figure, ScenarioReport};

const RATE_PER_SEC: u64 = 5000;
const VALUE_BYTES: usize = 1024;
/// How long the consumer may lag behind the last send before the run gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
struct LatencyRun {
    sent: u64,
    received: u64,
    failed_deliveries: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// The spawned broker's breakdown of the run (`stages`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stages: Vec<crate::stages::StageFigure>,
    /// The native client's own share: how long records waited in it before their Produce
    /// was written, as [p50, p99, p99.9, max] ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_send_delay_ms: Option<[f64; 4]>,
}

/// Value layout: sequence number (u64 LE), intended send time in µs since the origin
/// (u64 LE), then filler. Sequence 0 is the warm-up record and is not measured.
pub fn encode(value: &mut [u8], sequence: u64, sent_micros: u64) {
    value[..8].copy_from_slice(&sequence.to_le_bytes());
    value[8..16].copy_from_slice(&sent_micros.to_le_bytes());
}

pub fn decode(value: &[u8]) -> Option<(u64, u64)> {
    let sequence = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let sent_micros = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((sequence, sent_micros))
}

pub fn e2e_latency(ctx: &mut Context<'_>) -> ScenarioReport {
    let config = json!({ "rate_per_sec": RATE_PER_SEC, "value_bytes": VALUE_BYTES, "acks": "all", "linger_ms": 0, "partitions": PARTITIONS, "seconds": ctx.args.duration, "latency": "consume time - intended send time" });
    let mut notes = Vec::new();
    let runs = repeat(ctx, |ctx, index| {
        let topics = ctx.create_topics(&format!("e2e-latency-r{index}"), 1, PARTITIONS)?;
        let admin = ctx.broker.as_ref().map(|b| b.admin_addr());
        let before = admin.map(crate::stages::scrape).transpose()?;
        let mut run = measure(
            ctx,
            &topics[0],
            &format!("e2e-latency {}/{}", index + 1, ctx.args.repeat),
        )?;
        if let (Some(admin), Some(before)) = (admin, before) {
            run.stages = crate::stages::breakdown(&before, &crate::stages::scrape(admin)?);
            for line in crate::stages::lines(&run.stages) {
                eprintln!("{line}");
            }
        }
        if run.failed_deliveries > 0 || run.received < run.sent {
            notes.push(format!(
                "run {}: {} sent, {} received, {} failed deliveries",
                index + 1,
                run.sent,
                run.received,
                run.failed_deliveries
            ));
        }
        Ok(run)
    });
    let runs = match runs {
        Ok(runs) => runs,
        Err(error) => return ScenarioReport::failed("e2e-latency", config, &error),
    };
    let ceiling = Ceiling::new("fdatasync_p50", ctx.ceilings.fdatasync_p50_ms, "ms");
    let figure = |name: &str, pick: fn(&LatencyRun) -> f64| {
        Figure::new(name, runs.iter().map(pick).collect(), Some(ceiling.clone()))
    };
    ScenarioReport::new(
        "e2e-latency",
        vec![
            figure("p50 ms", |r| r.p50_ms),
            figure("p99 ms", |r| r.p99_ms),
            figure("p99.9 ms", |r| r.p999_ms),
            figure("max ms", |r| r.max_ms),
        ],
        json!({ "config": config, "runs": runs }),
        notes,
    )
}

fn measure(ctx: &Context<'_>, topic: &str, label: &str) -> anyhow::Result<LatencyRun> {
    match ctx.client {
        Client::Librdkafka => measure_librdkafka(ctx, topic, label),
        Client::Native => {
            let count = RATE_PER_SEC * ctx.args.duration;
            let outcome = native::latency::measure(
                &native::latency::Paced {
                    bootstrap: &ctx.bootstrap,
                    topic,
                    partitions: PARTITIONS,
                    rate_per_sec: RATE_PER_SEC,
                    count,
                    value_bytes: VALUE_BYTES,
                    drain_limit: DRAIN_LIMIT,
                    in_flight: ctx.args.in_flight as usize,
                },
                label,
            )?;
            let mut run = LatencyRun::of(
                count,
                outcome.received,
                outcome.failed_deliveries,
                &outcome.histogram,
            );
            let delay = quantiles_ms(&outcome.send_delay);
            eprintln!(
                "   client send delay (ms): p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                delay[0], delay[1], delay[2], delay[3]
            );
            run.client_send_delay_ms = Some(delay);
            Ok(run)
        }
    }
}

impl LatencyRun {
    fn of(sent: u64, received: u64, failed_deliveries: u64, histogram: &Histogram<u64>) -> Self {
        let [p50_ms, p99_ms, p999_ms, max_ms] = quantiles_ms(histogram);
        LatencyRun {
            sent,
            received,
            failed_deliveries,
            p50_ms,
            p99_ms,
            p999_ms,
            max_ms,
            stages: Vec::new(),
            client_send_delay_ms: None,
        }
    }
}

/// p50, p99, p99.9 and max of a histogram of µs, in ms.
pub(crate) fn quantiles_ms(histogram: &Histogram<u64>) -> [f64; 4] {
    let ms = |micros: u64| micros as f64 / 1000.0;
    [
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
    ]
}

fn measure_librdkafka(ctx: &Context<'_>, topic: &str, label: &str) -> anyhow::Result<LatencyRun> {
    let count = RATE_PER_SEC * ctx.args.duration;
    let origin = Instant::now();
    let warmed_up = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(&ctx.bootstrap, topic, count, origin, warmed_up.clone())?;

    let deliveries = Arc::new(DeliveryCounter::default());
    let producer: BaseProducer<Counting> = producer_config(&ctx.bootstrap, "all", 0, 1024 * 1024)
        .create_with_context(Counting(deliveries.clone()))
        .context("creating the producer")?;
    let mut value = value_of(VALUE_BYTES);

    // Warm-up: send sequence 0 until the consumer sees it, so connections and metadata are ready.
    let warm_up_start = Instant::now();
    while !warmed_up.load(Ordering::Relaxed) {
        if warm_up_start.elapsed() > DRAIN_LIMIT || consumer.is_finished() {
            bail!("the consumer did not receive the warm-up record within {DRAIN_LIMIT:?}");
        }
        encode(&mut value, 0, origin.elapsed().as_micros() as u64);
        send(&producer, topic, &value)?;
        producer
            .flush(Duration::from_secs(10))
            .context("flushing the warm-up record")?;
        std::thread::sleep(Duration::from_millis(50));
    }

    let progress = Progress::new(label, ctx.duration());
    let interval = Duration::from_secs(1) / RATE_PER_SEC as u32;
    let start = Instant::now();
    for sequence in 1..=count {
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
        send(&producer, topic, &value)?;
        producer.poll(Duration::ZERO);
        if sequence % RATE_PER_SEC == 0 {
            if consumer.is_finished() {
                break;
            }
            progress.update(sequence as f64 / count as f64, format!("{sequence} sent"));
        }
    }
    progress.finish();
    producer
        .flush(DRAIN_LIMIT)
        .context("flushing the producer")?;
    let (histogram, received) = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    Ok(LatencyRun::of(
        count,
        received,
        deliveries.failed_messages(),
        &histogram,
    ))
}

fn send(producer: &BaseProducer<Counting>, topic: &str, value: &[u8]) -> anyhow::Result<()> {
    let mut record = BaseRecord::<(), [u8]>::to(topic).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error).context("enqueueing a record"),
        }
    }
}

type ConsumerThread = std::thread::JoinHandle<anyhow::Result<(Histogram<u64>, u64)>>;

/// Reads every partition from the beginning until `count` measured records arrived or the
/// producer's time plus [`DRAIN_LIMIT`] has passed.
fn spawn_consumer(
    bootstrap: &str,
    topic: &str,
    count: u64,
    origin: Instant,
    warmed_up: Arc<AtomicBool>,
) -> anyhow::Result<ConsumerThread> {
    let consumer: BaseConsumer = consumer_config(bootstrap)
        .create()
        .context("creating the consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let deadline = Duration::from_secs(count / RATE_PER_SEC) + 2 * DRAIN_LIMIT;
    Ok(std::thread::spawn(move || {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut received = 0u64;
        let started = Instant::now();
        while received < count && started.elapsed() < deadline {
            let Some(result) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = result.context("fetching")?;
            let now_micros = origin.elapsed().as_micros() as u64;
            let Some((sequence, sent_micros)) = message.payload().and_then(decode) else {
                continue;
            };
            if sequence == 0 {
                warmed_up.store(true, Ordering::Relaxed);
                continue;
            }
            histogram.saturating_record(now_micros.saturating_sub(sent_micros).max(1));
            received += 1;
        }
        Ok((histogram, received))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_carries_its_sequence_and_send_time() {
        let mut value = vec![0u8; VALUE_BYTES];
        encode(&mut value, 42, 1_234_567);
        assert_eq!(decode(&value), Some((42, 1_234_567)));
    }

    #[test]
    fn a_short_value_decodes_to_nothing() {
        assert_eq!(decode(&[1, 2, 3]), None);
    }
}
