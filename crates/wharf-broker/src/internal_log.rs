//! Internal topics whose records are coordinator state (`__consumer_offsets`,
//! `__transaction_state`): created on first open with no retention, replayed in order.

use std::sync::Arc;

use wharf_record::{BatchHeader, RecordIter};
use wharf_storage::Log;

use crate::{Broker, BrokerError, Topic, TopicSpec};

impl Broker {
    /// The internal topic `name`, created with `partitions` and unlimited retention if missing.
    pub(crate) fn internal_topic(
        &self,
        name: &str,
        partitions: i32,
    ) -> Result<Arc<Topic>, BrokerError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let spec = TopicSpec {
            name: name.to_string(),
            partitions,
            replication_factor: -1,
            configs: [("retention.ms", "-1"), ("retention.bytes", "-1")]
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

    /// The log of the one-partition internal topic `name`, created if missing.
    pub(crate) fn internal_log(&self, name: &str) -> Result<Log, BrokerError> {
        self.internal_topic(name, 1)?
            .partitions
            .first()
            .map(|p| p.log.clone())
            .ok_or_else(|| BrokerError::Metadata(format!("{name} has no partition")))
    }
}

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
