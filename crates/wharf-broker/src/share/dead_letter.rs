//! The share groups' dead-letter step (KIP-1191's names): an archived record goes to the
//! group's `errors.deadletterqueue.topic.name` with six `__dlq.errors.*` headers and, when
//! `errors.deadletterqueue.copy.record.enable` is true, the original key, value and headers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::config::ShareGroupConfig;
use super::driver::group_of;
use crate::cursor::{ArchivedRecord, CursorKey, DeadLetterStep, DeadRecord};

pub const HEADER_TOPIC: &str = "__dlq.errors.topic";
pub const HEADER_PARTITION: &str = "__dlq.errors.partition";
pub const HEADER_OFFSET: &str = "__dlq.errors.offset";
pub const HEADER_GROUP: &str = "__dlq.errors.group";
pub const HEADER_DELIVERY_COUNT: &str = "__dlq.errors.delivery.count";
pub const HEADER_MESSAGE: &str = "__dlq.errors.message";

/// Group configs as set, shared with the share coordinator.
pub type GroupConfigs = Arc<Mutex<HashMap<String, BTreeMap<String, String>>>>;

pub struct ShareDeadLetter {
    pub configs: GroupConfigs,
}

impl ShareDeadLetter {
    fn config(&self, group: &str) -> Option<ShareGroupConfig> {
        let configs = self
            .configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let set = configs.get(group).cloned().unwrap_or_default();
        ShareGroupConfig::resolve(&set).ok()
    }
}

fn header(name: &str, value: String) -> (Vec<u8>, Option<Vec<u8>>) {
    (name.as_bytes().to_vec(), Some(value.into_bytes()))
}

impl DeadLetterStep for ShareDeadLetter {
    fn topic(&self, cursor: &CursorKey) -> Option<String> {
        let config = self.config(group_of(&cursor.owner)?)?;
        (!config.dlq_topic.is_empty()).then_some(config.dlq_topic)
    }

    fn record(&self, archived: &ArchivedRecord) -> DeadRecord {
        let group = group_of(&archived.cursor.owner).unwrap_or_default();
        let copy = self.config(group).is_some_and(|c| c.dlq_copy_record);
        let mut out = DeadRecord::default();
        if copy {
            if let Some(r) = &archived.record {
                out.key.clone_from(&r.key);
                out.value.clone_from(&r.value);
                out.headers.clone_from(&r.headers);
            }
        }
        out.headers.extend([
            header(HEADER_TOPIC, archived.cursor.topic.clone()),
            header(HEADER_PARTITION, archived.cursor.partition.to_string()),
            header(HEADER_OFFSET, archived.offset.to_string()),
            header(HEADER_GROUP, group.to_string()),
            header(HEADER_DELIVERY_COUNT, archived.delivery_count.to_string()),
            header(HEADER_MESSAGE, archived.reason.as_str().to_string()),
        ]);
        out
    }

    fn written_for(
        &self,
        headers: &[(&[u8], Option<&[u8]>)],
        cursor: &CursorKey,
        offset: i64,
    ) -> bool {
        let find = |name: &str| {
            headers
                .iter()
                .rev()
                .find(|(n, _)| *n == name.as_bytes())
                .and_then(|(_, v)| *v)
        };
        let group = group_of(&cursor.owner).unwrap_or_default();
        find(HEADER_GROUP) == Some(group.as_bytes())
            && find(HEADER_TOPIC) == Some(cursor.topic.as_bytes())
            && find(HEADER_PARTITION) == Some(cursor.partition.to_string().as_bytes())
            && find(HEADER_OFFSET) == Some(offset.to_string().as_bytes())
    }
}
