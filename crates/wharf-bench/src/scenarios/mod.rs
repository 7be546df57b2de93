//! The scenarios, by their fixed names, and what they share. Each turns its repeats into one
//! [`ScenarioReport`]; a failing scenario yields a report carrying its error.

mod amqp;
mod delay;
pub mod latency;
mod many_partitions;
mod recovery;
mod throughput;

use std::fmt::Write as _;
use std::time::Duration;

use clap::ValueEnum;

use crate::admin::Admin;
use crate::broker::SpawnedBroker;
use crate::ceilings::Ceilings;
use crate::cli::{Args, Client};
use crate::report::ScenarioReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    #[value(name = "produce-1k")]
    Produce1k,
    #[value(name = "produce-100b")]
    Produce100b,
    #[value(name = "produce-durable")]
    ProduceDurable,
    #[value(name = "consume-1k")]
    Consume1k,
    #[value(name = "e2e-latency")]
    E2eLatency,
    #[value(name = "many-partitions")]
    ManyPartitions,
    #[value(name = "recovery")]
    Recovery,
    /// Wharf's delayed messages (a `wharf.message.type=delay` topic): how late each fires.
    /// Not in the default selection: other brokers have no delay topics.
    #[value(name = "delay")]
    Delay,
    /// AMQP 0-9-1: publish 1 KiB with confirms to a durable queue, then consume it with
    /// manual acks (reported as `amqp-publish-confirm` and `amqp-consume-ack`). Opt-in, needs
    /// `--amqp`.
    #[value(name = "amqp")]
    Amqp,
}

impl Scenario {
    /// The canonical order; `many-partitions` follows the scenarios it compares against.
    pub const ALL: [Scenario; 7] = [
        Scenario::Produce1k,
        Scenario::Produce100b,
        Scenario::ProduceDurable,
        Scenario::Consume1k,
        Scenario::E2eLatency,
        Scenario::ManyPartitions,
        Scenario::Recovery,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Produce1k => "produce-1k",
            Scenario::Produce100b => "produce-100b",
            Scenario::ProduceDurable => "produce-durable",
            Scenario::Consume1k => "consume-1k",
            Scenario::E2eLatency => "e2e-latency",
            Scenario::ManyPartitions => "many-partitions",
            Scenario::Recovery => "recovery",
            Scenario::Delay => "delay",
            Scenario::Amqp => "amqp",
        }
    }
}

/// The selected scenarios in canonical order, each once; all when none is named.
pub fn selection(named: &[Scenario]) -> Vec<Scenario> {
    let mut selected: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| named.is_empty() || named.contains(s))
        .collect();
    // Opt-in scenarios (not in `ALL`) run when named, after the fixed ones.
    if named.contains(&Scenario::Delay) {
        selected.push(Scenario::Delay);
    }
    if named.contains(&Scenario::Amqp) {
        selected.push(Scenario::Amqp);
    }
    selected
}

/// What a scenario runs against and with.
pub struct Context<'a> {
    pub args: &'a Args,
    /// The client this pass over the scenarios uses.
    pub client: Client,
    pub bootstrap: String,
    pub admin: &'a Admin,
    pub ceilings: Ceilings,
    /// Makes topic names unique per run.
    pub run_id: String,
    /// Present with --spawn; `recovery` needs it.
    pub broker: Option<&'a mut SpawnedBroker>,
    /// Every topic created, to delete at the end.
    pub topics: Vec<String>,
    /// MB/s per repeat of `produce-1k` and `produce-durable`, the baselines of `many-partitions`.
    pub produce_1k_mb_s: Option<Vec<f64>>,
    pub produce_durable_mb_s: Option<Vec<f64>>,
}

impl Context<'_> {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.args.duration)
    }

    /// The broker process whose CPU is counted: the spawned one, or `--broker-pid`.
    pub fn broker_pid(&self) -> Option<u32> {
        match &self.broker {
            Some(broker) => broker.pid(),
            None => self.args.broker_pid,
        }
    }

    pub fn max_bytes(&self) -> u64 {
        (self.args.max_gb * 1e9) as u64
    }

    /// Creates `count` fresh topics named after the run, client, scenario and repeat.
    pub fn create_topics(
        &mut self,
        label: &str,
        count: u32,
        partitions: i32,
    ) -> anyhow::Result<Vec<String>> {
        let prefix = format!("bench-{}-{}-{label}", self.run_id, self.client.name());
        let names: Vec<String> = if count == 1 {
            vec![prefix]
        } else {
            (0..count).map(|i| format!("{prefix}-t{i}")).collect()
        };
        self.admin.create_topics(&names, partitions)?;
        self.topics.extend(names.iter().cloned());
        Ok(names)
    }
}

/// Runs the selection; `produce-1k` and `consume-1k` run interleaved so each read-back finds
/// its data in the page cache.
pub fn run_all(ctx: &mut Context<'_>, selected: &[Scenario]) -> Vec<ScenarioReport> {
    let mut reports = Vec::new();
    let consume = selected.contains(&Scenario::Consume1k);
    for &scenario in selected {
        if scenario != Scenario::Consume1k || !selected.contains(&Scenario::Produce1k) {
            eprintln!("== {} ({})", scenario.name(), ctx.client.name());
        }
        let produced = match scenario {
            Scenario::Produce1k => throughput::produce_1k_and_consume(ctx, true, consume),
            Scenario::Consume1k if !selected.contains(&Scenario::Produce1k) => {
                throughput::produce_1k_and_consume(ctx, false, true)
            }
            Scenario::Consume1k => Vec::new(),
            Scenario::Produce100b => vec![throughput::produce_100b(ctx)],
            Scenario::ProduceDurable => vec![throughput::produce_durable(ctx)],
            Scenario::E2eLatency => vec![latency::e2e_latency(ctx)],
            Scenario::ManyPartitions => vec![many_partitions::many_partitions(ctx)],
            Scenario::Recovery => vec![recovery::recovery(ctx)],
            Scenario::Delay => vec![delay::delay_accuracy(ctx)],
            Scenario::Amqp => amqp::publish_and_consume(ctx),
        };
        for mut report in produced {
            report.client = ctx.client;
            note_broker_death(ctx, &mut report);
            eprintln!("{}", one_line(&report));
            reports.push(report);
        }
    }
    reports
}

/// With --spawn, a broker that died during the scenario is noted and started again so the
/// following scenarios still run.
fn note_broker_death(ctx: &mut Context<'_>, report: &mut ScenarioReport) {
    let Some(broker) = ctx.broker.as_deref_mut() else {
        return;
    };
    let Some(exit) = broker.exit_note() else {
        return;
    };
    let note = format!("{exit}; restarted for the next scenario");
    match &mut report.error {
        Some(error) => {
            let _ = write!(error, " ({note})");
        }
        None => report.notes.push(note),
    }
    if let Err(error) = broker
        .launch()
        .and_then(|()| broker.wait_accepting(Duration::from_secs(60)).map(|_| ()))
    {
        report.notes.push(format!("restart failed: {error:#}"));
    }
}

fn one_line(report: &ScenarioReport) -> String {
    if let Some(error) = &report.error {
        return format!(
            "   {} ({}) FAILED: {error}",
            report.scenario,
            report.client.name()
        );
    }
    let figures: Vec<String> = report
        .figures
        .iter()
        .filter_map(|f| {
            f.summary
                .map(|s| format!("{} {}", f.name, crate::report::format_value(s.median)))
        })
        .collect();
    let mut line = format!(
        "   {} ({}): {}",
        report.scenario,
        report.client.name(),
        figures.join(", ")
    );
    for note in &report.notes {
        let _ = write!(line, "\n   note: {note}");
    }
    line
}

/// Runs `body` once per repeat, stopping at the first error.
fn repeat<T>(
    ctx: &mut Context<'_>,
    mut body: impl FnMut(&mut Context<'_>, u32) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    (0..ctx.args.repeat).map(|index| body(ctx, index)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_is_canonical_and_deduplicated() {
        assert_eq!(
            selection(&[Scenario::Recovery, Scenario::Produce1k, Scenario::Recovery]),
            vec![Scenario::Produce1k, Scenario::Recovery]
        );
        assert_eq!(selection(&[]), Scenario::ALL.to_vec());
        assert_eq!(
            selection(&[Scenario::Delay, Scenario::Produce1k]),
            vec![Scenario::Produce1k, Scenario::Delay]
        );
    }

    #[test]
    fn names_match_the_command_line_values() {
        for scenario in Scenario::ALL {
            assert_eq!(
                Scenario::from_str(scenario.name(), false).ok(),
                Some(scenario)
            );
        }
    }
}
