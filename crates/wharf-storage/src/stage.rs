//! Stage stamps of the acks=all produce → fetch path (ADR 0017): each hand-off of a record
//! between the connection, the shard writer and the fetch that delivers it is timed into
//! `wharf_produce_stage_seconds{stage}` and `wharf_fetch_stage_seconds{stage}`.
//!
//! ```text
//!  frame read ─receive─► shard queue ─queue─► writer ─write─► ─fdatasync─► ─publish─► reply
//!                                                                │            └─ack─► produce task
//!                                     parked fetch ◄─────wake────┘ ─read─► response ─response_write─►
//! ```
//!
//! Off unless [`enable`] was called (the server does, once its metrics recorder is
//! installed): every stamp is then `None`, so the path pays one relaxed load per stamp and
//! reads no clock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crate::LogId;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The instant publish stamps count from (nanoseconds in an `AtomicU64`).
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

pub const PRODUCE_METRIC: &str = "wharf_produce_stage_seconds";
pub const FETCH_METRIC: &str = "wharf_fetch_stage_seconds";

/// Turns stage stamps on for this process.
pub fn enable() {
    LazyLock::force(&ORIGIN);
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Now, when stamps are on.
pub fn now() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// One stage's histogram, registered once by its owner.
pub fn produce_histogram(stage: &'static str) -> metrics::Histogram {
    metrics::histogram!(PRODUCE_METRIC, "stage" => stage)
}

pub fn fetch_histogram(stage: &'static str) -> metrics::Histogram {
    metrics::histogram!(FETCH_METRIC, "stage" => stage)
}

/// Records the time since `from`, when stamped.
pub fn record_since(histogram: &metrics::Histogram, from: Option<Instant>) {
    if let Some(from) = from {
        histogram.record(from.elapsed().as_secs_f64());
    }
}

fn nanos(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*ORIGIN).as_nanos()).unwrap_or(u64::MAX)
}

/// Slots of the publish ring: a fetch woken more than this many publishes of its shard ago
/// is not timed.
const RING: usize = 256;

/// The last publishes of one shard (log id and instant), written by its writer thread only,
/// so a woken fetch can find the publish that woke it: the first one of its logs after it
/// parked.
pub(crate) struct Publishes {
    count: AtomicU64,
    logs: [AtomicU64; RING],
    at: [AtomicU64; RING],
}

/// How far a shard's publishes had gone when a fetch parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishMark {
    pub(crate) shard: usize,
    pub(crate) count: u64,
}

impl Publishes {
    pub fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            logs: std::array::from_fn(|_| AtomicU64::new(0)),
            at: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Called by the single writer before it wakes the log's fetchers.
    pub fn record(&self, log: LogId, at: Instant) {
        let n = self.count.load(Ordering::Relaxed);
        let slot = (n % RING as u64) as usize;
        self.logs[slot].store(log, Ordering::Relaxed);
        self.at[slot].store(nanos(at), Ordering::Relaxed);
        self.count.store(n + 1, Ordering::Release);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// The instant of the first publish of one of `logs` after `mark`, while the ring still
    /// holds it.
    pub fn first_after(&self, mark: u64, logs: &[LogId]) -> Option<Instant> {
        let end = self.count();
        let start = mark.max(end.saturating_sub(RING as u64));
        if start != mark {
            return None;
        }
        for n in start..end {
            let slot = (n % RING as u64) as usize;
            let log = self.logs[slot].load(Ordering::Relaxed);
            let at = self.at[slot].load(Ordering::Relaxed);
            // The slot may have been reused while it was read.
            if self.count().saturating_sub(n) >= RING as u64 {
                return None;
            }
            if logs.contains(&log) {
                return Some(*ORIGIN + Duration::from_nanos(at));
            }
        }
        None
    }
}
