//! Share-group configs (KIP-932's group configs, Wharf's retry backoff and KIP-1191's
//! dead-letter names): their keys, defaults, validation, and the cursor config they make.

use std::collections::BTreeMap;

use crate::cursor::{CursorConfig, StartFrom};
use crate::BrokerError;

pub const LOCK_DURATION_MS: &str = "share.record.lock.duration.ms";
pub const DELIVERY_COUNT_LIMIT: &str = "share.delivery.count.limit";
pub const AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
pub const ISOLATION_LEVEL: &str = "share.isolation.level";
pub const RETRY_BACKOFF_MS: &str = "wharf.share.retry.backoff.ms";
pub const DLQ_TOPIC: &str = "errors.deadletterqueue.topic.name";
pub const DLQ_COPY_RECORD: &str = "errors.deadletterqueue.copy.record.enable";

/// Every share-group config key, with its default.
pub const SHARE_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    (LOCK_DURATION_MS, "30000"),
    (DELIVERY_COUNT_LIMIT, "5"),
    (AUTO_OFFSET_RESET, "latest"),
    (ISOLATION_LEVEL, "read_uncommitted"),
    (RETRY_BACKOFF_MS, ""),
    (DLQ_TOPIC, ""),
    (DLQ_COPY_RECORD, "false"),
];

/// Records in flight per share partition (Kafka's `group.share.partition.max.record.locks`).
pub const MAX_IN_FLIGHT: usize = 2_000;

/// A share group's configs, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGroupConfig {
    pub lock_ms: i64,
    pub delivery_limit: u16,
    pub start: StartFrom,
    pub read_committed: bool,
    pub retry_backoff_ms: Vec<i64>,
    /// Empty: archive only.
    pub dlq_topic: String,
    pub dlq_copy_record: bool,
}

fn invalid(key: &str, value: &str, reason: &str) -> BrokerError {
    BrokerError::InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks one config; returns the error a client sees.
pub fn validate(key: &str, value: &str) -> Result<(), BrokerError> {
    let mut one = BTreeMap::new();
    one.insert(key.to_string(), value.to_string());
    ShareGroupConfig::resolve(&one).map(|_| ())
}

impl ShareGroupConfig {
    /// The configs `set` on a group over the defaults.
    pub fn resolve(set: &BTreeMap<String, String>) -> Result<Self, BrokerError> {
        let get = |key: &str| -> &str {
            set.get(key).map_or_else(
                || {
                    SHARE_CONFIG_DEFAULTS
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or("", |(_, v)| v)
                },
                String::as_str,
            )
        };
        for key in set.keys() {
            if !SHARE_CONFIG_DEFAULTS.iter().any(|(k, _)| k == key) {
                return Err(invalid(key, &set[key], "not a share-group config"));
            }
        }
        let lock = get(LOCK_DURATION_MS);
        let lock_ms: i64 = lock
            .parse()
            .ok()
            .filter(|v| (1_000..=3_600_000).contains(v))
            .ok_or_else(|| invalid(LOCK_DURATION_MS, lock, "must be 1000..=3600000"))?;
        let limit = get(DELIVERY_COUNT_LIMIT);
        let delivery_limit: u16 = limit
            .parse()
            .ok()
            .filter(|v| (2..=10).contains(v))
            .ok_or_else(|| invalid(DELIVERY_COUNT_LIMIT, limit, "must be 2..=10"))?;
        let reset = get(AUTO_OFFSET_RESET);
        let start = match reset {
            "earliest" => StartFrom::Earliest,
            "latest" => StartFrom::Latest,
            _ => {
                return Err(invalid(
                    AUTO_OFFSET_RESET,
                    reset,
                    "must be earliest or latest",
                ))
            }
        };
        let isolation = get(ISOLATION_LEVEL);
        let read_committed = match isolation {
            "read_committed" => true,
            "read_uncommitted" => false,
            _ => {
                return Err(invalid(
                    ISOLATION_LEVEL,
                    isolation,
                    "must be read_committed or read_uncommitted",
                ))
            }
        };
        let backoff = get(RETRY_BACKOFF_MS);
        let retry_backoff_ms = if backoff.trim().is_empty() {
            Vec::new()
        } else {
            backoff
                .split(',')
                .map(|d| {
                    d.trim()
                        .parse::<i64>()
                        .ok()
                        .filter(|d| (0..=86_400_000).contains(d))
                })
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| {
                    invalid(
                        RETRY_BACKOFF_MS,
                        backoff,
                        "must be a comma-separated list of delays in ms (0..=86400000)",
                    )
                })?
        };
        let copy = get(DLQ_COPY_RECORD);
        let dlq_copy_record = match copy {
            "true" => true,
            "false" => false,
            _ => return Err(invalid(DLQ_COPY_RECORD, copy, "must be true or false")),
        };
        Ok(Self {
            lock_ms,
            delivery_limit,
            start,
            read_committed,
            retry_backoff_ms,
            dlq_topic: get(DLQ_TOPIC).trim().to_string(),
            dlq_copy_record,
        })
    }

    pub fn cursor(&self) -> CursorConfig {
        CursorConfig {
            lock_ms: self.lock_ms,
            delivery_limit: self.delivery_limit,
            retry_backoff_ms: self.retry_backoff_ms.clone(),
            max_in_flight: MAX_IN_FLIGHT,
            start: self.start,
            read_committed: self.read_committed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = ShareGroupConfig::resolve(&BTreeMap::new()).unwrap();
        assert_eq!(c.lock_ms, 30_000);
        assert_eq!(c.delivery_limit, 5);
        assert_eq!(c.start, StartFrom::Latest);
        assert!(!c.read_committed && c.retry_backoff_ms.is_empty() && c.dlq_topic.is_empty());
    }

    #[test]
    fn values_are_checked() {
        let c = ShareGroupConfig::resolve(&set(&[(RETRY_BACKOFF_MS, "1000, 5000,30000")])).unwrap();
        assert_eq!(c.retry_backoff_ms, vec![1_000, 5_000, 30_000]);
        for (k, v) in [
            (DELIVERY_COUNT_LIMIT, "1"),
            (DELIVERY_COUNT_LIMIT, "11"),
            (RETRY_BACKOFF_MS, "1000,x"),
            (AUTO_OFFSET_RESET, "none"),
            (ISOLATION_LEVEL, "x"),
            (DLQ_COPY_RECORD, "yes"),
            ("retention.ms", "1"),
        ] {
            assert!(validate(k, v).is_err(), "{k}={v}");
        }
    }
}
