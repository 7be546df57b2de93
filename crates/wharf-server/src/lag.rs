//! Consumer lag read from the broker's own state: for every committed offset of a group, the
//! partition's log end offset (high watermark) minus that offset, never below zero — the
//! same rule `wharf group describe` applies to what the Kafka APIs return.

use wharf_broker::Broker;

/// One committed offset of a group and how far the log has moved past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    /// `None` when the partition no longer exists.
    pub log_end: Option<i64>,
    pub metadata: Option<String>,
}

impl PartitionLag {
    pub fn lag(&self) -> Option<i64> {
        self.log_end.map(|end| (end - self.committed).max(0))
    }
}

/// Every committed offset of `group_id`, sorted by topic and partition, with its log end.
/// Empty for an unknown group (or while the coordinator is loading).
pub fn committed_lag(broker: &Broker, group_id: &str) -> Vec<PartitionLag> {
    let Ok(offsets) = broker.groups().fetch_offsets(group_id, None) else {
        return Vec::new();
    };
    offsets
        .into_iter()
        .filter(|o| o.offset >= 0)
        .map(|o| {
            let log_end = broker
                .partition(&o.topic, o.partition)
                .ok()
                .map(|p| p.log.high_watermark());
            PartitionLag {
                topic: o.topic,
                partition: o.partition,
                committed: o.offset,
                log_end,
                metadata: o.metadata,
            }
        })
        .collect()
}

/// The sum of the known lags.
pub fn total(lags: &[PartitionLag]) -> i64 {
    lags.iter().filter_map(PartitionLag::lag).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_log_end_minus_committed_and_never_negative() {
        let row = |committed, log_end| PartitionLag {
            topic: "t".into(),
            partition: 0,
            committed,
            log_end,
            metadata: None,
        };
        let rows = [row(40, Some(100)), row(7, Some(5)), row(3, None)];
        assert_eq!(rows[0].lag(), Some(60));
        assert_eq!(rows[1].lag(), Some(0));
        assert_eq!(rows[2].lag(), None);
        assert_eq!(total(&rows), 60);
    }
}
