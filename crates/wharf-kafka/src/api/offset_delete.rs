//! OffsetDelete: removes committed offsets of topics the group's members do not subscribe
//! to (subscriptions are read from the members' consumer-protocol metadata here, so the
//! broker core stays protocol-free).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Buf;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;
use wharf_broker::Broker;

use crate::errors;

/// Topics named in a member's consumer-protocol subscription (empty if it is not one).
pub fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    let mut bytes = bytes::Bytes::copy_from_slice(metadata);
    if bytes.remaining() < 2 {
        return Vec::new();
    }
    let version = bytes.get_i16();
    let version = version.clamp(0, 3);
    ConsumerProtocolSubscription::decode(&mut bytes, version)
        .map(|s| s.topics.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

pub async fn handle(
    broker: &Arc<Broker>,
    req: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.to_string();
    let subscribed: HashSet<String> = match broker.groups().describe_group(&group_id) {
        Ok(Some(g)) if g.protocol_type == "consumer" => g
            .members
            .iter()
            .flat_map(|m| subscribed_topics(&m.metadata))
            .collect(),
        _ => HashSet::new(),
    };
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let results = match broker
        .groups()
        .delete_offsets(&group_id, &partitions, &subscribed)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return OffsetDeleteResponse::default().with_error_code(errors::group_code(Some(&e)))
        }
    };
    let mut codes = results
        .into_iter()
        .map(|r| errors::group_code(r.err().as_ref()));
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or_default())
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
