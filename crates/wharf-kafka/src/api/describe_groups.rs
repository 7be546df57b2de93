//! DescribeGroups: state, protocol and members with their metadata and assignment. An
//! unknown group is described as Dead (v6+: GROUP_ID_NOT_FOUND).

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::ResponseError;
use wharf_broker::Broker;

use crate::codec::str;
use crate::errors;

pub fn handle(
    broker: &Arc<Broker>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            match broker.groups().describe_group(id.0.as_str()) {
                Err(e) => described.with_error_code(errors::group_code(Some(&e))),
                Ok(None) if version >= 6 => described
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str(&format!("group {} does not exist", id.0))))
                    .with_group_state(str("Dead")),
                Ok(None) => described.with_group_state(str("Dead")),
                Ok(Some(g)) => described
                    .with_group_state(str(g.state))
                    .with_protocol_type(str(&g.protocol_type))
                    .with_protocol_data(str(&g.protocol))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(str(&m.member_id))
                                    .with_group_instance_id(m.group_instance_id.as_deref().map(str))
                                    .with_client_id(str(&m.client_id))
                                    .with_client_host(str(&m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
