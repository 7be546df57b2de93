//! A topic in memory. Immutable: a change (partitions, configs) replaces the `Arc<Topic>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use wharf_record::BatchHeader;
use wharf_storage::Log;

use crate::TopicConfig;

#[derive(Clone)]
pub struct Partition {
    pub index: i32,
    pub log: Log,
    /// The topic's traffic counters, shared by its partitions.
    pub counters: Arc<TopicCounters>,
}

/// Records and bytes in and out of one topic, registered once per topic so the produce and
/// fetch paths touch no label set or name lookup.
pub struct TopicCounters {
    pub records_in: metrics::Counter,
    pub bytes_in: metrics::Counter,
    records_out: metrics::Counter,
    bytes_out: metrics::Counter,
}

impl TopicCounters {
    pub fn new(topic: &str) -> Self {
        let label = topic.to_string();
        Self {
            records_in: metrics::counter!("wharf_topic_records_in_total", "topic" => label.clone()),
            bytes_in: metrics::counter!("wharf_topic_bytes_in_total", "topic" => label.clone()),
            records_out: metrics::counter!("wharf_topic_records_out_total", "topic" => label.clone()),
            bytes_out: metrics::counter!("wharf_topic_bytes_out_total", "topic" => label),
        }
    }

    /// Counts what a fetch returns: the records of whole batches (by their headers) and every
    /// byte.
    pub fn count_out(&self, batches: &[u8]) {
        let mut records = 0u64;
        let mut at = 0usize;
        while let Some(header) = batches.get(at..).and_then(|b| BatchHeader::parse(b).ok()) {
            records += u64::try_from(header.records_count()).unwrap_or(0);
            at += header.len().max(1);
        }
        self.records_out.increment(records);
        self.bytes_out.increment(batches.len() as u64);
    }
}

pub struct Topic {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: Vec<Partition>,
    pub config: TopicConfig,
    /// The configs set on this topic (the rest are broker defaults).
    pub overrides: BTreeMap<String, String>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Partition> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    /// Internal topics (`__consumer_offsets` and the like) start with two underscores.
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }
}
