//! `wharf`: the broker (`wharf serve`) and its admin CLI.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wharf_server::amqp_cmd::AmqpCommand;
use wharf_server::cluster_cmd::ClusterCommand;
use wharf_server::group_cmd::GroupCommand;
use wharf_server::quota_cmd::QuotaCommand;
use wharf_server::settings::Settings;
use wharf_server::share_cmd::ShareCommand;
use wharf_server::storage_cmd::StorageCommand;
use wharf_server::topic_cmd::TopicCommand;
use wharf_server::txn_cmd::TxnCommand;

/// The broker's allocator. glibc's malloc gives the free top of a thread's arena back to the
/// kernel (`madvise`) and then faults the pages in again for the next request's buffers;
/// mimalloc keeps freed pages for reuse (ADR 0017, "The allocator": ten times fewer page
/// faults, less broker CPU per GB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "wharf",
    version,
    about = "Wharf: a Kafka-compatible message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker (defaults: 127.0.0.1:9092, ./wharf-data).
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "WHARF_CONFIG")]
        config: Option<PathBuf>,
        /// Kafka listener address.
        #[arg(long)]
        listen: Option<String>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Any setting, as key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Offline checks of a data directory.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Manage topics on a running broker (like kafka-topics.sh).
    Topic {
        #[command(flatten)]
        bootstrap: Bootstrap,
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Inspect and manage consumer groups (like kafka-consumer-groups.sh).
    Group {
        #[command(flatten)]
        bootstrap: Bootstrap,
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Inspect transactions (like kafka-transactions.sh).
    Txn {
        #[command(flatten)]
        bootstrap: Bootstrap,
        #[command(subcommand)]
        command: TxnCommand,
    },
    /// Client quotas: byte rates per user and client id (like kafka-configs.sh for quotas).
    Quota {
        #[command(flatten)]
        bootstrap: Bootstrap,
        #[command(subcommand)]
        command: QuotaCommand,
    },
    /// Inspect and manage share groups (like kafka-share-groups.sh).
    Share {
        #[command(flatten)]
        bootstrap: Bootstrap,
        #[command(subcommand)]
        command: ShareCommand,
    },
    /// The AMQP door: exchanges, queues, bindings, consumers (read from the admin listener).
    Amqp {
        #[arg(
            long = "admin",
            default_value = "127.0.0.1:9644",
            env = "WHARF_ADMIN",
            global = true
        )]
        admin: String,
        #[command(subcommand)]
        command: AmqpCommand,
    },
    /// The cluster: nodes, shard groups, leaders, replication lag (read from admin listeners).
    Cluster {
        /// Admin listeners to ask, comma-separated (each knows the lag of the shards it leads).
        #[arg(
            long = "admin",
            default_value = "127.0.0.1:9644",
            env = "WHARF_ADMIN",
            global = true
        )]
        admin: String,
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

/// The broker a client command talks to; accepted anywhere after the command.
#[derive(clap::Args, Debug)]
struct Bootstrap {
    /// Broker to talk to, HOST:PORT.
    #[arg(
        long = "bootstrap-server",
        default_value = "127.0.0.1:9092",
        env = "WHARF_BOOTSTRAP",
        global = true
    )]
    server: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            set,
        } => {
            let mut overrides = Vec::new();
            for kv in set {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
                overrides.push((k.to_string(), v.to_string()));
            }
            if let Some(l) = listen {
                overrides.push(("listen".into(), l));
            }
            if let Some(d) = data_dir {
                overrides.push(("data_dir".into(), d.display().to_string()));
            }
            let settings = Settings::load(
                config.as_deref(),
                std::env::vars().filter(|(k, _)| k != "WHARF_BOOTSTRAP" && k != "WHARF_ADMIN"),
                &overrides,
            )?;
            let filter = tracing_subscriber::EnvFilter::try_new(&settings.log_level)
                .context("invalid log_level")?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            runtime.block_on(wharf_server::server::run(settings))
        }
        Command::Storage { command } => {
            if wharf_server::storage_cmd::run(&command)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Topic { bootstrap, command } => {
            runtime.block_on(wharf_server::topic_cmd::run(&bootstrap.server, command))
        }
        Command::Group { bootstrap, command } => {
            runtime.block_on(wharf_server::group_cmd::run(&bootstrap.server, command))
        }
        Command::Txn { bootstrap, command } => {
            runtime.block_on(wharf_server::txn_cmd::run(&bootstrap.server, command))
        }
        Command::Quota { bootstrap, command } => {
            runtime.block_on(wharf_server::quota_cmd::run(&bootstrap.server, command))
        }
        Command::Share { bootstrap, command } => {
            runtime.block_on(wharf_server::share_cmd::run(&bootstrap.server, command))
        }
        Command::Amqp { admin, command } => {
            runtime.block_on(wharf_server::amqp_cmd::run(&admin, command))
        }
        Command::Cluster { admin, command } => {
            runtime.block_on(wharf_server::cluster_cmd::run(&admin, command))
        }
    }
}
