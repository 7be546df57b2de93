//! Internal topics whose records are coordinator state (`__consumer_offsets`,
//! `__transaction_state`): created on first open with no retention and compacted (the
//! storage cleaner keeps the latest record per key), replayed in order.

use std::sync::Arc;

use wharf_record::{BatchHeader, RecordIter};
use wharf_storage::Log;

use crate::{Broker, BrokerError, ConfigOp, Topic, TopicSpec};

impl Broker {
    /// The internal topic `name`, created with `partitions` and unlimited retention if missing.
    /// A `compacted` one (coordinator state: the latest record per key is all a replay needs)
    /// has `cleanup.policy=compact` and 100 MiB segments (Kafka's `offsets.topic.segment.bytes`),
    /// so the cleaner reaches sealed segments; a data directory written before compaction gets
    /// the policy set on open.
    pub(crate) fn internal_topic(
        &self,
        name: &str,
        partitions: i32,
        compacted: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        if let Some(t) = self.topic(name) {
            if compacted && !t.config.cleanup_compact {
                let ops = [
                    ConfigOp::Set("cleanup.policy".into(), "compact".into()),
                    ConfigOp::Set("segment.bytes".into(), COMPACTED_SEGMENT_BYTES.into()),
                ];
                self.alter_configs(name, None, &ops, false)?;
                tracing::info!(topic = name, "internal topic is now compacted");
                return self
                    .topic(name)
                    .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                        topic: name.to_string(),
                        partition: -1,
                    });
            }
            return Ok(t);
        }
        let mut configs = vec![("retention.ms", "-1"), ("retention.bytes", "-1")];
        if compacted {
            configs.extend([
                ("cleanup.policy", "compact"),
                ("segment.bytes", COMPACTED_SEGMENT_BYTES),
            ]);
        }
        let spec = TopicSpec {
            name: name.to_string(),
            partitions,
            replication_factor: -1,
            configs: configs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        match self.create_topic(&spec, false) {
            Err(BrokerError::TopicAlreadyExists { .. }) => self
                .topic(name)
                .ok_or_else(|| BrokerError::Metadata(format!("{name} vanished"))),
            other => other,
        }
    }

    /// Creates `name` with one partition if it does not exist (off the async workers).
    pub(crate) async fn ensure_topic(self: &Arc<Self>, name: &str) -> Result<(), BrokerError> {
        if self.topic(name).is_some() {
            return Ok(());
        }
        let broker = self.clone();
        let spec = TopicSpec {
            name: name.to_string(),
            partitions: 1,
            replication_factor: -1,
            configs: std::collections::BTreeMap::new(),
        };
        let created = tokio::task::spawn_blocking(move || broker.create_topic(&spec, false))
            .await
            .map_err(|e| BrokerError::Metadata(format!("creating {name}: {e}")))?;
        match created {
            Ok(_) | Err(BrokerError::TopicAlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The log of the one-partition, compacted internal topic `name` (keyed state: replay
    /// keeps the latest record per key), created if missing.
    pub(crate) fn internal_log(&self, name: &str) -> Result<Log, BrokerError> {
        self.internal_topic(name, 1, true)?
            .partitions
            .first()
            .map(|p| p.log.clone())
            .ok_or_else(|| BrokerError::Metadata(format!("{name} has no partition")))
    }
}

/// `segment.bytes` of compacted internal topics (Kafka's `offsets.topic.segment.bytes`).
const COMPACTED_SEGMENT_BYTES: &str = "104857600";

/// Calls `apply(key, value)` for every keyed record of `log` from its log start, in order;
/// returns how many were applied. Errors are described for the caller to wrap.
pub(crate) fn replay_keyed(
    log: &Log,
    mut apply: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), String>,
) -> Result<usize, String> {
    let start = log.log_start_offset();
    let end = log.high_watermark();
    let mut offset = start;
    let mut count = 0;
    while offset < end {
        let read = log.read(offset, 1 << 20).map_err(|e| e.to_string())?;
        let ranges = wharf_record::split_batches(&read.records).map_err(|e| e.to_string())?;
        if ranges.is_empty() {
            break;
        }
        for range in ranges {
            let bytes = read.records.get(range).unwrap_or_default();
            let batch = BatchHeader::parse(bytes).map_err(|e| e.to_string())?;
            offset = offset.max(batch.last_offset() + 1);
            for record in RecordIter::new(&batch).map_err(|e| e.to_string())? {
                let record = record.map_err(|e| e.to_string())?;
                let (true, Some(key)) = (record.offset >= start, record.key) else {
                    continue;
                };
                apply(key, record.value)?;
                count += 1;
            }
        }
    }
    Ok(count)
}
