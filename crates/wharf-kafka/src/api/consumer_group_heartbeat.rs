//! ConsumerGroupHeartbeat (KIP-848, `group.protocol=consumer`): the member joins, stays and
//! leaves by heartbeat, and the coordinator hands out its assignment (server-side
//! assignors). Topics travel by id on the wire and by name in the broker.

use std::sync::Arc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use wharf_broker::group::api::ConsumerHeartbeatRequest;
use wharf_broker::Broker;

use crate::codec::str;
use crate::errors;

pub fn handle(
    broker: &Arc<Broker>,
    req: ConsumerGroupHeartbeatRequest,
    _version: i16,
    client_id: &str,
    peer: Option<std::net::SocketAddr>,
) -> ConsumerGroupHeartbeatResponse {
    // Owned partitions of a topic this broker does not know (deleted meanwhile) are dropped:
    // the member no longer owns anything there that another member could be given.
    let owned = req.topic_partitions.map(|list| {
        list.into_iter()
            .filter_map(|tp| {
                broker
                    .topic_by_id(tp.topic_id)
                    .map(|t| (t.name.clone(), tp.partitions))
            })
            .collect()
    });
    let request = ConsumerHeartbeatRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|s| s.to_string()),
        rack_id: req.rack_id.map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.0.to_string()).collect()),
        subscribed_topic_regex: req.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: req.server_assignor.map(|s| s.to_string()),
        owned,
        client_id: client_id.to_string(),
        client_host: peer.map_or_else(String::new, |p| format!("/{}", p.ip())),
    };
    let resp = broker.groups().consumer_heartbeat(&request);
    let assignment = resp.assignment.map(|list| {
        Assignment::default().with_topic_partitions(
            list.into_iter()
                .filter_map(|(topic, partitions)| {
                    broker.topic(&topic).map(|t| {
                        TopicPartitions::default()
                            .with_topic_id(t.id)
                            .with_partitions(partitions)
                    })
                })
                .collect(),
        )
    });
    let error_code = errors::group_code(resp.error.as_ref());
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(error_code)
        .with_error_message(resp.error.map(|e| str(&e.to_string())))
        .with_member_id((!resp.member_id.is_empty()).then(|| str(&resp.member_id)))
        .with_member_epoch(resp.member_epoch)
        .with_heartbeat_interval_ms(resp.heartbeat_interval_ms)
        .with_assignment(assignment)
}
