//! SyncGroup: the leader hands in the assignment; every member parks until it does.

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use wharf_broker::group::api::SyncRequest;
use wharf_broker::Broker;

use crate::codec::str;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    req: SyncGroupRequest,
    _version: i16,
) -> SyncGroupResponse {
    let request = SyncRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        protocol_type: req.protocol_type.map(|s| s.to_string()),
        protocol_name: req.protocol_name.map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let resp = broker.groups().sync_group(request).await;
    SyncGroupResponse::default()
        .with_error_code(errors::group_code(resp.error.as_ref()))
        .with_protocol_type(resp.protocol_type.as_deref().map(str))
        .with_protocol_name(resp.protocol_name.as_deref().map(str))
        .with_assignment(resp.assignment)
}
