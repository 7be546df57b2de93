//! Configuration, layered: embedded defaults, then a TOML file, then `WHARF_<KEY>` environment
//! variables, then `--set key=value` flags (and the dedicated flags). Keys are the field
//! names below; the README lists them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use wharf_amqp::AmqpConfig;
use wharf_broker::group::{ConsumerGroupConfig, CoordinatorConfig, GroupConfig};
use wharf_broker::{BrokerConfig, StorageConfig, TopicConfig};
use wharf_kafka::ListenerConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Kafka listener address.
    pub listen: String,
    /// Admin HTTP listener (health, readiness, `/metrics`, `/v1/` JSON); empty or "off"
    /// disables it.
    pub admin_listen: String,
    /// Host advertised in Metadata (default: the listen host).
    pub advertised_host: Option<String>,
    /// Port advertised in Metadata (default: the bound port).
    pub advertised_port: Option<u16>,
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    /// Shard logs (default: one per core).
    pub shards: Option<usize>,
    pub log_segment_bytes: u64,
    pub log_roll_ms: i64,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_retention_check_interval_ms: u64,
    pub log_flush_interval_ms: u64,
    /// While its disk is busy, a shard starts a round of acks=all fdatasyncs at most once per
    /// this many microseconds (at most 100,000); groups handed over meanwhile share it (ADR
    /// 0023). 0: no pacing.
    pub log_sync_min_interval_us: u64,
    /// Start even when a segment is damaged in a way that is not a torn tail, cutting it at
    /// the damage (what follows is lost). Off: such damage stops the start with its location.
    pub recovery_truncate_damaged: bool,
    pub message_max_bytes: i64,
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight_requests: usize,
    pub max_in_flight_bytes: usize,
    pub connection_idle_timeout_ms: u64,
    /// Committed offsets of an empty group expire after this long (Kafka's name).
    pub offsets_retention_minutes: i64,
    /// How long the first rebalance of an empty group waits for more members.
    pub group_initial_rebalance_delay_ms: i64,
    /// Kafka's `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub group_consumer_session_timeout_ms: i32,
    /// Kafka's `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub group_consumer_heartbeat_interval_ms: i32,
    /// Kafka's `producer.id.expiration.ms`: idempotence state of an idle producer is dropped.
    pub producer_id_expiration_ms: i64,
    /// Kafka's `transactional.id.expiration.ms`: an idle transactional id is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// Kafka's `transaction.max.timeout.ms`: larger `transaction.timeout.ms` are refused.
    pub transaction_max_timeout_ms: i32,
    /// The longest delay a message on a `delay` topic may ask for (default 3 days).
    pub max_delay_ms: i64,
    /// KIP-1191's `errors.deadletterqueue.topic.name.prefix` (e.g. `dlq.`): when set, share
    /// groups may only name dead-letter topics that start with it.
    pub errors_deadletterqueue_topic_name_prefix: String,
    /// `tracing` filter, e.g. `info` or `wharf_kafka=debug`.
    pub log_level: String,
    /// Test hook for kill -9 tests of compaction: the cleaner aborts the process right after
    /// this step of a segment swap (`written`, `index_removed`, `renamed`). Empty: off.
    pub log_cleaner_abort_at: String,
    /// AMQP 0-9-1 listener address; empty or "off" disables it.
    pub amqp_listen: String,
    /// AMQP users, `user:password` separated by commas (`guest` logs in from loopback only).
    pub amqp_users: String,
    /// Largest AMQP frame the server accepts (clients may negotiate it down).
    pub amqp_frame_max: u32,
    /// Most channels per AMQP connection.
    pub amqp_channel_max: u16,
    /// Heartbeat interval the server proposes, seconds (0: none).
    pub amqp_heartbeat: u16,
    /// Node-to-node listener of a cluster (ADR 0012); required when `cluster_peers` is set.
    pub cluster_listen: String,
    /// Every node's cluster listener, itself included: `ID@HOST:PORT,...` (KRaft's
    /// `controller.quorum.voters` format). Empty: the single node of today.
    pub cluster_peers: String,
    /// Byte budget of sealed segments' indexes loaded from their index files (ADR 0018).
    pub sealed_index_cache_bytes: u64,
    /// How far ahead of its writer each shard's active segment is zero-filled and synced
    /// (ADR 0021); 0 turns it off.
    pub log_segment_preallocate_bytes: u64,
    /// A new node joining a running cluster (ADR 0019): it never initializes its raft groups
    /// and waits for `wharf cluster add-node` to add it.
    pub cluster_join: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let topic = TopicConfig::default();
        let listener = ListenerConfig::default();
        let amqp = AmqpConfig::default();
        Self {
            listen: "127.0.0.1:9092".into(),
            admin_listen: "127.0.0.1:9644".into(),
            advertised_host: None,
            advertised_port: None,
            data_dir: PathBuf::from("./wharf-data"),
            node_id: 0,
            auto_create_topics: true,
            num_partitions: 1,
            shards: None,
            log_segment_bytes: topic.segment_bytes as u64,
            log_roll_ms: topic.segment_ms,
            log_retention_ms: topic.retention_ms,
            log_retention_bytes: topic.retention_bytes,
            log_retention_check_interval_ms: 30_000,
            log_flush_interval_ms: 1_000,
            log_sync_min_interval_us: wharf_storage::DEFAULT_SYNC_MIN_INTERVAL.as_micros() as u64,
            recovery_truncate_damaged: false,
            message_max_bytes: topic.max_message_bytes,
            max_frame_bytes: listener.max_frame_bytes,
            max_connections: listener.max_connections,
            max_in_flight_requests: listener.max_in_flight,
            max_in_flight_bytes: listener.max_in_flight_bytes,
            connection_idle_timeout_ms: listener.idle_timeout.as_millis() as u64,
            offsets_retention_minutes: 10_080,
            group_initial_rebalance_delay_ms: 3_000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            producer_id_expiration_ms: 86_400_000,
            transactional_id_expiration_ms: 604_800_000,
            transaction_max_timeout_ms: 900_000,
            max_delay_ms: 259_200_000,
            errors_deadletterqueue_topic_name_prefix: String::new(),
            log_level: "info".into(),
            log_cleaner_abort_at: String::new(),
            amqp_listen: "127.0.0.1:5672".into(),
            amqp_users: "guest:guest".into(),
            amqp_frame_max: amqp.frame_max,
            amqp_channel_max: amqp.channel_max,
            amqp_heartbeat: amqp.heartbeat,
            cluster_listen: String::new(),
            cluster_peers: String::new(),
            sealed_index_cache_bytes: 64 << 20,
            log_segment_preallocate_bytes: wharf_storage::DEFAULT_PREALLOCATE_BYTES,
            cluster_join: false,
        }
    }
}

/// Parses a `key=value` pair; the value is read as TOML (number, bool) or else as a string.
fn value_of(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

impl Settings {
    /// Layers the sources. `env` is the process environment (injected for tests).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?
                .parse::<toml::Table>()
                .with_context(|| format!("parsing config file {}", path.display()))?,
            None => toml::Table::new(),
        };
        for (key, value) in env {
            if let Some(name) = key.strip_prefix("WHARF_") {
                if name == "CONFIG" {
                    continue;
                }
                table.insert(name.to_ascii_lowercase(), value_of(&value));
            }
        }
        for (key, value) in overrides {
            table.insert(key.replace(['.', '-'], "_"), value_of(value));
        }
        Settings::deserialize(toml::Value::Table(table)).context("invalid configuration")
    }

    /// The admin HTTP address, or `None` when it is disabled.
    pub fn admin_addr(&self) -> Option<&str> {
        let addr = self.admin_listen.trim();
        (!addr.is_empty() && !addr.eq_ignore_ascii_case("off")).then_some(addr)
    }

    pub fn broker_config(&self, bound_port: u16) -> BrokerConfig {
        let listen_host = self.listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
        let defaults = TopicConfig {
            retention_ms: self.log_retention_ms,
            retention_bytes: self.log_retention_bytes,
            segment_bytes: self.log_segment_bytes as i64,
            segment_ms: self.log_roll_ms,
            max_message_bytes: self.message_max_bytes,
            ..TopicConfig::default()
        };
        BrokerConfig {
            node_id: self.node_id,
            advertised_host: self.advertised_host.clone().unwrap_or_else(|| {
                if listen_host == "0.0.0.0" {
                    "127.0.0.1".into()
                } else {
                    listen_host.to_string()
                }
            }),
            advertised_port: i32::from(self.advertised_port.unwrap_or(bound_port)),
            auto_create_topics: self.auto_create_topics,
            num_partitions: self.num_partitions,
            topic_defaults: defaults,
            groups: CoordinatorConfig {
                group: GroupConfig {
                    initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms.max(0),
                    consumer: ConsumerGroupConfig {
                        session_timeout_ms: self.group_consumer_session_timeout_ms.max(1),
                        heartbeat_interval_ms: self.group_consumer_heartbeat_interval_ms.max(1),
                        ..ConsumerGroupConfig::default()
                    },
                    ..GroupConfig::default()
                },
                offsets_retention_ms: self.offsets_retention_minutes.max(1) * 60_000,
                ..CoordinatorConfig::default()
            },
            producer_id_expiration_ms: self.producer_id_expiration_ms.max(1),
            producer_snapshot: wharf_broker::producer::SnapshotPolicy::default(),
            transactions: wharf_broker::txn::TxnConfig {
                max_timeout_ms: self.transaction_max_timeout_ms.max(1),
                id_expiration_ms: self.transactional_id_expiration_ms.max(1),
            },
            max_delay_ms: self.max_delay_ms.max(0),
            dlq_topic_name_prefix: self.errors_deadletterqueue_topic_name_prefix.clone(),
            clustered: !self.cluster_peers.trim().is_empty(),
        }
    }

    pub fn storage_config(&self) -> StorageConfig {
        let mut c = StorageConfig::new(&self.data_dir);
        if let Some(shards) = self.shards {
            c.shards = shards.max(1);
        }
        c.segment_bytes = self.log_segment_bytes;
        c.segment_ms = self.log_roll_ms;
        c.flush_interval = Duration::from_millis(self.log_flush_interval_ms);
        c.sync_min_interval = Duration::from_micros(self.log_sync_min_interval_us.min(100_000));
        c.truncate_damaged = self.recovery_truncate_damaged;
        c.retention_check_interval =
            Duration::from_millis(self.log_retention_check_interval_ms.max(10));
        c.cleaner_abort_at = wharf_storage::SwapStep::parse(&self.log_cleaner_abort_at);
        c.sealed_index_cache_bytes = self.sealed_index_cache_bytes;
        c.preallocate_bytes = self.log_segment_preallocate_bytes;
        c
    }

    /// The AMQP address, or `None` when it is disabled.
    pub fn amqp_addr(&self) -> Option<&str> {
        let addr = self.amqp_listen.trim();
        (!addr.is_empty() && !addr.eq_ignore_ascii_case("off")).then_some(addr)
    }

    pub fn amqp_config(&self) -> AmqpConfig {
        AmqpConfig {
            users: self
                .amqp_users
                .split(',')
                .filter_map(|pair| pair.trim().split_once(':'))
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            frame_max: self.amqp_frame_max.max(4096),
            channel_max: self.amqp_channel_max.max(1),
            heartbeat: self.amqp_heartbeat,
            max_connections: self.max_connections,
        }
    }

    pub fn listener_config(&self) -> ListenerConfig {
        ListenerConfig {
            max_frame_bytes: self.max_frame_bytes,
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight_requests.max(1),
            max_in_flight_bytes: self.max_in_flight_bytes.max(1),
            idle_timeout: Duration::from_millis(self.connection_idle_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nnum_partitions = 3\nlog_level = \"debug\"\n",
        )
        .unwrap();
        let env = vec![
            ("WHARF_NUM_PARTITIONS".to_string(), "5".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let s = Settings::load(Some(&file), env, &[("log-level".into(), "warn".into())]).unwrap();
        assert_eq!(s.listen, "127.0.0.1:1");
        assert_eq!(s.num_partitions, 5);
        assert_eq!(s.log_level, "warn");
        assert!(s.auto_create_topics);
        assert!(Settings::load(None, vec![("WHARF_NO_SUCH".into(), "1".into())], &[]).is_err());
        assert_eq!(s.admin_addr(), Some("127.0.0.1:9644"));
        assert_eq!(s.amqp_addr(), Some("127.0.0.1:5672"));
        let off =
            Settings::load(None, Vec::new(), &[("amqp_listen".into(), "off".into())]).unwrap();
        assert_eq!(off.amqp_addr(), None);
        for off in ["", "off", "OFF"] {
            let s =
                Settings::load(None, Vec::new(), &[("admin_listen".into(), off.into())]).unwrap();
            assert_eq!(s.admin_addr(), None, "{off:?}");
        }
    }
}
