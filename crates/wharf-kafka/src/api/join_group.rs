//! JoinGroup: parks until the rebalance completes (or its timeout passes). v4+ first joins
//! get MEMBER_ID_REQUIRED with the id to rejoin with.

use std::sync::Arc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use wharf_broker::group::api::{JoinRequest, Protocol};
use wharf_broker::Broker;

use crate::codec::str;
use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: Option<std::net::SocketAddr>,
) -> JoinGroupResponse {
    let request = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata,
            })
            .collect(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout serves for both.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        client_id: client_id.to_string(),
        // Kafka shows a member's host as "/address".
        client_host: peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
        require_known_member_id: version >= 4,
    };
    let resp = broker.groups().join_group(request).await;
    JoinGroupResponse::default()
        .with_error_code(errors::group_code(resp.error.as_ref()))
        .with_generation_id(resp.generation_id)
        .with_protocol_type(resp.protocol_type.as_deref().map(str))
        .with_protocol_name(
            resp.protocol_name
                .as_deref()
                .map(str)
                .or_else(|| (version < 7).then(Default::default)),
        )
        .with_leader(str(&resp.leader))
        .with_member_id(str(&resp.member_id))
        .with_members(
            resp.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str(&m.member_id))
                        .with_group_instance_id(m.group_instance_id.as_deref().map(str))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}
