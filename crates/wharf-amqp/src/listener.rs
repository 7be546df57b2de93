//! Accepts AMQP connections, at most `max_connections` at once; stops on shutdown.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::{connection, Registry};

/// Settings of the AMQP listener.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `user:password` pairs allowed to log in.
    pub users: Vec<(String, String)>,
    /// Largest frame, negotiated down by clients (RabbitMQ's default 131072).
    pub frame_max: u32,
    pub channel_max: u16,
    /// Heartbeat the server proposes, seconds (0: none).
    pub heartbeat: u16,
    pub max_connections: usize,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            users: vec![("guest".into(), "guest".into())],
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_connections: 10_000,
        }
    }
}

impl AmqpConfig {
    /// Whether `user` with `password` may log in from `peer`; `guest` only from loopback,
    /// as RabbitMQ does.
    pub fn authenticates(&self, user: &str, password: &str, peer: IpAddr) -> bool {
        self.users.iter().any(|(u, p)| u == user && p == password)
            && (user != "guest" || peer.is_loopback())
    }
}

/// Serves AMQP clients on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    config: AmqpConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    registry.start();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let open_connections = metrics::gauge!("wharf_amqp_connections");
    let config = Arc::new(config);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "amqp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = config.max_connections, "amqp connection refused: too many connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (registry, config, shutdown) = (registry.clone(), config.clone(), shutdown.clone());
        let open_connections = open_connections.clone();
        open_connections.increment(1.0);
        tokio::spawn(async move {
            connection::run(stream, peer, registry, config, shutdown).await;
            open_connections.decrement(1.0);
            drop(permit);
        });
    }
    tracing::info!("amqp listener stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_only_from_loopback() {
        let c = AmqpConfig::default();
        assert!(c.authenticates("guest", "guest", "127.0.0.1".parse().unwrap()));
        assert!(!c.authenticates("guest", "guest", "10.0.0.1".parse().unwrap()));
        assert!(!c.authenticates("guest", "wrong", "127.0.0.1".parse().unwrap()));
    }
}
