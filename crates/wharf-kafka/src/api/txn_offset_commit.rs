//! TxnOffsetCommit: offsets held (durably) by the transaction coordinator until the
//! transaction ends; they reach the group only when it commits.

use std::sync::Arc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use wharf_broker::group::api::{CommitPartition, TxnCommitMember};
use wharf_broker::Broker;

use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    req: TxnOffsetCommitRequest,
    _version: i16,
) -> TxnOffsetCommitResponse {
    let partitions = req
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
        .collect();
    // v3+ names the consumer (KIP-447); older versions leave the defaults (-1, "").
    let member = TxnCommitMember {
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(ToString::to_string),
    };
    let code = match broker
        .txn_offset_commit(
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            &req.group_id.0,
            &member,
            partitions,
        )
        .await
    {
        Ok(()) => 0,
        Err(error) => {
            tracing::debug!(%error, "TxnOffsetCommit refused");
            errors::code(&error)
        }
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
                .with_name(t.name)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
