//! `wharf-bench`: drives a Kafka-compatible broker with librdkafka and reports every figure as
//! a ratio to a ceiling measured in the same run (BENCHMARKING.md is the spec).
//!
//! # Layout
//! - `cli`: the options; `run`: one run from load average to results file.
//! - `broker`: the `--spawn`ed broker (start, SIGKILL, restart).
//! - `ceilings`: disk_write, disk_sync, fdatasync latency and loopback, measured in place.
//! - `admin`: topics and offsets over the Kafka protocol.
//! - `load`, `consume`: the produce load and the read-back the scenarios are made of.
//! - `scenarios`: the fixed-name scenarios; `report`, `stats`: table, JSON lines, medians.
//! - `progress`, `load_average`: the progress bar and `/proc/loadavg`.

// Figures are floats made from byte and message counts that stay far below 2^52.
#![allow(clippy::cast_precision_loss)]

mod admin;
mod broker;
mod ceilings;
mod cli;
mod consume;
mod load;
mod load_average;
mod progress;
mod report;
mod run;
mod scenarios;
mod stats;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Args::parse();
    run::run(&args)
}
