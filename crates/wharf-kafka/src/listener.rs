//! Accepts Kafka connections, at most `max_connections` at once; stops on shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use wharf_broker::Broker;

use crate::connection;
use crate::fetch_session::{FetchSessions, DEFAULT_CAPACITY};
use crate::rejection::{Rejections, SUMMARY_INTERVAL};

/// Limits that protect the broker from clients.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    /// Requests read ahead of their responses on one connection.
    pub max_in_flight: usize,
    /// Request bytes being served at once on one connection; reading pauses beyond it.
    pub max_in_flight_bytes: usize,
    /// A connection idle this long (or stalled mid-request) is closed.
    pub idle_timeout: std::time::Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_in_flight: 64,
            max_in_flight_bytes: 256 * 1024 * 1024,
            idle_timeout: std::time::Duration::from_secs(600),
        }
    }
}

/// Serves Kafka clients on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: ListenerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let open_connections = metrics::gauge!("wharf_kafka_connections");
    let config = Arc::new(config);
    let rejections = Arc::new(Rejections::new());
    let sessions = Arc::new(FetchSessions::new(DEFAULT_CAPACITY));
    let mut summary = tokio::time::interval(SUMMARY_INTERVAL);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = summary.tick() => {
                rejections.tick(std::time::Instant::now());
                continue;
            }
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = config.max_connections, "connection refused: too many connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        let rejections = rejections.clone();
        let sessions = sessions.clone();
        let open_connections = open_connections.clone();
        open_connections.increment(1.0);
        tokio::spawn(async move {
            connection::run(stream, peer, broker, config, rejections, sessions, shutdown).await;
            open_connections.decrement(1.0);
            drop(permit);
        });
    }
    rejections.flush();
    tracing::info!("kafka listener stopped");
}
