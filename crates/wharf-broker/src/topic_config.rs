//! The topic configs Wharf honours, under Kafka's names. An unknown key, or a value Wharf
//! cannot honour, is refused (INVALID_CONFIG) rather than stored and ignored. The one
//! exception is [`NO_OP_KEYS`]: configs Kafka 3.x itself accepts as deprecated no-ops.

use std::collections::BTreeMap;

use wharf_storage::LogConfig;

use crate::BrokerError;

/// Every topic config key Wharf accepts.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "errors.deadletterqueue.group.enable",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
    "wharf.dedup.window.ms",
    "wharf.message.type",
    "wharf.txn.check.after.ms",
    "wharf.txn.check.interval.ms",
    "wharf.txn.check.max",
];

/// Deprecated configs that Kafka itself accepts as no-ops, accepted (validated, stored,
/// described) so that clients and tools that still set them work; they change nothing:
/// - `message.format.version`: deprecated and ignored since Kafka 3.0 (KIP-724); Wharf
///   stores only RecordBatch v2.
/// - `message.downconversion.enable`: a deprecated no-op since Kafka 4.0, which like Wharf
///   serves no Fetch version that would need down-conversion (Wharf: Fetch v4+).
pub const NO_OP_KEYS: &[&str] = &["message.downconversion.enable", "message.format.version"];

/// Configs whose value is a comma-separated list (IncrementalAlterConfigs APPEND/SUBTRACT).
const LIST_KEYS: &[&str] = &["cleanup.policy"];

/// `wharf.message.type`: how the produce path treats a topic's records (ARCHITECTURE
/// decision 12). Only `Delay` and `Transaction` topics read record headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageType {
    #[default]
    Normal,
    Delay,
    Transaction,
}

impl MessageType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Delay => "delay",
            Self::Transaction => "transaction",
        }
    }
}

/// A topic's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub max_message_bytes: i64,
    pub log_append_time: bool,
    pub min_insync_replicas: i32,
    pub message_type: MessageType,
    /// `wharf.dedup.window.ms`: 0 turns deduplication by `wharf-msg-id` off.
    pub dedup_window_ms: i64,
    /// `wharf.txn.check.after.ms`: a half message unresolved this long is checked back.
    pub txn_check_after_ms: i64,
    /// `wharf.txn.check.interval.ms`: time between two checks of one half message.
    pub txn_check_interval_ms: i64,
    /// `wharf.txn.check.max`: checks before a half message is abandoned.
    pub txn_check_max: i32,
    /// KIP-1191's `errors.deadletterqueue.group.enable`: `false` forbids share groups to
    /// dead-letter into this topic. Kafka 4.4 requires `true`; Wharf honours it when set
    /// and otherwise allows it (the effective default is `true`).
    pub dlq_group_enable: bool,
    /// `cleanup.policy` holds `delete`: retention by time and size.
    pub cleanup_delete: bool,
    /// `cleanup.policy` holds `compact`: latest record per key; keyless records refused.
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long a tombstone is kept on a compacted topic.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio` in millionths (kept whole so the config compares exactly).
    pub min_cleanable_dirty_ratio_ppm: u32,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            min_insync_replicas: 1,
            message_type: MessageType::Normal,
            dedup_window_ms: 0,
            txn_check_after_ms: 6_000,
            txn_check_interval_ms: 30_000,
            txn_check_max: 15,
            dlq_group_enable: true,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio_ppm: 500_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

/// Where a config value comes from (Kafka's DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    Topic,
    /// The broker's default.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
}

fn invalid(key: &str, value: &str, reason: &str) -> BrokerError {
    BrokerError::InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_long(key: &str, value: &str, min: i64) -> Result<i64, BrokerError> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not a number"))?;
    if v < min {
        return Err(invalid(key, value, &format!("must be at least {min}")));
    }
    Ok(v)
}

impl TopicConfig {
    /// Applies topic overrides over `defaults`, validating each.
    pub fn resolve(
        defaults: &TopicConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, BrokerError> {
        let mut c = defaults.clone();
        for (key, value) in overrides {
            c.apply(key, value)?;
        }
        Ok(c)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), BrokerError> {
        match key {
            "retention.ms" => self.retention_ms = parse_long(key, value, -1)?,
            "retention.bytes" => self.retention_bytes = parse_long(key, value, -1)?,
            "segment.bytes" => self.segment_bytes = parse_long(key, value, 14)?,
            "segment.ms" => self.segment_ms = parse_long(key, value, 1)?,
            "max.message.bytes" => self.max_message_bytes = parse_long(key, value, 0)?,
            "min.insync.replicas" => self.min_insync_replicas = parse_long(key, value, 1)? as i32,
            "message.timestamp.type" => {
                self.log_append_time = match value {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(invalid(key, value, "must be CreateTime or LogAppendTime")),
                }
            }
            "cleanup.policy" => {
                let policies = list_items(value);
                if policies.is_empty() || policies.iter().any(|&p| p != "delete" && p != "compact")
                {
                    return Err(invalid(
                        key,
                        value,
                        "must be delete, compact or compact,delete",
                    ));
                }
                self.cleanup_delete = policies.contains(&"delete");
                self.cleanup_compact = policies.contains(&"compact");
            }
            "delete.retention.ms" => self.delete_retention_ms = parse_long(key, value, 0)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_long(key, value, 0)?,
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = parse_long(key, value, 1)?,
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(key, value, "not a number"))?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(invalid(key, value, "must be between 0 and 1"));
                }
                self.min_cleanable_dirty_ratio_ppm = (ratio * 1_000_000.0).round() as u32;
            }
            "message.format.version" => {
                if !is_kafka_version(value) {
                    return Err(invalid(key, value, "not a Kafka version such as 3.0-IV1"));
                }
            }
            "message.downconversion.enable" => {
                if value != "true" && value != "false" {
                    return Err(invalid(key, value, "must be true or false"));
                }
            }
            "compression.type" => {
                if value != "producer" {
                    return Err(invalid(key, value, "batches are stored as the producer sent them; only 'producer' is supported"));
                }
            }
            "wharf.message.type" => {
                self.message_type = match value {
                    "normal" => MessageType::Normal,
                    "delay" => MessageType::Delay,
                    "transaction" => MessageType::Transaction,
                    _ => return Err(invalid(key, value, "must be normal, delay or transaction")),
                }
            }
            "errors.deadletterqueue.group.enable" => {
                self.dlq_group_enable = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid(key, value, "must be true or false")),
                }
            }
            "wharf.dedup.window.ms" => self.dedup_window_ms = parse_long(key, value, 0)?,
            "wharf.txn.check.after.ms" => self.txn_check_after_ms = parse_long(key, value, 1)?,
            "wharf.txn.check.interval.ms" => {
                self.txn_check_interval_ms = parse_long(key, value, 1)?;
            }
            "wharf.txn.check.max" => {
                let max = parse_long(key, value, 1)?;
                self.txn_check_max =
                    i32::try_from(max).map_err(|_| invalid(key, value, "must fit in 32 bits"))?;
            }
            _ => return Err(invalid(key, value, "unknown or unsupported topic config")),
        }
        Ok(())
    }

    /// The effective value of every key, for DescribeConfigs.
    pub fn describe(&self, overrides: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|&name| {
                let value = match name {
                    _ if NO_OP_KEYS.contains(&name) => overrides
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| no_op_default(name).to_string()),
                    "cleanup.policy" => match (self.cleanup_compact, self.cleanup_delete) {
                        (true, true) => "compact,delete",
                        (true, false) => "compact",
                        _ => "delete",
                    }
                    .to_string(),
                    "delete.retention.ms" => self.delete_retention_ms.to_string(),
                    "errors.deadletterqueue.group.enable" => self.dlq_group_enable.to_string(),
                    "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
                    "min.cleanable.dirty.ratio" => {
                        format!("{}", f64::from(self.min_cleanable_dirty_ratio_ppm) / 1e6)
                    }
                    "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
                    "compression.type" => "producer".to_string(),
                    "max.message.bytes" => self.max_message_bytes.to_string(),
                    "message.timestamp.type" => if self.log_append_time {
                        "LogAppendTime"
                    } else {
                        "CreateTime"
                    }
                    .to_string(),
                    "min.insync.replicas" => self.min_insync_replicas.to_string(),
                    "retention.bytes" => self.retention_bytes.to_string(),
                    "retention.ms" => self.retention_ms.to_string(),
                    "segment.bytes" => self.segment_bytes.to_string(),
                    "wharf.dedup.window.ms" => self.dedup_window_ms.to_string(),
                    "wharf.message.type" => self.message_type.name().to_string(),
                    "wharf.txn.check.after.ms" => self.txn_check_after_ms.to_string(),
                    "wharf.txn.check.interval.ms" => self.txn_check_interval_ms.to_string(),
                    "wharf.txn.check.max" => self.txn_check_max.to_string(),
                    _ => self.segment_ms.to_string(),
                };
                let source = if overrides.contains_key(name) {
                    ConfigSource::Topic
                } else {
                    ConfigSource::Default
                };
                ConfigEntry {
                    name: name.to_string(),
                    value,
                    source,
                }
            })
            .collect()
    }

    /// The value of list config `key` after IncrementalAlterConfigs APPEND (`append`) or
    /// SUBTRACT of the comma-separated `items`, from its `current` value. Kafka's rules:
    /// APPEND adds items not already present, SUBTRACT removes every occurrence. The result
    /// still has to pass [`TopicConfig::resolve`].
    pub fn edit_list(
        key: &str,
        current: &str,
        items: &str,
        append: bool,
    ) -> Result<String, BrokerError> {
        if !LIST_KEYS.contains(&key) {
            let op = if append { "APPEND" } else { "SUBTRACT" };
            return Err(invalid(
                key,
                items,
                &format!("{op} applies only to list configs"),
            ));
        }
        let mut list = list_items(current);
        let changes = list_items(items);
        if append {
            for item in changes {
                if !list.contains(&item) {
                    list.push(item);
                }
            }
        } else {
            list.retain(|item| !changes.contains(item));
        }
        Ok(list.join(","))
    }

    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes.max(1) as u64,
            segment_ms: self.segment_ms,
            delete: self.cleanup_delete,
            compact: self.cleanup_compact,
            delete_retention_ms: self.delete_retention_ms,
            min_cleanable_dirty_ratio: f64::from(self.min_cleanable_dirty_ratio_ppm) / 1e6,
            min_compaction_lag_ms: self.min_compaction_lag_ms,
            max_compaction_lag_ms: self.max_compaction_lag_ms,
        }
    }
}

/// The items of a comma-separated list value, trimmed, without empty ones.
fn list_items(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

/// What Kafka 3.x describes for a no-op config nobody set.
fn no_op_default(name: &str) -> &'static str {
    match name {
        "message.format.version" => "3.0-IV1",
        _ => "true",
    }
}

/// `MAJOR.MINOR[.PATCH][-IVn]`, the form of Kafka's `message.format.version` values.
fn is_kafka_version(value: &str) -> bool {
    let (numbers, iv) = match value.split_once("-IV") {
        Some((numbers, iv)) => (numbers, Some(iv)),
        None => (value, None),
    };
    let parts: Vec<&str> = numbers.split('.').collect();
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (2..=3).contains(&parts.len()) && parts.iter().all(|p| number(p)) && iv.is_none_or(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_validate_and_describe() {
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1000".to_string());
        let c = TopicConfig::resolve(&TopicConfig::default(), &o).unwrap();
        assert_eq!(c.retention_ms, 1000);
        let d = c.describe(&o);
        let r = d.iter().find(|e| e.name == "retention.ms").unwrap();
        assert_eq!((r.value.as_str(), r.source), ("1000", ConfigSource::Topic));
        o.insert("cleanup.policy".to_string(), "compaction".to_string());
        assert!(matches!(
            TopicConfig::resolve(&TopicConfig::default(), &o),
            Err(BrokerError::InvalidConfig { .. })
        ));
        let mut bad = BTreeMap::new();
        bad.insert("no.such.key".to_string(), "1".to_string());
        assert!(TopicConfig::resolve(&TopicConfig::default(), &bad).is_err());
        bad.clear();
        bad.insert("retention.ms".to_string(), "-5".to_string());
        assert!(TopicConfig::resolve(&TopicConfig::default(), &bad).is_err());
    }

    #[test]
    fn deprecated_no_op_configs_are_accepted_and_described() {
        let mut o = BTreeMap::new();
        o.insert("message.format.version".to_string(), "2.8-IV1".to_string());
        o.insert(
            "message.downconversion.enable".to_string(),
            "false".to_string(),
        );
        let c = TopicConfig::resolve(&TopicConfig::default(), &o).unwrap();
        assert_eq!(c, TopicConfig::default(), "no-op configs change nothing");
        let d = c.describe(&o);
        let value = |name: &str| d.iter().find(|e| e.name == name).unwrap().value.clone();
        assert_eq!(value("message.format.version"), "2.8-IV1");
        assert_eq!(value("message.downconversion.enable"), "false");
        let d = c.describe(&BTreeMap::new());
        let value = |name: &str| d.iter().find(|e| e.name == name).unwrap().value.clone();
        assert_eq!(value("message.format.version"), "3.0-IV1");
        for (key, bad) in [
            ("message.format.version", "latest"),
            ("message.format.version", "3"),
            ("message.format.version", "3.0-IV"),
            ("message.downconversion.enable", "yes"),
        ] {
            let mut o = BTreeMap::new();
            o.insert(key.to_string(), bad.to_string());
            assert!(
                TopicConfig::resolve(&TopicConfig::default(), &o).is_err(),
                "{key}={bad}"
            );
        }
        for good in ["0.10.2", "2.8", "3.0-IV1", "0.11.0-IV2"] {
            assert!(is_kafka_version(good), "{good}");
        }
    }

    #[test]
    fn compaction_configs_reach_the_log_config() {
        let o = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("delete.retention.ms".to_string(), "100".to_string()),
            ("min.cleanable.dirty.ratio".to_string(), "0.25".to_string()),
            ("min.compaction.lag.ms".to_string(), "7".to_string()),
            ("max.compaction.lag.ms".to_string(), "9000".to_string()),
        ]);
        let c = TopicConfig::resolve(&TopicConfig::default(), &o).unwrap();
        let log = c.log_config();
        assert!(log.compact && !log.delete);
        assert_eq!(log.delete_retention_ms, 100);
        assert!((log.min_cleanable_dirty_ratio - 0.25).abs() < 1e-9);
        assert_eq!(
            (log.min_compaction_lag_ms, log.max_compaction_lag_ms),
            (7, 9000)
        );
        let d = c.describe(&o);
        let value = |name: &str| d.iter().find(|e| e.name == name).unwrap().value.clone();
        assert_eq!(value("cleanup.policy"), "compact");
        assert_eq!(value("min.cleanable.dirty.ratio"), "0.25");
        assert!(resolve_one("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(resolve_one("delete.retention.ms", "-1").is_err());
    }

    #[test]
    fn list_configs_append_and_subtract() {
        let edit = TopicConfig::edit_list;
        assert_eq!(
            edit("cleanup.policy", "delete", "delete", true).unwrap(),
            "delete"
        );
        assert_eq!(
            edit("cleanup.policy", "delete", "compact", true).unwrap(),
            "delete,compact"
        );
        assert_eq!(
            edit("cleanup.policy", "delete", "compact", false).unwrap(),
            "delete"
        );
        assert_eq!(
            edit("cleanup.policy", "compact,delete", "compact", false).unwrap(),
            "delete"
        );
        assert_eq!(
            edit("cleanup.policy", "delete", "delete", false).unwrap(),
            ""
        );
        assert!(matches!(
            edit("retention.ms", "1000", "5", true),
            Err(BrokerError::InvalidConfig { .. })
        ));
        // The results are validated as any value: `delete` and `compact`, not empty.
        let resolve = |v: &str| {
            let mut o = BTreeMap::new();
            o.insert("cleanup.policy".to_string(), v.to_string());
            TopicConfig::resolve(&TopicConfig::default(), &o).is_ok()
        };
        assert!(resolve("delete"));
        assert!(resolve("delete,compact"));
        assert!(resolve("compact"));
        assert!(!resolve("compact,archive"));
        assert!(!resolve(""));
    }

    fn resolve_one(key: &str, value: &str) -> Result<TopicConfig, BrokerError> {
        let o = BTreeMap::from([(key.to_string(), value.to_string())]);
        TopicConfig::resolve(&TopicConfig::default(), &o)
    }

    #[test]
    fn wharf_configs_parse_validate_and_describe() {
        let defaults = TopicConfig::default();
        assert_eq!(defaults.message_type, MessageType::Normal);
        assert_eq!(
            (defaults.dedup_window_ms, defaults.txn_check_after_ms),
            (0, 6_000)
        );
        assert_eq!(
            (defaults.txn_check_interval_ms, defaults.txn_check_max),
            (30_000, 15)
        );
        for (name, ty) in [
            ("normal", MessageType::Normal),
            ("delay", MessageType::Delay),
            ("transaction", MessageType::Transaction),
        ] {
            let c = resolve_one("wharf.message.type", name).unwrap();
            assert_eq!(c.message_type, ty);
            let o = BTreeMap::from([("wharf.message.type".to_string(), name.to_string())]);
            let d = c.describe(&o);
            let e = d.iter().find(|e| e.name == "wharf.message.type").unwrap();
            assert_eq!((e.value.as_str(), e.source), (name, ConfigSource::Topic));
        }
        assert_eq!(
            resolve_one("wharf.dedup.window.ms", "60000")
                .unwrap()
                .dedup_window_ms,
            60_000
        );
        assert_eq!(
            resolve_one("wharf.txn.check.max", "3")
                .unwrap()
                .txn_check_max,
            3
        );
        for (key, value) in [
            ("wharf.message.type", "fifo"),
            ("wharf.message.type", "Delay"),
            ("wharf.dedup.window.ms", "-1"),
            ("wharf.dedup.window.ms", "soon"),
            ("wharf.txn.check.after.ms", "0"),
            ("wharf.txn.check.interval.ms", "0"),
            ("wharf.txn.check.max", "0"),
            ("wharf.txn.check.max", "9999999999"),
        ] {
            assert!(
                matches!(
                    resolve_one(key, value),
                    Err(BrokerError::InvalidConfig { .. })
                ),
                "{key}={value} accepted"
            );
        }
    }
}
