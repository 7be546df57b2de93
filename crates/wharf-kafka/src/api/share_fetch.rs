//! ShareFetch (KIP-932): the share session's epoch, piggy-backed acknowledgements, then
//! records acquired for the member with their delivery counts. Records are whole stored
//! batches; the client keeps only the acquired offsets.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::{ShareFetchRequest, ShareFetchResponse};
use kafka_protocol::protocol::StrBytes;
use wharf_broker::share::{self, SharePartitionRequest};
use wharf_broker::{Broker, BrokerError};

use super::error_parts;
use super::share_acknowledge::{ack_ranges, topic_name};

/// The longest a ShareFetch waits for records, whatever it asks.
const MAX_WAIT_MS: u64 = 30_000;

pub async fn handle(
    broker: &Arc<Broker>,
    req: ShareFetchRequest,
    _version: i16,
) -> ShareFetchResponse {
    let group = req.group_id.map(|g| g.0.to_string()).unwrap_or_default();
    let member = req.member_id.map(|m| m.to_string()).unwrap_or_default();
    let mut partitions = Vec::new();
    let mut unknown = Vec::new();
    for topic in &req.topics {
        let Some(name) = topic_name(broker, topic.topic_id) else {
            unknown.extend(
                topic
                    .partitions
                    .iter()
                    .map(|p| (topic.topic_id, p.partition_index)),
            );
            continue;
        };
        for p in &topic.partitions {
            let acks = p.acknowledgement_batches.iter().map(|b| {
                (
                    b.first_offset,
                    b.last_offset,
                    b.acknowledge_types.as_slice(),
                )
            });
            match ack_ranges(acks) {
                Some(acks) => partitions.push(SharePartitionRequest {
                    topic: name.clone(),
                    partition: p.partition_index,
                    acks,
                }),
                None => {
                    return error(&BrokerError::InvalidRequest(
                        "bad acknowledgement batch".into(),
                    ))
                }
            }
        }
    }
    let forgotten = req
        .forgotten_topics_data
        .iter()
        .filter_map(|t| Some((topic_name(broker, t.topic_id)?, t.partitions.clone())))
        .flat_map(|(name, ps)| ps.into_iter().map(move |p| (name.clone(), p)))
        .collect();
    let request = share::ShareFetchRequest {
        group,
        member,
        session_epoch: req.share_session_epoch,
        max_wait: Duration::from_millis(
            u64::try_from(req.max_wait_ms).unwrap_or(0).min(MAX_WAIT_MS),
        ),
        max_records: req.max_records,
        max_bytes: req.max_bytes,
        partitions,
        forgotten,
    };
    let answer = match broker.share_fetch(request).await {
        Ok(answer) => answer,
        Err(e) => return error(&e),
    };
    let mut topics: Vec<ShareFetchableTopicResponse> = Vec::new();
    for a in answer.partitions {
        let Some(id) = broker.topic(&a.topic).map(|t| t.id) else {
            continue;
        };
        let (code, message) = a.error.as_ref().map_or((0, None), error_parts);
        let (ack_code, ack_message) = a.ack_error.as_ref().map_or((0, None), error_parts);
        if let Some(counters) = broker
            .partition(&a.topic, a.partition)
            .ok()
            .map(|p| p.counters)
        {
            counters.count_out(&a.acquired.records);
        }
        let data = PartitionData::default()
            .with_partition_index(a.partition)
            .with_error_code(code)
            .with_error_message(message)
            .with_acknowledge_error_code(ack_code)
            .with_acknowledge_error_message(ack_message)
            .with_records(Some(a.acquired.records))
            .with_acquired_records(
                a.acquired
                    .ranges
                    .iter()
                    .map(|r| {
                        AcquiredRecords::default()
                            .with_first_offset(r.first)
                            .with_last_offset(r.last)
                            .with_delivery_count(
                                i16::try_from(r.delivery_count).unwrap_or(i16::MAX),
                            )
                    })
                    .collect(),
            );
        match topics.last_mut() {
            Some(t) if t.topic_id == id => t.partitions.push(data),
            _ => topics.push(
                ShareFetchableTopicResponse::default()
                    .with_topic_id(id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    for (id, partition) in unknown {
        topics.push(
            ShareFetchableTopicResponse::default()
                .with_topic_id(id)
                .with_partitions(vec![PartitionData::default()
                    .with_partition_index(partition)
                    .with_error_code(
                        kafka_protocol::error::ResponseError::UnknownTopicId.code(),
                    )]),
        );
    }
    ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(i32::try_from(answer.lock_ms).unwrap_or(i32::MAX))
        .with_responses(topics)
}

fn error(e: &BrokerError) -> ShareFetchResponse {
    tracing::debug!(error = %e, "share fetch refused");
    let (code, message) = error_parts(e);
    ShareFetchResponse::default()
        .with_error_code(code)
        .with_error_message(message.or_else(|| Some(StrBytes::from_static_str(""))))
}
