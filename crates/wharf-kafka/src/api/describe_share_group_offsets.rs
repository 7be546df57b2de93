//! DescribeShareGroupOffsets (KIP-932): each share partition's start offset (the first
//! record not yet acknowledged or archived); -1 for a partition the group never read.

use std::sync::Arc;

use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{
    DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, TopicName,
};
use kafka_protocol::ResponseError;
use wharf_broker::Broker;

use crate::codec::str;

pub fn handle(
    broker: &Arc<Broker>,
    req: DescribeShareGroupOffsetsRequest,
    _version: i16,
) -> DescribeShareGroupOffsetsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|g| {
            let group = g.group_id.0.to_string();
            let state = broker.share_describe(&group);
            let wanted: Vec<(String, Vec<i32>)> = if let Some(topics) = g.topics {
                topics
                    .into_iter()
                    .map(|t| (t.topic_name.0.to_string(), t.partitions))
                    .collect()
            } else {
                let mut all: Vec<(String, Vec<i32>)> = Vec::new();
                for p in &state.partitions {
                    match all.last_mut() {
                        Some((t, ps)) if *t == p.topic => ps.push(p.partition),
                        _ => all.push((p.topic.clone(), vec![p.partition])),
                    }
                }
                all
            };
            let topics = wanted
                .into_iter()
                .map(|(topic, partitions)| {
                    let id = broker.topic(&topic).map(|t| t.id).unwrap_or_default();
                    let partitions = partitions
                        .into_iter()
                        .map(|p| {
                            let out = DescribeShareGroupOffsetsResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_epoch(0);
                            if broker.partition(&topic, p).is_err() {
                                return out.with_start_offset(-1).with_error_code(
                                    ResponseError::UnknownTopicOrPartition.code(),
                                );
                            }
                            let start = state
                                .partitions
                                .iter()
                                .find(|s| s.topic == topic && s.partition == p)
                                .map_or(-1, |s| s.view.start);
                            out.with_start_offset(start)
                        })
                        .collect();
                    DescribeShareGroupOffsetsResponseTopic::default()
                        .with_topic_name(TopicName(str(&topic)))
                        .with_topic_id(id)
                        .with_partitions(partitions)
                })
                .collect();
            DescribeShareGroupOffsetsResponseGroup::default()
                .with_group_id(g.group_id)
                .with_topics(topics)
        })
        .collect();
    DescribeShareGroupOffsetsResponse::default().with_groups(groups)
}
