//! Requests refused before any handler runs (malformed, oversized, an unknown API or an
//! unsupported version). Each closes its connection, as Kafka does. A hostile client can
//! send thousands a second, so each is logged at debug only, counted in
//! `wharf_kafka_rejected_requests_total{reason}`, and summarised (counts per peer address,
//! reason and API, and the first error as an example) in at most one warning per
//! [`SUMMARY_INTERVAL`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;

use crate::codec::CodecError;

/// How often the listener logs what was rejected meanwhile (if anything was).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Distinct (peer, reason, API) entries kept between summaries; the rest are only counted.
const MAX_SOURCES: usize = 1024;
/// Entries named in one summary line, the largest first.
const SUMMARY_SOURCES: usize = 10;

/// Why a request was refused: the `reason` label of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Malformed,
    Oversized,
    UnknownApi,
    UnsupportedVersion,
}

impl Reason {
    const ALL: [Reason; 4] = [
        Reason::Malformed,
        Reason::Oversized,
        Reason::UnknownApi,
        Reason::UnsupportedVersion,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Oversized => "oversized",
            Reason::UnknownApi => "unknown_api",
            Reason::UnsupportedVersion => "unsupported_version",
        }
    }
}

/// A request the broker refuses to serve; its connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame size {size} outside 8..={max}")]
    FrameSize { size: i32, max: usize },
    #[error("stream ended inside a frame: {have} of {want} bytes")]
    Truncated { have: usize, want: usize },
    #[error("unknown api_key {api_key}")]
    UnknownApi { api_key: i16 },
    #[error("api_key {api_key} ({api:?}) is not implemented")]
    NotImplemented { api_key: i16, api: ApiKey },
    #[error("{api:?} v{version} is not supported ({min}..={max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("{api:?} v{version}: bad request header: {message}")]
    Header {
        api: ApiKey,
        version: i16,
        message: String,
    },
    #[error("request body")]
    Body(#[source] CodecError),
}

impl ProtocolError {
    pub fn reason(&self) -> Reason {
        match self {
            ProtocolError::FrameSize { size, max } => {
                if usize::try_from(*size).is_ok_and(|s| s > *max) {
                    Reason::Oversized
                } else {
                    Reason::Malformed
                }
            }
            ProtocolError::UnknownApi { .. } | ProtocolError::NotImplemented { .. } => {
                Reason::UnknownApi
            }
            ProtocolError::UnsupportedVersion { .. } => Reason::UnsupportedVersion,
            ProtocolError::Truncated { .. }
            | ProtocolError::Header { .. }
            | ProtocolError::Body(_) => Reason::Malformed,
        }
    }

    /// The API named by the request, when its header got that far.
    fn api(&self) -> Option<ApiKey> {
        match self {
            ProtocolError::NotImplemented { api, .. }
            | ProtocolError::UnsupportedVersion { api, .. }
            | ProtocolError::Header { api, .. }
            | ProtocolError::Body(
                CodecError::Decode { api, .. } | CodecError::Encode { api, .. },
            ) => Some(*api),
            _ => None,
        }
    }
}

/// Rejections since the last summary.
#[derive(Default)]
struct Pending {
    by_source: BTreeMap<(IpAddr, Reason, Option<i16>), u64>,
    /// Rejections from sources beyond [`MAX_SOURCES`].
    unlisted: u64,
    /// The first rejection since the last summary, as text.
    example: String,
}

/// One warning's worth: what was rejected since the previous one.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub total: u64,
    /// `peer reason [API]: count`, largest first.
    pub sources: String,
    pub example: String,
}

impl Summary {
    fn log(&self) {
        // A root event: a summary spans many connections, not the one that triggered it.
        tracing::warn!(
            parent: None,
            total = self.total,
            sources = %self.sources,
            example = %self.example,
            "rejected requests, closing connection of each (at most one summary per {} s; \
             each at debug level)",
            SUMMARY_INTERVAL.as_secs()
        );
    }
}

struct Tally {
    pending: Pending,
    last_summary: Option<Instant>,
}

/// The listener's record of rejected requests, shared by its connections. A summary is
/// logged at the first rejection after a quiet [`SUMMARY_INTERVAL`], then at most once per
/// interval (on a rejection or on the listener's tick).
pub struct Rejections {
    counters: [metrics::Counter; 4],
    tally: Mutex<Tally>,
}

impl Default for Rejections {
    fn default() -> Self {
        Self::new()
    }
}

impl Rejections {
    pub fn new() -> Self {
        Self {
            counters: Reason::ALL.map(
                |r| metrics::counter!("wharf_kafka_rejected_requests_total", "reason" => r.label()),
            ),
            tally: Mutex::new(Tally {
                pending: Pending::default(),
                last_summary: None,
            }),
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one rejected request from `peer` at `now`, logging a summary if one is due;
    /// the caller closes the connection.
    pub fn record(&self, peer: IpAddr, error: &ProtocolError, now: Instant) {
        if let Some(summary) = self.count(peer, error, now) {
            summary.log();
        }
    }

    /// Logs what was rejected since the last summary, if a summary is due at `now`.
    pub fn tick(&self, now: Instant) {
        if let Some(summary) = self.summary_due(now) {
            summary.log();
        }
    }

    /// Logs whatever is pending, due or not (at shutdown).
    pub fn flush(&self) {
        let mut tally = self.tally();
        if let Some(summary) = take_summary(&mut tally.pending) {
            summary.log();
        }
    }

    fn count(&self, peer: IpAddr, error: &ProtocolError, now: Instant) -> Option<Summary> {
        let reason = error.reason();
        tracing::debug!(reason = reason.label(), error = %ErrorChain(error), "closing connection: request rejected");
        if let Some(c) = Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.counters.get(i))
        {
            c.increment(1);
        }
        let mut tally = self.tally();
        let pending = &mut tally.pending;
        if pending.example.is_empty() {
            pending.example = format!("{peer}: {}", ErrorChain(error));
        }
        let key = (peer, reason, error.api().map(|a| a as i16));
        if pending.by_source.len() < MAX_SOURCES || pending.by_source.contains_key(&key) {
            *pending.by_source.entry(key).or_default() += 1;
        } else {
            pending.unlisted += 1;
        }
        drop(tally);
        self.summary_due(now)
    }

    fn summary_due(&self, now: Instant) -> Option<Summary> {
        let mut tally = self.tally();
        if tally
            .last_summary
            .is_some_and(|last| now.saturating_duration_since(last) < SUMMARY_INTERVAL)
        {
            return None;
        }
        let summary = take_summary(&mut tally.pending)?;
        tally.last_summary = Some(now);
        Some(summary)
    }
}

/// What `pending` holds, as a summary (`None` if nothing); resets it.
fn take_summary(pending: &mut Pending) -> Option<Summary> {
    let pending = std::mem::take(pending);
    let total = pending.by_source.values().sum::<u64>() + pending.unlisted;
    if total == 0 {
        return None;
    }
    let mut sources: Vec<_> = pending.by_source.into_iter().collect();
    sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut parts: Vec<String> = sources
        .iter()
        .take(SUMMARY_SOURCES)
        .map(|((peer, reason, api), count)| {
            let api = api
                .and_then(|k| ApiKey::try_from(k).ok())
                .map_or(String::new(), |a| format!(" {a:?}"));
            format!("{peer} {}{api}: {count}", reason.label())
        })
        .collect();
    let rest = sources
        .iter()
        .skip(SUMMARY_SOURCES)
        .map(|s| s.1)
        .sum::<u64>()
        + pending.unlisted;
    if rest > 0 {
        parts.push(format!("others: {rest}"));
    }
    Some(Summary {
        total,
        sources: parts.join(", "),
        example: pending.example,
    })
}

/// An error and its sources, `: `-separated.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_the_error() {
        let oversized = ProtocolError::FrameSize {
            size: i32::MAX,
            max: 100,
        };
        assert_eq!(oversized.reason(), Reason::Oversized);
        let negative = ProtocolError::FrameSize { size: -5, max: 100 };
        assert_eq!(negative.reason(), Reason::Malformed);
        assert_eq!(
            ProtocolError::UnknownApi { api_key: 999 }.reason(),
            Reason::UnknownApi
        );
        let old = ProtocolError::UnsupportedVersion {
            api: ApiKey::Produce,
            version: 0,
            min: 3,
            max: 9,
        };
        assert_eq!(old.reason(), Reason::UnsupportedVersion);
        assert_eq!(old.api(), Some(ApiKey::Produce));
    }

    fn unknown_api() -> ProtocolError {
        ProtocolError::UnknownApi { api_key: 999 }
    }

    #[test]
    fn first_rejection_is_summarised_at_once_then_once_per_interval() {
        let r = Rejections::new();
        let start = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = r.count(a, &unknown_api(), start).unwrap();
        assert_eq!(first.total, 1);
        assert_eq!(first.example, "10.0.0.1: unknown api_key 999");
        for _ in 0..2 {
            assert_eq!(
                r.count(a, &unknown_api(), start + Duration::from_secs(1)),
                None
            );
        }
        let old = ProtocolError::UnsupportedVersion {
            api: ApiKey::Produce,
            version: 0,
            min: 3,
            max: 9,
        };
        assert_eq!(r.count(b, &old, start + Duration::from_secs(2)), None);
        assert_eq!(r.summary_due(start + Duration::from_secs(9)), None);
        let next = r.summary_due(start + SUMMARY_INTERVAL).unwrap();
        assert_eq!(
            (next.total, next.sources.as_str()),
            (
                3,
                "10.0.0.1 unknown_api: 2, 10.0.0.2 unsupported_version Produce: 1"
            )
        );
        assert_eq!(next.example, "10.0.0.1: unknown api_key 999");
        assert_eq!(
            r.summary_due(start + 3 * SUMMARY_INTERVAL),
            None,
            "nothing pending"
        );
        assert!(r
            .count(a, &unknown_api(), start + 3 * SUMMARY_INTERVAL)
            .is_some());
    }

    #[test]
    fn sources_are_bounded() {
        let r = Rejections::new();
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 51) {
            let peer = IpAddr::from(std::net::Ipv4Addr::from(i));
            let _ = r.count(peer, &unknown_api(), now);
        }
        // The first was summarised on its own; the rest wait for the interval.
        let summary = r.summary_due(now + SUMMARY_INTERVAL).unwrap();
        assert_eq!(summary.total, MAX_SOURCES as u64 + 50);
        assert!(
            summary
                .sources
                .ends_with(&format!("others: {}", MAX_SOURCES - SUMMARY_SOURCES + 50)),
            "{}",
            summary.sources
        );
        assert_eq!(summary.sources.matches(", ").count(), SUMMARY_SOURCES);
    }
}
