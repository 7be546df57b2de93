//! Command-line options.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::scenarios::Scenario;

/// Drives a Kafka-compatible broker with librdkafka or a lean native client and reports each
/// figure as a ratio to a ceiling measured in the same run (see BENCHMARKING.md).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "wharf-bench",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Args,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print the markdown table of runs in a results file (what README tables are made of).
    Table(TableArgs),
    /// The e2e-latency load against the disk alone, with no broker: writer and syncer threads
    /// that write and fdatasync as the broker's shards do (ADR 0023).
    DiskE2e(crate::disk_e2e::DiskE2eArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct TableArgs {
    /// The JSON-lines results file.
    #[arg(long, default_value = "bench/results/results.jsonl")]
    pub results: PathBuf,
    /// Run id to include (repeatable; default: the last run in the file).
    #[arg(long = "run", value_name = "RUN_ID")]
    pub runs: Vec<String>,
}

/// The Kafka client the load is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// librdkafka through rdkafka: what most Kafka users run.
    #[default]
    Librdkafka,
    /// Requests encoded once with kafka-protocol, pipelined: leaves the CPU to the broker.
    Native,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::Librdkafka => "librdkafka",
            Client::Native => "native",
        }
    }
}

/// Options of a benchmark run.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Use a running broker at HOST:PORT.
    #[arg(
        long,
        env = "WHARF_BOOTSTRAP",
        conflicts_with = "spawn",
        required_unless_present = "spawn"
    )]
    pub bootstrap: Option<String>,
    /// Start a broker on a free loopback port with a temporary data directory.
    #[arg(long)]
    pub spawn: bool,
    /// With --spawn: start three nodes on loopback as one cluster (`cluster_peers`), bootstrap
    /// on all three; the broker CPU column counts node 1.
    #[arg(long, requires = "spawn")]
    pub cluster: bool,
    /// The broker binary for --spawn.
    #[arg(long, default_value = "target/release/wharf")]
    pub wharf_bin: PathBuf,
    /// A `wharf serve --set` setting for the spawned broker, KEY=VALUE (repeatable).
    #[arg(long = "broker-set", value_name = "KEY=VALUE")]
    pub broker_set: Vec<String>,
    /// Where ceilings are measured: the broker's data directory (with --bootstrap), or where
    /// the spawned broker's temporary directory is made (default: the system's temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Scenario to run (repeatable; default: all, in the canonical order).
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Time limit of one scenario run, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub duration: u64,
    /// Byte limit of one produce run, in GB (10^9 bytes).
    #[arg(long, default_value_t = 2.0)]
    pub max_gb: f64,
    /// Runs of each scenario; the median and min–max are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,
    /// many-partitions: number of topics.
    #[arg(long, default_value_t = 100)]
    pub many_topics: u32,
    /// many-partitions: partitions per topic.
    #[arg(long, default_value_t = 100)]
    pub many_partitions: i32,
    /// recovery: GB (10^9 bytes) written before the kill.
    #[arg(long, default_value_t = 1.0)]
    pub recovery_gb: f64,
    /// recovery: partitions the data is spread over.
    #[arg(long, default_value_t = 100)]
    pub recovery_partitions: i32,
    /// recovery: time limit for the write and for the restart, each, in seconds.
    #[arg(long, default_value_t = 300)]
    pub recovery_timeout: u64,
    /// The broker's AMQP listener, for the `amqp` scenario.
    #[arg(long)]
    pub amqp: Option<String>,
    /// Client to load the broker with (repeatable: each scenario runs with each, in order).
    #[arg(long = "client", value_enum)]
    pub clients: Vec<Client>,
    /// Native client: requests in flight per connection.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub in_flight: u32,
    /// Native client: the memory all encoded Produce requests of a run may take, in MiB.
    /// Each partition's batch is 64 KiB unless that would exceed this bound (10,000
    /// partitions at the default 64 MiB: 6 KiB batches).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub native_budget_mib: u32,
    /// With --bootstrap: the broker's pid, so its CPU-seconds per GB are reported.
    #[arg(long, conflicts_with = "spawn")]
    pub broker_pid: Option<u32>,
    /// The commit measured, when the broker was not built from the current directory's tree
    /// (default: `git rev-parse HEAD` here).
    #[arg(long)]
    pub commit: Option<String>,
    /// Do not measure the ceilings (about 30 s of disk and loopback work): for smoke runs
    /// and tests; figures then have no ceiling and no ratio.
    #[arg(long)]
    pub skip_ceilings: bool,
    /// JSON-lines file the results are appended to.
    #[arg(long, default_value = "bench/results/results.jsonl")]
    pub results: PathBuf,
}
