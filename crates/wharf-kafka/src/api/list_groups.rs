//! ListGroups: every group, optionally filtered by state (v4+) and type (v5+: "classic" and
//! "consumer" (KIP-848) consumer groups, "share" groups).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use wharf_broker::Broker;

use crate::codec::str;
use crate::errors;

pub fn handle(broker: &Arc<Broker>, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let wanted = |kind: &str| {
        req.types_filter.is_empty()
            || req
                .types_filter
                .iter()
                .any(|t| t.as_str().eq_ignore_ascii_case(kind))
    };
    let share_wanted = wanted("share");
    let states: Vec<String> = req
        .states_filter
        .into_iter()
        .map(|s| s.to_string())
        .collect();
    let listed = match broker.groups().list_groups(&states) {
        Ok(l) => l,
        Err(e) => {
            return ListGroupsResponse::default().with_error_code(errors::group_code(Some(&e)))
        }
    };
    let shares: Vec<ListedGroup> = broker
        .share_groups()
        .into_iter()
        .filter(|_| share_wanted)
        .map(|g| (broker.share_group_state(&g), g))
        .filter(|(state, _)| {
            states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(state))
        })
        .map(|(state, g)| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str(&g)))
                .with_protocol_type(str("share"));
            if version >= 4 {
                listed = listed.with_group_state(str(state));
            }
            if version >= 5 {
                listed = listed.with_group_type(str("share"));
            }
            listed
        })
        .collect();
    let groups = listed
        .into_iter()
        .filter(|g| wanted(g.group_type))
        .map(|g| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str(&g.group_id)))
                .with_protocol_type(str(&g.protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(str(g.state));
            }
            if version >= 5 {
                listed = listed.with_group_type(str(g.group_type));
            }
            listed
        })
        .chain(shares)
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
