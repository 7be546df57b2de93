//! OffsetFetch: committed offsets of named partitions, or of every partition (null topics,
//! v2+); v8+ asks for several groups at once.

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use wharf_broker::group::api::FetchedOffset;
use wharf_broker::group::GroupError;
use wharf_broker::Broker;

use crate::codec::str;
use crate::errors;

/// Fetched offsets grouped by topic, in the order they came.
fn by_topic(fetched: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut out: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for f in fetched {
        match out.last_mut() {
            Some((topic, list)) if *topic == f.topic => list.push(f),
            _ => out.push((f.topic.clone(), vec![f])),
        }
    }
    out
}

fn fetch(
    broker: &Broker,
    group_id: &str,
    topics: Option<&[(String, Vec<i32>)]>,
) -> Result<Vec<(String, Vec<FetchedOffset>)>, GroupError> {
    broker
        .groups()
        .fetch_offsets(group_id, topics)
        .map(by_topic)
}

pub fn handle(broker: &Arc<Broker>, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let topics: Option<Vec<_>> = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch(broker, g.group_id.0.as_str(), topics.as_deref()) {
                    Err(e) => group.with_error_code(errors::group_code(Some(&e))),
                    Ok(found) => group.with_topics(
                        found
                            .into_iter()
                            .map(|(topic, list)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(str(&topic)))
                                    .with_partitions(
                                        list.into_iter()
                                            .map(|f| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(f.partition)
                                                    .with_committed_offset(f.offset)
                                                    .with_committed_leader_epoch(f.leader_epoch)
                                                    .with_metadata(f.metadata.as_deref().map(str))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect::<Vec<_>>()
    });
    let requested = topics.clone();
    match fetch(broker, req.group_id.0.as_str(), topics.as_deref()) {
        Ok(found) => OffsetFetchResponse::default().with_topics(
            found
                .into_iter()
                .map(|(topic, list)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str(&topic)))
                        .with_partitions(
                            list.into_iter()
                                .map(|f| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(f.partition)
                                        .with_committed_offset(f.offset)
                                        .with_committed_leader_epoch(f.leader_epoch)
                                        .with_metadata(f.metadata.as_deref().map(str))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(e) if version >= 2 => {
            OffsetFetchResponse::default().with_error_code(errors::group_code(Some(&e)))
        }
        Err(e) => {
            // v1 has no top-level error: every requested partition carries it.
            let code = errors::group_code(Some(&e));
            OffsetFetchResponse::default().with_topics(
                requested
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(str(&topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        }
    }
}
