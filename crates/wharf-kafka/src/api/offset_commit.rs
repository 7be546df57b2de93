//! OffsetCommit: answered once the offsets are fdatasync-ed in `__consumer_offsets`.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use wharf_broker::group::api::{self, CommitPartition};
use wharf_broker::Broker;

use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    req: OffsetCommitRequest,
    _version: i16,
) -> OffsetCommitResponse {
    let request = api::OffsetCommitRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(ToString::to_string),
        partitions: req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| CommitPartition {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(ToString::to_string),
                })
            })
            .collect(),
    };
    let b = broker.clone();
    let result = broker
        .groups()
        .commit_offsets(&request, |topic, partition| {
            b.partition(topic, partition).is_ok()
        })
        .await;
    let mut codes = match &result {
        Ok(results) => results
            .iter()
            .map(|r| errors::group_code(r.as_ref().err()))
            .collect::<Vec<_>>()
            .into_iter(),
        Err(e) => vec![errors::group_code(Some(e)); request.partitions.len()].into_iter(),
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or_default())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
