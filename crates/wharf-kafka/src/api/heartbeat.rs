//! Heartbeat: keeps a member's session; REBALANCE_IN_PROGRESS tells it to rejoin.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use wharf_broker::group::api;
use wharf_broker::Broker;

use crate::errors;

pub fn handle(broker: &Arc<Broker>, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let request = api::HeartbeatRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
    };
    let result = broker.groups().heartbeat(&request);
    HeartbeatResponse::default().with_error_code(errors::group_code(result.err().as_ref()))
}
