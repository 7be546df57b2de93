//! A group's committed offsets, in memory. Pure: expiry takes `now` and returns what it
//! removed so the coordinator can write the tombstones.

use std::collections::BTreeMap;

use crate::group::records::OffsetValue;

/// (topic, partition) → committed offset.
#[derive(Debug, Clone, Default)]
pub struct Offsets {
    committed: BTreeMap<(String, i32), OffsetValue>,
}

impl Offsets {
    pub fn commit(&mut self, topic: &str, partition: i32, value: OffsetValue) {
        self.committed.insert((topic.to_string(), partition), value);
    }

    pub fn remove(&mut self, topic: &str, partition: i32) -> Option<OffsetValue> {
        self.committed.remove(&(topic.to_string(), partition))
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.committed.get(&(topic.to_string(), partition))
    }

    pub fn is_empty(&self) -> bool {
        self.committed.is_empty()
    }

    /// Every committed offset, sorted by topic and partition.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, &OffsetValue)> {
        self.committed
            .iter()
            .map(|((topic, partition), v)| (topic.as_str(), *partition, v))
    }

    /// Removes the offsets of an empty group that are older than `retention_ms`, counted from
    /// the later of their commit and the moment the group became empty (Kafka's rule since
    /// KIP-211). Returns the removed keys.
    pub fn expire(&mut self, now: i64, empty_since: i64, retention_ms: i64) -> Vec<(String, i32)> {
        let expired: Vec<(String, i32)> = self
            .committed
            .iter()
            .filter(|(_, v)| now.saturating_sub(v.commit_ms.max(empty_since)) >= retention_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.committed.remove(k);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64, commit_ms: i64) -> OffsetValue {
        OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_ms,
        }
    }

    #[test]
    fn expiry_counts_from_the_later_of_commit_and_empty_since() {
        let mut o = Offsets::default();
        o.commit("t", 0, at(5, 1_000));
        o.commit("t", 1, at(6, 50_000));
        // Empty since 10 s: partition 0 expires at 10 s + 60 s, partition 1 at 50 s + 60 s.
        assert!(o.expire(69_999, 10_000, 60_000).is_empty());
        assert_eq!(o.expire(70_000, 10_000, 60_000), vec![("t".to_string(), 0)]);
        assert_eq!(o.get("t", 1).map(|v| v.offset), Some(6));
        assert_eq!(
            o.expire(110_000, 10_000, 60_000),
            vec![("t".to_string(), 1)]
        );
        assert!(o.is_empty());
    }
}
