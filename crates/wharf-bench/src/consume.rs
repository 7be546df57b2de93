//! Reading a topic back: one consumer, no group, every partition assigned from the
//! beginning, until each reaches the high watermark it had at the start (or a time limit).

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::admin::consumer_config;
use crate::cpu::{CpuUsage, Sample};
use crate::progress::Progress;
use crate::stats::mb_per_sec;

#[derive(Debug, Clone, Serialize)]
pub struct ConsumeOutcome {
    pub bytes: u64,
    pub messages: u64,
    /// Messages the high watermarks promised.
    pub expected_messages: u64,
    pub seconds: f64,
    /// CPU-seconds of the broker and of this process over `seconds`.
    pub cpu: CpuUsage,
}

impl ConsumeOutcome {
    pub fn mb_per_sec(&self) -> f64 {
        mb_per_sec(self.bytes, self.seconds)
    }
}

/// Reads `topic` partitions `0..high_watermarks.len()` up to their watermarks.
pub fn read_back(
    bootstrap: &str,
    topic: &str,
    high_watermarks: &[i64],
    max_duration: Duration,
    label: &str,
    broker_pid: Option<u32>,
) -> anyhow::Result<ConsumeOutcome> {
    let consumer: BaseConsumer = consumer_config(bootstrap)
        .create()
        .context("creating the consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..high_watermarks.len() {
        assignment.add_partition_offset(topic, partition as i32, Offset::Beginning)?;
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;

    let expected_messages: u64 = high_watermarks.iter().map(|&hw| hw.max(0) as u64).sum();
    let mut remaining = high_watermarks.iter().filter(|&&hw| hw > 0).count();
    let mut done = vec![false; high_watermarks.len()];
    let (mut bytes, mut messages) = (0u64, 0u64);
    let progress = Progress::new(label, max_duration);
    let cpu_start = Sample::take(broker_pid);
    let start = Instant::now();
    while remaining > 0 && start.elapsed() < max_duration {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message =
            result.with_context(|| format!("fetching {topic} after {messages} messages"))?;
        bytes += message.payload_len() as u64;
        messages += 1;
        let partition = message.partition() as usize;
        if let (Some(finished), Some(&hw)) =
            (done.get_mut(partition), high_watermarks.get(partition))
        {
            if !*finished && message.offset() + 1 >= hw {
                *finished = true;
                remaining -= 1;
            }
        }
        if messages % 4096 == 0 {
            progress.update(
                messages as f64 / expected_messages.max(1) as f64,
                format!(
                    "{:.0} MB/s",
                    mb_per_sec(bytes, start.elapsed().as_secs_f64())
                ),
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = Sample::take(broker_pid).since(&cpu_start);
    progress.finish();
    Ok(ConsumeOutcome {
        bytes,
        messages,
        expected_messages,
        seconds,
        cpu,
    })
}
