//! LeaveGroup: v0–2 one member by id; v3+ a batch of members (by id or instance id).

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use wharf_broker::group::api::LeaveMember;
use wharf_broker::Broker;

use crate::errors;

pub fn handle(broker: &Arc<Broker>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<LeaveMember> = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(ToString::to_string),
            })
            .collect()
    } else {
        vec![LeaveMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let results = match broker
        .groups()
        .leave_group(req.group_id.0.as_str(), &members)
    {
        Ok(r) => r,
        Err(e) => {
            return LeaveGroupResponse::default().with_error_code(errors::group_code(Some(&e)))
        }
    };
    if version < 3 {
        let code = results
            .first()
            .and_then(|r| r.as_ref().err())
            .map_or(0, |e| errors::group_code(Some(e)));
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = req
        .members
        .into_iter()
        .zip(results)
        .map(|(m, r)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(errors::group_code(r.err().as_ref()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
