//! `delay` (opt-in: `--scenario delay`): one producer at a fixed 2,000 msg/s (100 B, acks=all)
//! to a `wharf.message.type=delay` topic, each record with `wharf-delay-ms` spread evenly
//! over 0..10 s, and one consumer. Each value carries its sequence number and its *due* time
//! (intended send time + delay); the consumer records consume time − due time in an HDR
//! histogram and counts records that arrive before their due time (must be 0: the broker's
//! due time counts from its receipt, which is after the intended send time).
//!
//! ```text
//! producer thread ──(paced sends, wharf-delay-ms)──▶ __wharf_scheduled ──(due)──▶ topic
//!        └────────── origin: one Instant shared with the consumer thread ──────────┘
//! ```

use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;

use super::{repeat, throughput::PARTITIONS, Context};
use crate::admin::consumer_config;
use crate::load::{producer_config, Counting, DeliveryCounter};
use crate::report::{Figure, ScenarioReport};

const RATE_PER_SEC: u64 = 2_000;
const VALUE_BYTES: usize = 100;
const MAX_DELAY_MS: u64 = 10_000;
/// How long after the last due time the consumer may still wait.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
struct DelayRun {
    sent: u64,
    received: u64,
    early: u64,
    failed_deliveries: u64,
    acked_per_sec: f64,
    late_p50_ms: f64,
    late_p99_ms: f64,
    late_max_ms: f64,
}

/// The delay of record `sequence`, spread evenly over 0..=MAX_DELAY_MS.
fn delay_ms(sequence: u64) -> u64 {
    sequence.wrapping_mul(7_919) % (MAX_DELAY_MS + 1)
}

/// Value layout: sequence number (u64 LE), due time in µs since the origin (u64 LE), filler.
fn encode(value: &mut [u8], sequence: u64, due_micros: u64) {
    value[..8].copy_from_slice(&sequence.to_le_bytes());
    value[8..16].copy_from_slice(&due_micros.to_le_bytes());
}

fn decode(value: &[u8]) -> Option<(u64, u64)> {
    let sequence = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let due_micros = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((sequence, due_micros))
}

pub fn delay_accuracy(ctx: &mut Context<'_>) -> ScenarioReport {
    let config = json!({ "rate_per_sec": RATE_PER_SEC, "value_bytes": VALUE_BYTES, "max_delay_ms": MAX_DELAY_MS, "acks": "all", "partitions": PARTITIONS, "seconds": ctx.args.duration, "lateness": "consume time - (intended send time + delay)" });
    let runs = repeat(ctx, |ctx, index| {
        let topics = ctx.create_topics(&format!("delay-r{index}"), 1, PARTITIONS)?;
        make_delay_topic(&ctx.bootstrap, &topics[0])?;
        measure(ctx, &topics[0])
    });
    let runs = match runs {
        Ok(runs) => runs,
        Err(error) => return ScenarioReport::failed("delay-accuracy", config, &error),
    };
    let mut notes = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        if r.early > 0 || r.received < r.sent || r.failed_deliveries > 0 {
            notes.push(format!(
                "run {}: {} sent, {} received, {} early, {} failed deliveries",
                i + 1,
                r.sent,
                r.received,
                r.early,
                r.failed_deliveries
            ));
        }
    }
    let figure = |name: &str, pick: fn(&DelayRun) -> f64| {
        Figure::new(name, runs.iter().map(pick).collect(), None)
    };
    ScenarioReport {
        scenario: "delay".into(),
        // The delay scenario drives librdkafka whatever `--client` says.
        client: crate::scenarios::Client::Librdkafka,
        figures: vec![
            figure("acked msg/s", |r| r.acked_per_sec),
            figure("late p50 ms", |r| r.late_p50_ms),
            figure("late p99 ms", |r| r.late_p99_ms),
            figure("late max ms", |r| r.late_max_ms),
        ],
        config: json!({ "config": config, "runs": runs }),
        notes,
        error: None,
    }
}

/// Turns a fresh topic into a delay topic (AlterConfigs; the bench's `Admin` creates topics
/// without configs).
fn make_delay_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let client: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create()
        .context("creating the admin client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic(topic)).set("wharf.message.type", "delay");
    let results = runtime
        .block_on(client.alter_configs([&alter], &AdminOptions::new()))
        .context("AlterConfigs")?;
    for result in results {
        if let Err((resource, code)) = result {
            anyhow::bail!("making {resource:?} a delay topic: {code}");
        }
    }
    Ok(())
}

fn measure(ctx: &Context<'_>, topic: &str) -> anyhow::Result<DelayRun> {
    let count = RATE_PER_SEC * ctx.args.duration;
    let origin = Instant::now();
    let consumer = spawn_consumer(&ctx.bootstrap, topic, count, origin, ctx.duration())?;
    let deliveries = std::sync::Arc::new(DeliveryCounter::default());
    let producer: BaseProducer<Counting> = producer_config(&ctx.bootstrap, "all", 5, 256 * 1024)
        .create_with_context(Counting(deliveries.clone()))
        .context("creating the producer")?;
    let mut value = vec![0u8; VALUE_BYTES];
    let interval = Duration::from_secs(1) / RATE_PER_SEC as u32;
    let start = Instant::now();
    for sequence in 1..=count {
        let intended = start + interval * (sequence as u32);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        let delay = delay_ms(sequence);
        let due = intended + Duration::from_millis(delay);
        encode(
            &mut value,
            sequence,
            due.duration_since(origin).as_micros() as u64,
        );
        let delay_text = delay.to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: "wharf-delay-ms",
            value: Some(delay_text.as_str()),
        });
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .payload(&value)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
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
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(DRAIN_LIMIT)
        .context("flushing the producer")?;
    let acked_per_sec = deliveries.acked_messages() as f64 / start.elapsed().as_secs_f64();
    let (histogram, received, early) = consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    let ms = |micros: u64| micros as f64 / 1000.0;
    Ok(DelayRun {
        sent: count,
        received,
        early,
        failed_deliveries: deliveries.failed_messages(),
        acked_per_sec,
        late_p50_ms: ms(histogram.value_at_quantile(0.5)),
        late_p99_ms: ms(histogram.value_at_quantile(0.99)),
        late_max_ms: ms(histogram.max()),
    })
}

type ConsumerThread = std::thread::JoinHandle<anyhow::Result<(Histogram<u64>, u64, u64)>>;

/// Reads every partition until `count` records arrived or the sending time plus the longest
/// delay plus [`DRAIN_LIMIT`] has passed.
fn spawn_consumer(
    bootstrap: &str,
    topic: &str,
    count: u64,
    origin: Instant,
    sending: Duration,
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
    let deadline = sending + Duration::from_millis(MAX_DELAY_MS) + DRAIN_LIMIT;
    Ok(std::thread::spawn(move || {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let (mut received, mut early) = (0u64, 0u64);
        while received < count && origin.elapsed() < deadline {
            let Some(result) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = result.context("fetching")?;
            let now_micros = origin.elapsed().as_micros() as u64;
            let Some((_, due_micros)) = message.payload().and_then(decode) else {
                continue;
            };
            if now_micros < due_micros {
                early += 1;
            }
            histogram.saturating_record(now_micros.saturating_sub(due_micros).max(1));
            received += 1;
        }
        Ok((histogram, received, early))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_carries_its_sequence_and_due_time() {
        let mut value = vec![0u8; VALUE_BYTES];
        encode(&mut value, 42, 1_234_567);
        assert_eq!(decode(&value), Some((42, 1_234_567)));
        assert_eq!(decode(&[1, 2, 3]), None);
    }

    #[test]
    fn delays_stay_within_the_maximum() {
        assert!((0..10_000).all(|s| delay_ms(s) <= MAX_DELAY_MS));
        assert_eq!(delay_ms(0), 0);
    }
}
