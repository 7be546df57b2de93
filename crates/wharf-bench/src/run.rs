//! One benchmark run: note the load, start or reach the broker, measure the ceilings, run
//! the scenarios, then print the table and append the results.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::admin::Admin;
use crate::broker::SpawnedBroker;
use crate::cli::{Args, Client};
use crate::report::{self, RunInfo, ScenarioReport};
use crate::scenarios::{self, Context};
use crate::{ceilings, cpu, load_average, provenance};

/// Settings every spawned broker gets; `--broker-set` comes after and wins.
const SPAWN_SETTINGS: &[&str] = &["log_level=warn"];

pub fn run(args: &Args) -> anyhow::Result<()> {
    let load = load_average::read();
    let load_warning = load.is_some_and(|[one, _, _]| one > 1.0);
    match load {
        Some([one, five, fifteen]) => {
            eprintln!("load average at start: {one:.2} {five:.2} {fifteen:.2}");
            if load_warning {
                eprintln!("warning: load average {one:.2} > 1: something else is running; repeat the run when the machine is quiet (results are marked load_warning)");
            }
        }
        None => eprintln!("load average: unknown (no /proc/loadavg)"),
    }
    let commit = provenance::commit(args.commit.as_deref());
    eprintln!("measuring commit {} ({})", commit.short(), commit.source);
    let clients = if args.clients.is_empty() {
        vec![Client::default()]
    } else {
        args.clients.clone()
    };
    if args.cluster && clients.contains(&Client::Native) {
        anyhow::bail!(
            "--cluster runs with --client librdkafka only: the native client sends every request \
             to one broker and does not follow partition leaders"
        );
    }

    // With --cluster: nodes 2 and 3 (node 1 is `broker`), kept running until the end.
    let mut others: Vec<SpawnedBroker> = Vec::new();
    let mut broker = if args.spawn {
        let settings: Vec<String> = SPAWN_SETTINGS
            .iter()
            .map(|s| (*s).to_string())
            .chain(args.broker_set.iter().cloned())
            .collect();
        let broker = if args.cluster {
            let mut nodes = spawn_cluster(args, &settings)?;
            others = nodes.split_off(1);
            nodes.remove(0)
        } else {
            SpawnedBroker::start(&args.wharf_bin, args.data_dir.as_deref(), &settings)?
        };
        eprintln!(
            "spawned {} on {} (data {}, log {})",
            args.wharf_bin.display(),
            broker.addr(),
            broker.data_dir().display(),
            broker.log_path().display()
        );
        Some(broker)
    } else {
        None
    };
    let (bootstrap, ceiling_dir, target) = match (&broker, &args.bootstrap) {
        (Some(broker), _) if args.cluster => (
            std::iter::once(broker)
                .chain(&others)
                .map(SpawnedBroker::bootstrap)
                .collect::<Vec<_>>()
                .join(","),
            broker.data_dir(),
            "spawn cluster of 3 nodes".to_string(),
        ),
        (Some(broker), _) => (broker.bootstrap(), broker.data_dir(), "spawn".to_string()),
        (None, Some(bootstrap)) => (
            bootstrap.clone(),
            args.data_dir.clone().unwrap_or_else(|| PathBuf::from(".")),
            format!("bootstrap {bootstrap}"),
        ),
        (None, None) => anyhow::bail!("pass --bootstrap HOST:PORT or --spawn"),
    };

    let ceilings = if args.skip_ceilings {
        ceilings::Ceilings::unmeasured()
    } else {
        eprintln!("measuring ceilings in {}", ceiling_dir.display());
        ceilings::measure(&ceiling_dir)?
    };
    let ceilings_line = if args.skip_ceilings {
        "ceilings: not measured (--skip-ceilings)".to_string()
    } else {
        format!(
        "ceilings: disk_write {} MB/s, disk_sync {} MB/s, fdatasync 4 KiB p50 {} ms p99 {} ms, loopback {} MB/s",
        report::format_value(ceilings.disk_write_mb_s),
        report::format_value(ceilings.disk_sync_mb_s),
        report::format_value(ceilings.fdatasync_p50_ms),
        report::format_value(ceilings.fdatasync_p99_ms),
        report::format_value(ceilings.loopback_mb_s),
    )
    };
    eprintln!("{ceilings_line}");

    let admin = Admin::connect(&bootstrap)?;
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run_id = format!("{unix_time}-{}", std::process::id());
    let mut ctx = Context {
        args,
        client: clients[0],
        bootstrap,
        admin: &admin,
        ceilings,
        run_id: run_id.clone(),
        broker: broker.as_mut(),
        topics: Vec::new(),
        produce_1k_mb_s: None,
        produce_durable_mb_s: None,
    };
    let broker_pid = ctx.broker_pid();
    match broker_pid {
        Some(pid) => eprintln!(
            "broker CPU from /proc/{pid}/stat ({} ticks/s)",
            cpu::clock_ticks_per_second()
        ),
        None => eprintln!("broker CPU: unknown (pass --broker-pid with --bootstrap)"),
    }
    let mut reports = Vec::new();
    for &client in &clients {
        // Each client gets its own many-partitions baselines.
        ctx.client = client;
        ctx.produce_1k_mb_s = None;
        ctx.produce_durable_mb_s = None;
        reports.extend(scenarios::run_all(
            &mut ctx,
            &scenarios::selection(&args.scenarios),
        ));
    }
    if !args.spawn && !ctx.topics.is_empty() {
        if let Err(error) = admin.delete_topics(&ctx.topics) {
            eprintln!(
                "warning: deleting the {} bench topics: {error:#}",
                ctx.topics.len()
            );
        }
    }

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let info = RunInfo {
        run_id,
        unix_time,
        command: command.clone(),
        target,
        load_average: load,
        load_warning,
        commit,
        broker_pid,
        ceilings: serde_json::to_value(ceilings)?,
    };
    print_summary(&info, &ceilings_line, &reports);
    drop(others);
    report::append_results(&args.results, &info, &reports)
        .with_context(|| format!("writing results to {}", args.results.display()))?;
    eprintln!(
        "appended {} result lines to {}",
        reports.len(),
        args.results.display()
    );
    Ok(())
}

/// Three nodes of one cluster on loopback, node 1 first: each names every node's cluster
/// listener in `cluster_peers`, and each has its own temporary data directory.
fn spawn_cluster(args: &Args, settings: &[String]) -> anyhow::Result<Vec<SpawnedBroker>> {
    let ports = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
        })
        .collect::<Result<Vec<u16>, _>>()
        .context("finding free cluster ports")?;
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut node_settings = settings.to_vec();
        node_settings.extend([
            format!("node_id={}", i + 1),
            format!("cluster_listen=127.0.0.1:{port}"),
            format!("cluster_peers={peers}"),
        ]);
        let node = SpawnedBroker::start(&args.wharf_bin, args.data_dir.as_deref(), &node_settings)
            .with_context(|| format!("starting cluster node {}", i + 1))?;
        eprintln!(
            "cluster node {} on {} (log {})",
            i + 1,
            node.addr(),
            node.log_path().display()
        );
        nodes.push(node);
    }
    Ok(nodes)
}

fn print_summary(info: &RunInfo, ceilings_line: &str, reports: &[ScenarioReport]) {
    println!("{}\n", report::run_line(info));
    println!("{ceilings_line}\n");
    print!("{}", report::markdown_table(reports));
    let notes = report::notes(reports);
    if !notes.is_empty() {
        println!("\nNotes:\n{notes}");
    }
}
