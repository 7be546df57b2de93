//! `wharf serve`: open storage and broker, listen, serve until SIGTERM/SIGINT, then stop
//! accepting, flush every shard and exit.

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wharf_broker::Broker;

use crate::settings::Settings;

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let bound = listener.local_addr()?;
    let broker_config = settings.broker_config(bound.port());
    let storage_config = settings.storage_config();
    let data_dir = storage_config.data_dir.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config, storage_config))
        .await?
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tracing::info!(listen = %bound, data_dir = %data_dir.display(), "wharf is serving Kafka clients");
    let serving = tokio::spawn(wharf_kafka::serve(
        listener,
        broker.clone(),
        settings.listener_config(),
        stop_rx,
    ));
    wait_for_signal().await?;
    tracing::info!("shutting down: closing listener, flushing storage");
    let _ = stop_tx.send(true);
    let _ = serving.await;
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
