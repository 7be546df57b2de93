//! ShareGroupDescribe (KIP-932): a share group's state, epoch and members with their
//! subscriptions and assignments.

use std::sync::Arc;

use kafka_protocol::messages::share_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    GroupId, ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName,
};
use kafka_protocol::ResponseError;
use wharf_broker::Broker;

use crate::codec::str;

pub fn handle(
    broker: &Arc<Broker>,
    req: ShareGroupDescribeRequest,
    _version: i16,
) -> ShareGroupDescribeResponse {
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            let group = id.0.to_string();
            let described = DescribedGroup::default().with_group_id(GroupId(str(&group)));
            if !broker.share_groups().contains(&group) {
                return described
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str(&format!("share group {group} not found"))))
                    .with_group_state(str("Dead"));
            }
            let (epoch, members) = broker.share().members(&group);
            let members = members
                .into_iter()
                .map(|m| {
                    let partitions = m
                        .assignment
                        .iter()
                        .filter_map(|(topic, ps)| {
                            Some(
                                TopicPartitions::default()
                                    .with_topic_id(broker.topic(topic)?.id)
                                    .with_topic_name(TopicName(str(topic)))
                                    .with_partitions(ps.clone()),
                            )
                        })
                        .collect();
                    Member::default()
                        .with_member_id(str(&m.id))
                        .with_rack_id(m.rack.as_deref().map(str))
                        .with_member_epoch(m.epoch)
                        .with_subscribed_topic_names(
                            m.subscribed.iter().map(|t| TopicName(str(t))).collect(),
                        )
                        .with_assignment(Assignment::default().with_topic_partitions(partitions))
                })
                .collect();
            described
                .with_group_state(str(broker.share_group_state(&group)))
                .with_group_epoch(epoch)
                .with_assignment_epoch(epoch)
                .with_assignor_name(str("simple"))
                .with_members(members)
                .with_authorized_operations(i32::MIN)
        })
        .collect();
    ShareGroupDescribeResponse::default().with_groups(groups)
}
