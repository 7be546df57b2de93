//! `recovery` (--spawn only): write N GB over M partitions with the `produce-1k` recipe,
//! SIGKILL the broker, start it again on the same data directory, and time how long until the
//! port accepts and until a fetch of the last offset of every partition succeeds. A process
//! kill leaves the page cache intact, so every acknowledged record must still be there.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;

use super::throughput::{produce_1k_load, run_load};
use super::{repeat, Context};
use crate::admin::consumer_config;
use crate::cli::Client;
use crate::load::ProduceLoad;
use crate::native;
use crate::report::{Figure, ScenarioReport};

#[derive(Debug, Clone, Serialize)]
struct RecoveryRun {
    written_bytes: u64,
    seconds_to_accept: f64,
    seconds_to_fetch_last_offset: f64,
}

pub fn recovery(ctx: &mut Context<'_>) -> ScenarioReport {
    let (gb, partitions) = (ctx.args.recovery_gb, ctx.args.recovery_partitions);
    let config = json!({ "gb": gb, "partitions": partitions, "load": load(ctx, Vec::new()).describe(), "timeout_seconds": ctx.args.recovery_timeout });
    if ctx.broker.is_none() {
        return ScenarioReport::skipped(
            "recovery",
            config,
            "needs --spawn (the tool kills and restarts a broker it started)",
        );
    }
    if ctx.args.cluster {
        return ScenarioReport::skipped(
            "recovery",
            config,
            "not measured for a cluster (the other nodes keep serving while one restarts)",
        );
    }
    let mut notes = Vec::new();
    let runs = repeat(ctx, |ctx, index| measure(ctx, index, &mut notes));
    match runs {
        Err(error) => ScenarioReport::failed("recovery", config, &error),
        Ok(runs) => ScenarioReport::new(
            "recovery",
            vec![
                Figure::new(
                    "s to fetch last offset",
                    runs.iter()
                        .map(|r| r.seconds_to_fetch_last_offset)
                        .collect(),
                    None,
                ),
                Figure::new(
                    "s to accept",
                    runs.iter().map(|r| r.seconds_to_accept).collect(),
                    None,
                ),
            ],
            json!({ "config": config, "runs": runs }),
            notes,
        ),
    }
}

/// The write before the kill always uses librdkafka; the client under test does the fetch
/// of the last offsets after the restart.
fn load(ctx: &Context<'_>, topics: Vec<String>) -> ProduceLoad {
    ProduceLoad {
        max_bytes: (ctx.args.recovery_gb * 1e9) as u64,
        max_seconds: ctx.args.recovery_timeout as f64,
        client: Client::Librdkafka,
        ..produce_1k_load(ctx, topics)
    }
}

fn measure(
    ctx: &mut Context<'_>,
    index: u32,
    notes: &mut Vec<String>,
) -> anyhow::Result<RecoveryRun> {
    let partitions = ctx.args.recovery_partitions;
    let timeout = Duration::from_secs(ctx.args.recovery_timeout);
    let topics = ctx.create_topics(&format!("recovery-r{index}"), 1, partitions)?;
    let topic = topics[0].clone();
    let load = load(ctx, topics);
    let written = run_load(
        &load,
        &format!("recovery write {}/{}", index + 1, ctx.args.repeat),
        notes,
    )?;
    if written.acked_bytes < load.max_bytes {
        notes.push(format!(
            "run {}: wrote {:.2} GB within the time limit, not {:.2}",
            index + 1,
            written.acked_bytes as f64 / 1e9,
            load.max_bytes as f64 / 1e9
        ));
    }
    let before = ctx.admin.high_watermarks(&topic, partitions)?;

    let broker = ctx
        .broker
        .as_deref_mut()
        .context("recovery needs --spawn")?;
    broker.kill_hard()?;
    let restarted = Instant::now();
    broker.launch()?;
    broker
        .wait_accepting(timeout)
        .context("waiting for the restarted broker's port")?;
    let seconds_to_accept = restarted.elapsed().as_secs_f64();
    match ctx.client {
        Client::Librdkafka => fetch_last_offsets(&ctx.bootstrap, &topic, &before, timeout)?,
        Client::Native => {
            native::read_back::fetch_last_offsets(&ctx.bootstrap, &topic, &before, timeout)?;
        }
    }
    let seconds_to_fetch_last_offset = restarted.elapsed().as_secs_f64();

    let after = ctx.admin.high_watermarks(&topic, partitions)?;
    let changed: Vec<String> = before
        .iter()
        .zip(&after)
        .enumerate()
        .filter(|(_, (b, a))| b != a)
        .map(|(p, (b, a))| format!("{p}: {b}→{a}"))
        .collect();
    if !changed.is_empty() {
        notes.push(format!(
            "run {}: high watermarks changed across kill -9 on {} partitions ({})",
            index + 1,
            changed.len(),
            changed
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(RecoveryRun {
        written_bytes: written.acked_bytes,
        seconds_to_accept,
        seconds_to_fetch_last_offset,
    })
}

/// Polls until the record at `high_watermark − 1` of every non-empty partition was fetched.
fn fetch_last_offsets(
    bootstrap: &str,
    topic: &str,
    high_watermarks: &[i64],
    timeout: Duration,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = consumer_config(bootstrap)
        .set("auto.offset.reset", "error")
        .create()
        .context("creating the consumer")?;
    let mut assignment = TopicPartitionList::new();
    let mut waiting = 0;
    for (partition, &hw) in high_watermarks.iter().enumerate() {
        if hw > 0 {
            assignment.add_partition_offset(topic, partition as i32, Offset::Offset(hw - 1))?;
            waiting += 1;
        }
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let mut seen = vec![false; high_watermarks.len()];
    let mut last_error = None;
    let start = Instant::now();
    while waiting > 0 {
        if start.elapsed() > timeout {
            bail!(
                "{waiting} partitions' last offsets not fetched within {timeout:?}; last error: {}",
                last_error.unwrap_or_else(|| "none".into())
            );
        }
        match consumer.poll(Duration::from_millis(50)) {
            None => {}
            Some(Err(error)) => last_error = Some(error.to_string()),
            Some(Ok(message)) => {
                let partition = message.partition() as usize;
                let expected = high_watermarks.get(partition).map(|hw| hw - 1);
                if let Some(flag) = seen.get_mut(partition) {
                    if !*flag && Some(message.offset()) == expected {
                        *flag = true;
                        waiting -= 1;
                    }
                }
            }
        }
    }
    Ok(())
}
