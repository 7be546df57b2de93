//! `wharf-bench`: drives a Kafka-compatible broker with librdkafka or a lean native client and
//! reports every figure as a ratio to a ceiling measured in the same run (BENCHMARKING.md is
//! the spec), with the CPU-seconds the broker and the client spent per GB.
//!
//! # Layout
//! - `cli`: the options; `run`: one run from load average to results file.
//! - `broker`: the `--spawn`ed broker (start, SIGKILL, restart).
//! - `ceilings`: disk_write, disk_sync, fdatasync latency and loopback, measured in place.
//! - `admin`: topics and offsets over the Kafka protocol; `amqp`: a minimal AMQP 0-9-1
//!   client (amq-protocol frames) for the `amqp` scenario.
//! - `load`, `consume`: the librdkafka produce load and read-back the scenarios are made of;
//!   `native`: the same with the lean client.
//! - `scenarios`: the fixed-name scenarios; `report`, `stats`: table, JSON lines, medians.
//! - `stages`: the spawned broker's stage breakdown of `e2e-latency`, from its /metrics.
//! - `cpu`: CPU-seconds from `/proc`; `provenance`: the commit measured.
//! - `table`: the markdown table regenerated from a results file.
//! - `disk_e2e`: the e2e-latency load against the disk alone (`wharf-bench disk-e2e`).
//! - `progress`, `load_average`: the progress bar and `/proc/loadavg`.

// Figures are floats made from byte and message counts that stay far below 2^52.
#![allow(clippy::cast_precision_loss)]

mod admin;
mod amqp;
mod broker;
mod ceilings;
mod cli;
mod consume;
mod cpu;
mod disk_e2e;
mod load;
mod load_average;
mod native;
mod progress;
mod provenance;
mod report;
mod run;
mod scenarios;
mod stages;
mod stats;
mod table;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match &cli.command {
        Some(cli::Command::Table(args)) => table::print(args),
        Some(cli::Command::DiskE2e(args)) => disk_e2e::print(args),
        None => run::run(&cli.run),
    }
}
