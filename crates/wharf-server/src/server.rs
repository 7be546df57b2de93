//! `wharf serve`: install the metrics recorder, start the admin HTTP listener, open storage
//! and broker (recovery), listen, serve until SIGTERM/SIGINT, then stop accepting, flush
//! every shard and exit.
//!
//! ```text
//!  metrics recorder ─► admin HTTP (/health: up, /ready: 503) ─► bind Kafka port
//!    ─► Broker::open (recovery) ─► Kafka listener accepts ─► /ready: 200
//! ```

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wharf_broker::Broker;

use crate::admin_http::{self, AdminState};
use crate::metrics;
use crate::settings::Settings;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let prometheus = metrics::install()?;
    metrics::spawn_upkeep(prometheus.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin = AdminState::new(prometheus);
    let admin_serving = match settings.admin_addr() {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!("binding the admin listener {addr} (admin_listen; \"off\" disables it)")
            })?;
            tracing::info!(admin_listen = %listener.local_addr()?, "admin HTTP listener started");
            Some(tokio::spawn(admin_http::serve(
                listener,
                Arc::clone(&admin),
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let amqp_addr = settings.amqp_addr();
    let amqp_addr = if amqp_addr.is_some() && !settings.cluster_peers.trim().is_empty() {
        // The AMQP topology (queues, bindings) is a per-node file, not replicated: a node
        // opening it would delete the queue topics other nodes declared (ADR 0012).
        tracing::warn!("AMQP is not served in a cluster yet (its topology is not replicated); amqp_listen is ignored");
        None
    } else {
        amqp_addr
    };
    let amqp_listener = match amqp_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("binding the AMQP listener {addr} (amqp_listen; \"off\" disables it)")
        })?),
        None => None,
    };
    let broker_config = settings.broker_config(bound.port());
    let storage_config = settings.storage_config();
    let data_dir = storage_config.data_dir.clone();
    let cluster = crate::cluster::Cluster::start(
        settings.node_id,
        &settings.cluster_listen,
        &settings.cluster_peers,
    )
    .await?
    .map(|c| c.joining(settings.cluster_join));
    let shard_logs = match &cluster {
        Some(cluster) => {
            tracing::info!(cluster_listen = %cluster.local_addr(), "cluster listener started");
            cluster.shard_log_factory(tokio::runtime::Handle::current())
        }
        None => Box::new(Broker::local_shard_logs),
    };
    let broker = tokio::task::spawn_blocking(move || {
        Broker::open_with_shard_logs(broker_config, storage_config, shard_logs)
    })
    .await?
    .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    if let Some(cluster) = &cluster {
        let cfg = broker.config();
        cluster.advertise(&cfg.advertised_host, cfg.advertised_port);
        broker.set_cluster_view(cluster.state());
        cluster.serve_calls(&broker);
        cluster.follow_leadership(&broker);
        cluster.state().count_leader_changes();
        admin.set_cluster(cluster.state());
    }
    let controller = match &cluster {
        Some(cluster) => Some(
            crate::controller::Controller::start(cluster, broker.clone())
                .await
                .context("starting the controller group")?,
        ),
        None => None,
    };
    let amqp_serving = match amqp_listener {
        Some(amqp_listener) => {
            let b = broker.clone();
            let registry = tokio::task::spawn_blocking(move || wharf_amqp::Registry::open(b))
                .await?
                .context("opening the AMQP topology")?;
            admin.set_amqp(registry.clone());
            tracing::info!(amqp_listen = %amqp_listener.local_addr()?, "wharf is serving AMQP 0-9-1 clients");
            Some(tokio::spawn(wharf_amqp::serve(
                amqp_listener,
                registry,
                settings.amqp_config(),
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    admin.set_broker(broker.clone(), bound.to_string());
    tracing::info!(listen = %bound, data_dir = %data_dir.display(), "wharf is serving Kafka clients");
    let serving = tokio::spawn(wharf_kafka::serve(
        listener,
        broker.clone(),
        settings.listener_config(),
        stop_rx,
    ));
    admin.set_ready(true);
    wait_for_signal().await?;
    tracing::info!("shutting down: closing listener, flushing storage");
    admin.set_ready(false);
    let _ = stop_tx.send(true);
    let _ = serving.await;
    if let Some(amqp_serving) = amqp_serving {
        let _ = amqp_serving.await;
    }
    if let Some(admin_serving) = admin_serving {
        let _ = admin_serving.await;
    }
    if let Some(controller) = &controller {
        controller.shutdown().await;
    }
    if let Some(cluster) = &cluster {
        cluster.shutdown().await;
    }
    broker.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
