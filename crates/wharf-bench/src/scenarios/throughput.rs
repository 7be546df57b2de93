//! `produce-1k`, `produce-100b`, `produce-durable` and `consume-1k`.

use serde_json::json;

use super::{repeat, Context};
use crate::cli::Client;
use crate::consume::{self, ConsumeOutcome};
use crate::load::{self, ProduceLoad, ProduceOutcome};
use crate::native;
use crate::report::{Ceiling, Figure, ScenarioReport};

pub const PARTITIONS: i32 = 8;
const BATCH_BYTES: usize = 1024 * 1024;
const LINGER_MS: u32 = 5;

/// The `produce-1k` recipe over `topics`.
pub fn produce_1k_load(ctx: &Context<'_>, topics: Vec<String>) -> ProduceLoad {
    ProduceLoad {
        bootstrap: ctx.bootstrap.clone(),
        topics,
        value_bytes: 1024,
        acks: "1",
        producers: 4,
        linger_ms: LINGER_MS,
        batch_bytes: BATCH_BYTES,
        max_bytes: ctx.max_bytes(),
        max_seconds: ctx.duration().as_secs_f64(),
        client: ctx.client,
        in_flight: ctx.args.in_flight as usize,
        encoded_budget: ctx.args.native_budget_mib as usize * 1024 * 1024,
        broker_pid: ctx.broker_pid(),
    }
}

/// The `produce-durable` recipe over `topics`: acks=all, 16 producers.
pub fn produce_durable_load(ctx: &Context<'_>, topics: Vec<String>) -> ProduceLoad {
    ProduceLoad {
        acks: "all",
        producers: 16,
        ..produce_1k_load(ctx, topics)
    }
}

fn load_config(load: &ProduceLoad, topics: usize, partitions: i32) -> serde_json::Value {
    json!({ "load": load.describe(), "topics": topics, "partitions_per_topic": partitions })
}

/// Runs one produce load and turns delivery failures into notes (or an error if nothing
/// was acknowledged). The native client's load is read back and checked afterwards.
pub fn run_load(
    load: &ProduceLoad,
    label: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<ProduceOutcome> {
    let outcome = match load.client {
        Client::Librdkafka => load::run(load, label)?,
        Client::Native => {
            let produced = native::produce::run(load, label)?;
            native::read_back::check(load, &produced, &format!("{label} read-back"))?;
            notes.extend(produced.notes.iter().map(|n| format!("{label}: {n}")));
            produced.outcome
        }
    };
    if let Some(note) = outcome.failure_note() {
        anyhow::ensure!(outcome.acked_messages > 0, "no record acknowledged: {note}");
        notes.push(format!("{label}: {note}"));
    }
    Ok(outcome)
}

fn label(scenario: &str, ctx: &Context<'_>, index: u32) -> String {
    format!("{scenario} {}/{}", index + 1, ctx.args.repeat)
}

/// `produce-1k`, and when `consume` the `consume-1k` read-back of each repeat right after it.
pub fn produce_1k_and_consume(
    ctx: &mut Context<'_>,
    report_produce: bool,
    consume: bool,
) -> Vec<ScenarioReport> {
    let config = load_config(&produce_1k_load(ctx, Vec::new()), 1, PARTITIONS);
    let mut notes = Vec::new();
    let runs = repeat(ctx, |ctx, index| {
        let topics = ctx.create_topics(&format!("produce-1k-r{index}"), 1, PARTITIONS)?;
        let produced = run_load(
            &produce_1k_load(ctx, topics.clone()),
            &label("produce-1k", ctx, index),
            &mut notes,
        )?;
        let consumed = consume.then(|| read_back(ctx, &topics[0], index));
        Ok((produced, consumed))
    });
    let mut reports = Vec::new();
    match runs {
        Err(error) => {
            if report_produce {
                reports.push(ScenarioReport::failed("produce-1k", config.clone(), &error));
            }
            if consume {
                reports.push(ScenarioReport::failed(
                    "consume-1k",
                    config,
                    &error.context("producing the data to read back"),
                ));
            }
        }
        Ok(runs) => {
            if report_produce {
                let produced: Vec<&ProduceOutcome> = runs.iter().map(|(p, _)| p).collect();
                ctx.produce_1k_mb_s = Some(produced.iter().map(|p| p.mb_per_sec()).collect());
                reports.push(produce_report(
                    "produce-1k",
                    &produced,
                    Ceiling::new("disk_write", ctx.ceilings.disk_write_mb_s, "MB/s"),
                    &config,
                    notes,
                ));
            }
            if consume {
                let consumed: anyhow::Result<Vec<ConsumeOutcome>> =
                    runs.into_iter().filter_map(|(_, c)| c).collect();
                reports.push(match consumed {
                    Ok(consumed) => consume_report(ctx, &consumed, &config),
                    Err(error) => ScenarioReport::failed("consume-1k", config, &error),
                });
            }
        }
    }
    reports
}

fn read_back(ctx: &Context<'_>, topic: &str, index: u32) -> anyhow::Result<ConsumeOutcome> {
    let high_watermarks = ctx.admin.high_watermarks(topic, PARTITIONS)?;
    let label = label("consume-1k", ctx, index);
    match ctx.client {
        Client::Librdkafka => consume::read_back(
            &ctx.bootstrap,
            topic,
            &high_watermarks,
            2 * ctx.duration(),
            &label,
            ctx.broker_pid(),
        ),
        Client::Native => native::read_back::consume(
            &ctx.bootstrap,
            topic,
            &high_watermarks,
            native::fetch::ReadLimits {
                in_flight: ctx.args.in_flight as usize,
                max_duration: 2 * ctx.duration(),
                broker_pid: ctx.broker_pid(),
            },
            &label,
        ),
    }
}

fn consume_report(
    ctx: &Context<'_>,
    consumed: &[ConsumeOutcome],
    config: &serde_json::Value,
) -> ScenarioReport {
    let notes = consumed
        .iter()
        .filter(|c| c.messages < c.expected_messages)
        .map(|c| {
            format!(
                "read {} of {} messages before the time limit",
                c.messages, c.expected_messages
            )
        })
        .collect();
    let cost: Vec<_> = consumed.iter().map(|c| (c.cpu, c.bytes)).collect();
    ScenarioReport::new(
        "consume-1k",
        vec![Figure::new(
            "MB/s",
            consumed.iter().map(ConsumeOutcome::mb_per_sec).collect(),
            Some(Ceiling::new("loopback", ctx.ceilings.loopback_mb_s, "MB/s")),
        )
        .with_cost(&cost)],
        json!({ "produced_with": config, "runs": consumed }),
        notes,
    )
}

fn produce_report(
    scenario: &str,
    produced: &[&ProduceOutcome],
    ceiling: Ceiling,
    config: &serde_json::Value,
    notes: Vec<String>,
) -> ScenarioReport {
    let cost: Vec<_> = produced.iter().map(|p| (p.cpu, p.acked_bytes)).collect();
    ScenarioReport::new(
        scenario,
        vec![
            Figure::new(
                "MB/s",
                produced.iter().map(|p| p.mb_per_sec()).collect(),
                Some(ceiling),
            )
            .with_cost(&cost),
            Figure::new(
                "msgs/s",
                produced.iter().map(|p| p.messages_per_sec()).collect(),
                None,
            )
            .with_cost(&cost),
        ],
        json!({ "config": config, "runs": produced }),
        notes,
    )
}

pub fn produce_100b(ctx: &mut Context<'_>) -> ScenarioReport {
    let recipe = |ctx: &Context<'_>, topics| ProduceLoad {
        value_bytes: 100,
        ..produce_1k_load(ctx, topics)
    };
    let config = load_config(&recipe(ctx, Vec::new()), 1, PARTITIONS);
    let mut notes = Vec::new();
    let runs = repeat(ctx, |ctx, index| {
        let topics = ctx.create_topics(&format!("produce-100b-r{index}"), 1, PARTITIONS)?;
        run_load(
            &recipe(ctx, topics),
            &label("produce-100b", ctx, index),
            &mut notes,
        )
    });
    match runs {
        Err(error) => ScenarioReport::failed("produce-100b", config, &error),
        Ok(runs) => {
            // disk_write expressed in 100-byte values per second.
            let ceiling = Ceiling::new(
                "disk_write/100B",
                ctx.ceilings.disk_write_mb_s * 1e6 / 100.0,
                "msgs/s",
            );
            let cost: Vec<_> = runs.iter().map(|p| (p.cpu, p.acked_bytes)).collect();
            ScenarioReport::new(
                "produce-100b",
                vec![Figure::new(
                    "msgs/s",
                    runs.iter().map(ProduceOutcome::messages_per_sec).collect(),
                    Some(ceiling),
                )
                .with_cost(&cost)],
                json!({ "config": config, "runs": runs }),
                notes,
            )
        }
    }
}

pub fn produce_durable(ctx: &mut Context<'_>) -> ScenarioReport {
    let config = load_config(&produce_durable_load(ctx, Vec::new()), 1, PARTITIONS);
    let mut notes = Vec::new();
    let runs = repeat(ctx, |ctx, index| {
        let topics = ctx.create_topics(&format!("produce-durable-r{index}"), 1, PARTITIONS)?;
        run_load(
            &produce_durable_load(ctx, topics),
            &label("produce-durable", ctx, index),
            &mut notes,
        )
    });
    match runs {
        Err(error) => ScenarioReport::failed("produce-durable", config, &error),
        Ok(runs) => {
            ctx.produce_durable_mb_s = Some(runs.iter().map(ProduceOutcome::mb_per_sec).collect());
            let produced: Vec<&ProduceOutcome> = runs.iter().collect();
            produce_report(
                "produce-durable",
                &produced,
                Ceiling::new("disk_sync", ctx.ceilings.disk_sync_mb_s, "MB/s"),
                &config,
                notes,
            )
        }
    }
}
