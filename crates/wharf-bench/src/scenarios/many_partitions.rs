//! `many-partitions`: `produce-durable` and `produce-1k` spread over many topics × partitions
//! (100 × 100 by default), each divided by the same scenario at 8 partitions in this run.
//! When those scenarios did not run, their 8-partition baselines are measured here.

use serde_json::json;

use super::throughput::{produce_1k_load, produce_durable_load, run_load, PARTITIONS};
use super::{repeat, Context};
use crate::load::{ProduceLoad, ProduceOutcome};
use crate::report::{Ceiling, Figure, ScenarioReport};

type Recipe = fn(&Context<'_>, Vec<String>) -> ProduceLoad;

pub fn many_partitions(ctx: &mut Context<'_>) -> ScenarioReport {
    let (topics, partitions) = (ctx.args.many_topics, ctx.args.many_partitions);
    let total = u64::from(topics) * partitions.max(0) as u64;
    let config = json!({ "topics": topics, "partitions_per_topic": partitions, "durable": produce_durable_load(ctx, Vec::new()).describe(), "produce_1k": produce_1k_load(ctx, Vec::new()).describe() });
    let mut notes = Vec::new();
    let recipes: [(&str, Recipe); 2] = [
        ("produce-durable", produce_durable_load),
        ("produce-1k", produce_1k_load),
    ];
    let mut figures = Vec::new();
    for (name, recipe) in recipes {
        let runs = repeat(ctx, |ctx, index| {
            let names = ctx.create_topics(&format!("many-{name}-r{index}"), topics, partitions)?;
            let label = format!("many {name} {}/{}", index + 1, ctx.args.repeat);
            run_load(&recipe(ctx, names), &label, &mut notes)
        });
        let outcomes = match runs {
            Ok(outcomes) => outcomes,
            Err(error) => {
                return ScenarioReport::failed(
                    "many-partitions",
                    config,
                    &error.context(format!("{name} over {topics} × {partitions}")),
                )
            }
        };
        let baseline = match baseline(ctx, name, recipe, &mut notes) {
            Ok(values) => values,
            Err(error) => {
                return ScenarioReport::failed(
                    "many-partitions",
                    config,
                    &error.context(format!("{name} baseline at {PARTITIONS} partitions")),
                )
            }
        };
        let ceiling = crate::stats::Summary::of(&baseline)
            .map(|s| Ceiling::new(format!("{name}@{PARTITIONS}p"), s.median, "MB/s"));
        let cost: Vec<_> = outcomes.iter().map(|o| (o.cpu, o.acked_bytes)).collect();
        figures.push(
            Figure::new(
                format!("{name} MB/s @ {total} partitions"),
                outcomes.iter().map(ProduceOutcome::mb_per_sec).collect(),
                ceiling,
            )
            .with_cost(&cost),
        );
    }
    ScenarioReport::new("many-partitions", figures, config, notes)
}

/// MB/s per repeat of `name` at 8 partitions: from this run's scenario, else measured now.
fn baseline(
    ctx: &mut Context<'_>,
    name: &str,
    recipe: Recipe,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<f64>> {
    let known = if name == "produce-durable" {
        &ctx.produce_durable_mb_s
    } else {
        &ctx.produce_1k_mb_s
    };
    if let Some(values) = known {
        return Ok(values.clone());
    }
    let values = repeat(ctx, |ctx, index| {
        let names = ctx.create_topics(&format!("many-baseline-{name}-r{index}"), 1, PARTITIONS)?;
        let label = format!("baseline {name} {}/{}", index + 1, ctx.args.repeat);
        Ok(run_load(&recipe(ctx, names), &label, notes)?.mb_per_sec())
    })?;
    if name == "produce-durable" {
        ctx.produce_durable_mb_s = Some(values.clone());
    } else {
        ctx.produce_1k_mb_s = Some(values.clone());
    }
    Ok(values)
}
