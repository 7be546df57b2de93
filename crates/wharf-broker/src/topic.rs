//! A topic in memory. Immutable: a change (partitions, configs) replaces the `Arc<Topic>`.

use std::collections::BTreeMap;

use wharf_storage::Log;

use crate::TopicConfig;

#[derive(Clone)]
pub struct Partition {
    pub index: i32,
    pub log: Log,
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
