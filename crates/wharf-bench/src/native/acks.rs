//! Checking Produce answers: every partition of a request answered, error codes counted as
//! failed records, base offsets increasing per partition on one connection; and, over all
//! connections, acked offset ranges that never overlap.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use kafka_protocol::messages::ProduceResponse;

use super::error_name;
use super::produce::ProduceSlot;

/// `(topic index, partition)`: where a batch went.
pub type PartitionKey = (usize, i32);

/// What one connection saw acknowledged.
#[derive(Debug, Default)]
pub struct Tally {
    pub acked_records: u64,
    pub failed_records: u64,
    pub first_error: Option<String>,
    /// Acked `(base offset, record count)` per partition, in the order acked.
    pub acked: BTreeMap<PartitionKey, Vec<(i64, i64)>>,
}

impl Tally {
    /// Checks the answer to `slot` (each batch holds `records` records); a protocol-level
    /// surprise (a partition missing, offsets going back) is an error, an error code a
    /// failed delivery.
    pub fn check(
        &mut self,
        topics: &[String],
        slot: &ProduceSlot,
        records: i32,
        response: &ProduceResponse,
    ) -> anyhow::Result<()> {
        for &(topic_index, partition) in &slot.partitions {
            let topic = &topics[topic_index];
            let answer = response
                .responses
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| &t.partition_responses)
                .find(|p| p.index == partition)
                .with_context(|| format!("Produce: no answer for {topic}/{partition}"))?;
            if answer.error_code != 0 {
                self.failed_records += records as u64;
                self.first_error.get_or_insert_with(|| {
                    format!("{topic}/{partition}: {}", error_name(answer.error_code))
                });
                continue;
            }
            let acked = self.acked.entry((topic_index, partition)).or_default();
            if let Some(&(previous, _)) = acked.last() {
                if answer.base_offset <= previous {
                    bail!(
                        "Produce: {topic}/{partition} base offset {} after {previous} on one connection",
                        answer.base_offset
                    );
                }
            }
            if answer.base_offset < 0 {
                bail!(
                    "Produce: {topic}/{partition} acked at base offset {}",
                    answer.base_offset
                );
            }
            acked.push((answer.base_offset, i64::from(records)));
            self.acked_records += records as u64;
        }
        Ok(())
    }
}

/// Merges the connections' acked ranges of one partition: sorted, they must not overlap.
/// Returns the acked record count and whether they leave gaps (failed requests may still
/// have been written).
pub fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Result<(i64, bool), String> {
    ranges.sort_unstable();
    let (mut end, mut total, mut gaps) = (0i64, 0i64, false);
    for (base, count) in ranges {
        if base < end {
            return Err(format!(
                "offsets {base}..{} acked twice",
                end.min(base + count)
            ));
        }
        gaps |= base > end;
        end = base + count;
        total += count;
    }
    Ok((total, gaps))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };

    use super::*;
    use crate::native::produce::{batch, build_slots};
    use crate::native::topic_name;

    fn topics() -> Vec<String> {
        vec!["a".to_string(), "b".to_string()]
    }

    fn answer(partitions: &[(i32, i16, i64)]) -> ProduceResponse {
        ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_name(topic_name("a"))
            .with_partition_responses(
                partitions
                    .iter()
                    .map(|&(index, error_code, base_offset)| {
                        PartitionProduceResponse::default()
                            .with_index(index)
                            .with_error_code(error_code)
                            .with_base_offset(base_offset)
                    })
                    .collect(),
            )])
    }

    #[test]
    fn answers_are_tallied_and_errors_counted_as_failed_records() {
        let slots = build_slots(&topics()[..1], &[2], &batch(b"v", 1, 0), 1, 8).unwrap();
        let mut tally = Tally::default();
        tally
            .check(&topics(), &slots[0], 5, &answer(&[(0, 0, 0), (1, 0, 0)]))
            .unwrap();
        tally
            .check(&topics(), &slots[0], 5, &answer(&[(0, 0, 5), (1, 7, -1)]))
            .unwrap();
        assert_eq!((tally.acked_records, tally.failed_records), (15, 5));
        assert!(tally.first_error.unwrap().contains("a/1: error code 7"));
        assert_eq!(tally.acked[&(0, 0)], vec![(0, 5), (5, 5)]);
    }

    #[test]
    fn a_missing_partition_or_an_offset_going_back_is_an_error() {
        let slots = build_slots(&topics()[..1], &[2], &batch(b"v", 1, 0), 1, 8).unwrap();
        let mut tally = Tally::default();
        assert!(tally
            .check(&topics(), &slots[0], 1, &answer(&[(0, 0, 0)]))
            .is_err());
        let mut tally = Tally::default();
        tally
            .check(&topics(), &slots[0], 1, &answer(&[(0, 0, 4), (1, 0, 0)]))
            .unwrap();
        assert!(tally
            .check(&topics(), &slots[0], 1, &answer(&[(0, 0, 4), (1, 0, 1)]))
            .is_err());
    }

    #[test]
    fn merged_ranges_count_records_and_flag_overlaps_and_gaps() {
        assert_eq!(merge_ranges(vec![(5, 5), (0, 5), (10, 2)]), Ok((12, false)));
        assert_eq!(merge_ranges(vec![(0, 5), (7, 1)]), Ok((6, true)));
        assert_eq!(merge_ranges(Vec::new()), Ok((0, false)));
        assert!(merge_ranges(vec![(0, 5), (4, 5)]).is_err());
    }
}
