//! DeleteShareGroupOffsets (KIP-932): forgets a share group's state on topics (the group
//! must have no members); a later fetch starts where `share.auto.offset.reset` says.

use std::sync::Arc;

use kafka_protocol::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic;
use kafka_protocol::messages::{DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse};
use kafka_protocol::ResponseError;
use wharf_broker::Broker;

use super::error_parts;

pub async fn handle(
    broker: &Arc<Broker>,
    req: DeleteShareGroupOffsetsRequest,
    _version: i16,
) -> DeleteShareGroupOffsetsResponse {
    let group = req.group_id.0.to_string();
    let mut responses = Vec::new();
    for t in req.topics {
        let topic = t.topic_name.0.to_string();
        let resp = DeleteShareGroupOffsetsResponseTopic::default()
            .with_topic_id(broker.topic(&topic).map(|t| t.id).unwrap_or_default())
            .with_topic_name(t.topic_name);
        let resp = if broker.topic(&topic).is_none() {
            resp.with_error_code(ResponseError::UnknownTopicOrPartition.code())
        } else {
            match broker.share_delete_offsets(&group, &topic).await {
                Ok(()) => resp,
                Err(e) => {
                    let (code, message) = error_parts(&e);
                    resp.with_error_code(code).with_error_message(message)
                }
            }
        };
        responses.push(resp);
    }
    DeleteShareGroupOffsetsResponse::default().with_responses(responses)
}
