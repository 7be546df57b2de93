//! Client quotas on the wire: a request over its client's quota is answered with
//! `throttle_time_ms`, and the client is held back that long. Newer versions (KIP-219:
//! Produce v6+, Fetch v8+) get the answer at once and the connection stops reading for the
//! throttle time, as Kafka mutes the channel (the client waits too); older versions get the
//! answer late.

use std::sync::Mutex;

use tokio::time::Instant;
use wharf_broker::Broker;

/// When a connection may read its next request.
#[derive(Debug, Default)]
pub struct Mute {
    until: Mutex<Option<Instant>>,
}

impl Mute {
    fn hold(&self, until: Instant) {
        let mut slot = self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(slot.map_or(until, |u| u.max(until)));
    }

    /// Waits until the connection is no longer muted.
    pub async fn wait(&self) {
        let until = *self
            .until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// Counts `amount` against `key` for `client_id`; returns `throttle_time_ms` for the answer
/// after muting the connection (`kip219`) or waiting (older versions) that long.
pub async fn apply(
    broker: &Broker,
    mute: &Mute,
    client_id: &str,
    key: &'static str,
    amount: u64,
    kip219: bool,
) -> i32 {
    let wait = broker.throttle(client_id, key, amount);
    if wait.is_zero() {
        return 0;
    }
    let millis = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
    metrics::counter!(
        "wharf_kafka_throttle_time_ms_total",
        "client_id" => client_id.to_string(),
        "quota" => key
    )
    .increment(u64::try_from(millis).unwrap_or(0));
    if kip219 {
        mute.hold(Instant::now() + wait);
    } else {
        tokio::time::sleep(wait).await;
    }
    millis
}
