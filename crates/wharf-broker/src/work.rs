//! How much thread time a request costs, for Kafka's `request_percentage` quota: the time
//! its future spends being polled plus the blocking work it hands to other threads
//! ([`charge`]), never the time it waits parked (a long-polling Fetch, a produce waiting for
//! its fdatasync, a JoinGroup waiting for the rebalance). Kafka counts the same thing: time
//! on its network and request-handler threads, not time in purgatory.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

tokio::task_local! {
    static METER: Arc<AtomicU64>;
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Adds blocking work done on another thread on behalf of the request being measured (a
/// no-op outside [`measure`]).
pub fn charge(work: Duration) {
    let _ = METER.try_with(|m| m.fetch_add(nanos(work), Ordering::Relaxed));
}

/// A future that adds the time each of its polls takes to a meter.
struct Timed<F> {
    inner: Pin<Box<F>>,
    meter: Arc<AtomicU64>,
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        let out = self.inner.as_mut().poll(cx);
        self.meter
            .fetch_add(nanos(started.elapsed()), Ordering::Relaxed);
        out
    }
}

/// Runs `future`, returning its output and the thread time it cost (polls plus what was
/// [`charge`]d inside it).
pub async fn measure<F: Future>(future: F) -> (F::Output, Duration) {
    let meter = Arc::new(AtomicU64::new(0));
    let timed = Timed {
        inner: Box::pin(future),
        meter: meter.clone(),
    };
    let out = METER.scope(meter.clone(), timed).await;
    (out, Duration::from_nanos(meter.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parked_time_is_not_work_and_charged_blocking_work_is() {
        let (value, work) = measure(async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            7
        })
        .await;
        assert_eq!(value, 7);
        assert!(work < Duration::from_millis(400), "{work:?}");
        let ((), work) = measure(async {
            charge(Duration::from_millis(300));
        })
        .await;
        assert!(work >= Duration::from_millis(300), "{work:?}");
        let ((), work) = measure(async {
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_millis(50) {
                std::hint::spin_loop();
            }
        })
        .await;
        assert!(work >= Duration::from_millis(50), "{work:?}");
        // Outside a measurement, charging does nothing (and does not panic).
        charge(Duration::from_secs(1));
    }
}
