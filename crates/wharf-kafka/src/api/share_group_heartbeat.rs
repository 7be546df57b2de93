//! ShareGroupHeartbeat (KIP-932): a share consumer joins (epoch 0), stays, or leaves
//! (epoch -1); the answer carries its assignment when it is new to the member.

use std::sync::Arc;

use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use wharf_broker::share::HEARTBEAT_INTERVAL_MS;
use wharf_broker::Broker;

use super::error_parts;

pub async fn handle(
    broker: &Arc<Broker>,
    req: ShareGroupHeartbeatRequest,
    _version: i16,
) -> ShareGroupHeartbeatResponse {
    let subscribed = req
        .subscribed_topic_names
        .map(|names| names.into_iter().map(|n| n.0.to_string()).collect());
    let result = broker
        .share_heartbeat(
            &req.group_id.0,
            &req.member_id,
            req.member_epoch,
            subscribed,
            req.rack_id.map(|r| r.to_string()),
        )
        .await;
    let resp =
        ShareGroupHeartbeatResponse::default().with_heartbeat_interval_ms(HEARTBEAT_INTERVAL_MS);
    match result {
        Ok(beat) => {
            let assignment = beat.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .filter_map(|(topic, partitions)| {
                            let id = broker.topic(&topic)?.id;
                            Some(
                                TopicPartitions::default()
                                    .with_topic_id(id)
                                    .with_partitions(partitions),
                            )
                        })
                        .collect(),
                )
            });
            resp.with_member_id(Some(StrBytes::from_string(beat.member_id)))
                .with_member_epoch(beat.member_epoch)
                .with_assignment(assignment)
        }
        Err(error) => {
            tracing::debug!(%error, group = %req.group_id.0, "share group heartbeat refused");
            let (code, message) = error_parts(&error);
            resp.with_error_code(code)
                .with_error_message(message)
                .with_member_epoch(req.member_epoch)
        }
    }
}
