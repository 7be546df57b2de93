//! AlterShareGroupOffsets (KIP-932): moves a share group's start offsets (the group must
//! have no members); what was in flight is forgotten.

use std::sync::Arc;

use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse};
use wharf_broker::Broker;

use super::error_parts;

pub async fn handle(
    broker: &Arc<Broker>,
    req: AlterShareGroupOffsetsRequest,
    _version: i16,
) -> AlterShareGroupOffsetsResponse {
    let group = req.group_id.0.to_string();
    let mut responses = Vec::new();
    for t in req.topics {
        let topic = t.topic_name.0.to_string();
        let mut partitions = Vec::new();
        for p in t.partitions {
            let result = broker
                .share_set_start(&group, &topic, p.partition_index, p.start_offset)
                .await;
            let (code, message) = result.err().as_ref().map_or((0, None), error_parts);
            partitions.push(
                AlterShareGroupOffsetsResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        responses.push(
            AlterShareGroupOffsetsResponseTopic::default()
                .with_topic_id(broker.topic(&topic).map(|t| t.id).unwrap_or_default())
                .with_topic_name(t.topic_name)
                .with_partitions(partitions),
        );
    }
    AlterShareGroupOffsetsResponse::default().with_responses(responses)
}
