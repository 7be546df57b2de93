//! The produce load every produce scenario is made of: N producers, each on its own thread
//! with its own librdkafka client, sending fixed-size values round-robin over the topics
//! (librdkafka picks the partition) until a byte count or a time limit is reached, then
//! flushing. Throughput counts only acknowledged records; the clock stops after the flush.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use serde::Serialize;

use crate::cli::Client;
use crate::cpu::{CpuUsage, Sample};
use crate::progress::Progress;
use crate::stats::mb_per_sec;

/// Largest time a producer may take to flush what it queued before the limit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// Sends between two cheap polls that serve delivery callbacks.
const POLL_EVERY: u64 = 256;

#[derive(Debug, Clone, Serialize)]
pub struct ProduceLoad {
    #[serde(skip)]
    pub bootstrap: String,
    #[serde(skip)]
    pub topics: Vec<String>,
    pub value_bytes: usize,
    pub acks: &'static str,
    pub producers: usize,
    pub linger_ms: u32,
    pub batch_bytes: usize,
    pub max_bytes: u64,
    pub max_seconds: f64,
    pub client: Client,
    /// Native client: requests outstanding per connection (`producers` is the connection count).
    pub in_flight: usize,
    /// Native client: bound on the encoded requests' memory, bytes (batches shrink below
    /// 64 KiB over many partitions to stay within it).
    pub encoded_budget: usize,
    /// Whose CPU time is the broker's, when known.
    #[serde(skip)]
    pub broker_pid: Option<u32>,
}

impl ProduceLoad {
    /// The load as results record it: only the settings the client in use reads.
    pub fn describe(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(fields) = value.as_object_mut() {
            match self.client {
                Client::Librdkafka => {
                    fields.remove("in_flight");
                    fields.remove("encoded_budget");
                }
                Client::Native => {
                    fields.remove("linger_ms");
                    fields.remove("batch_bytes");
                    fields.insert(
                        "request_target_bytes".into(),
                        crate::native::produce::REQUEST_BYTES.into(),
                    );
                    fields.insert(
                        "batch_target_bytes".into(),
                        crate::native::produce::BATCH_BYTES.into(),
                    );
                }
            }
        }
        value
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProduceOutcome {
    pub acked_bytes: u64,
    pub acked_messages: u64,
    pub failed_messages: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// CPU-seconds of the broker and of this process over `seconds`.
    pub cpu: CpuUsage,
    /// Native client: records per batch (each request carries one batch per partition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_records: Option<i32>,
}

impl ProduceOutcome {
    pub fn mb_per_sec(&self) -> f64 {
        mb_per_sec(self.acked_bytes, self.seconds)
    }

    pub fn messages_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.acked_messages as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// A sentence for the report when some records were not acknowledged.
    pub fn failure_note(&self) -> Option<String> {
        (self.failed_messages > 0).then(|| {
            format!(
                "{} records failed delivery; first error: {}",
                self.failed_messages,
                self.first_error.as_deref().unwrap_or("?")
            )
        })
    }
}

/// Counts delivery reports; shared by all producers of one load.
#[derive(Default)]
pub struct DeliveryCounter {
    acked_bytes: AtomicU64,
    acked_messages: AtomicU64,
    failed_messages: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryCounter {
    pub fn acked_messages(&self) -> u64 {
        self.acked_messages.load(Ordering::Relaxed)
    }

    pub fn failed_messages(&self) -> u64 {
        self.failed_messages.load(Ordering::Relaxed)
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|guard| guard.clone())
    }
}

/// The producer context: routes delivery reports to a [`DeliveryCounter`].
#[derive(Clone)]
pub struct Counting(pub Arc<DeliveryCounter>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(message) => {
                self.0
                    .acked_bytes
                    .fetch_add(message.payload_len() as u64, Ordering::Relaxed);
                self.0.acked_messages.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.0.failed_messages.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert_with(|| error.to_string());
                }
            }
        }
    }
}

/// librdkafka settings shared by every producer of the tool.
pub fn producer_config(
    bootstrap: &str,
    acks: &str,
    linger_ms: u32,
    batch_bytes: usize,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", batch_bytes.to_string())
        // Let batch.size, not the 1 MB default request cap, bound a batch.
        .set(
            "message.max.bytes",
            (2 * batch_bytes.max(1_000_000)).to_string(),
        )
        // A bounded queue keeps the final flush short when the broker is the bottleneck.
        .set("queue.buffering.max.kbytes", "65536")
        .set("message.timeout.ms", "60000")
        .set("log_level", "3");
    config
}

/// A deterministic, incompressible-looking value.
pub fn value_of(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Runs the load to its byte or time limit; `label` names the progress bar.
pub fn run(load: &ProduceLoad, label: &str) -> anyhow::Result<ProduceOutcome> {
    anyhow::ensure!(
        !load.topics.is_empty() && load.producers > 0,
        "a produce load needs topics and producers"
    );
    let counter = Arc::new(DeliveryCounter::default());
    let producers = (0..load.producers)
        .map(|_| {
            producer_config(&load.bootstrap, load.acks, load.linger_ms, load.batch_bytes)
                .create_with_context::<_, BaseProducer<Counting>>(Counting(counter.clone()))
        })
        .collect::<Result<Vec<_>, _>>()
        .context("creating producers")?;
    let value: Arc<[u8]> = value_of(load.value_bytes).into();
    let topics: Arc<[String]> = load.topics.clone().into();
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let max_duration = Duration::from_secs_f64(load.max_seconds);

    let cpu_start = Sample::take(load.broker_pid);
    let start = Instant::now();
    let threads: Vec<_> = producers
        .into_iter()
        .enumerate()
        .map(|(index, producer)| {
            let (value, topics, sent, stop, max_bytes) = (
                value.clone(),
                topics.clone(),
                sent.clone(),
                stop.clone(),
                load.max_bytes,
            );
            std::thread::spawn(move || {
                send_until_stopped(&producer, index, &topics, &value, &sent, &stop, max_bytes)
            })
        })
        .collect();

    let progress = Progress::new(label, max_duration);
    while !threads.iter().all(std::thread::JoinHandle::is_finished) {
        let elapsed = start.elapsed();
        if elapsed >= max_duration {
            stop.store(true, Ordering::Relaxed);
        }
        let by_bytes = sent.load(Ordering::Relaxed) as f64 / load.max_bytes.max(1) as f64;
        let by_time = elapsed.as_secs_f64() / load.max_seconds.max(f64::EPSILON);
        let acked = counter.acked_bytes.load(Ordering::Relaxed);
        progress.update(
            by_bytes.max(by_time),
            format!("{:.0} MB/s acked", mb_per_sec(acked, elapsed.as_secs_f64())),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = Sample::take(load.broker_pid).since(&cpu_start);
    progress.finish();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
    }
    Ok(ProduceOutcome {
        acked_bytes: counter.acked_bytes.load(Ordering::Relaxed),
        acked_messages: counter.acked_messages(),
        failed_messages: counter.failed_messages(),
        first_error: counter.first_error(),
        seconds,
        cpu,
        batch_records: None,
    })
}

fn send_until_stopped(
    producer: &BaseProducer<Counting>,
    index: usize,
    topics: &[String],
    value: &[u8],
    sent: &AtomicU64,
    stop: &AtomicBool,
    max_bytes: u64,
) -> anyhow::Result<()> {
    let mut next_topic = index;
    let mut unreported = 0u64;
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < max_bytes {
        let topic = &topics[next_topic % topics.len()];
        match producer.send(BaseRecord::<(), [u8]>::to(topic).payload(value)) {
            Ok(()) => {
                next_topic = next_topic.wrapping_add(1);
                unreported += value.len() as u64;
                count += 1;
                if count % POLL_EVERY == 0 {
                    sent.fetch_add(unreported, Ordering::Relaxed);
                    unreported = 0;
                    producer.poll(Duration::ZERO);
                }
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => {
                return Err(error)
                    .with_context(|| format!("producer {index}: enqueueing a record for {topic}"))
            }
        }
    }
    sent.fetch_add(unreported, Ordering::Relaxed);
    producer
        .flush(FLUSH_TIMEOUT)
        .with_context(|| format!("producer {index}: flushing within {FLUSH_TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_asked_length_and_vary() {
        let value = value_of(1024);
        assert_eq!(value.len(), 1024);
        assert!(value.windows(2).filter(|pair| pair[0] != pair[1]).count() > 900);
    }

    #[test]
    fn rates_are_zero_for_an_empty_run() {
        let outcome = ProduceOutcome {
            acked_bytes: 0,
            acked_messages: 0,
            failed_messages: 0,
            first_error: None,
            seconds: 0.0,
            cpu: CpuUsage::default(),
            batch_records: None,
        };
        assert!(outcome.messages_per_sec().abs() < f64::EPSILON);
        assert!(outcome.failure_note().is_none());
    }

    #[test]
    fn a_load_describes_only_its_clients_settings() {
        let mut load = ProduceLoad {
            bootstrap: String::new(),
            topics: Vec::new(),
            value_bytes: 1024,
            acks: "1",
            producers: 4,
            linger_ms: 5,
            batch_bytes: 1 << 20,
            max_bytes: 1,
            max_seconds: 1.0,
            client: Client::Librdkafka,
            in_flight: 4,
            encoded_budget: 64 * 1024 * 1024,
            broker_pid: None,
        };
        let librdkafka = load.describe();
        assert_eq!(librdkafka["linger_ms"], 5);
        assert!(librdkafka.get("in_flight").is_none());
        load.client = Client::Native;
        let native = load.describe();
        assert_eq!(native["client"], "native");
        assert_eq!(native["in_flight"], 4);
        assert!(native.get("linger_ms").is_none() && native.get("batch_bytes").is_none());
        assert_eq!(native["request_target_bytes"], 512 * 1024);
    }
}
