//! ConsumerGroupDescribe (KIP-848): members, epochs, current and target assignments.

use std::sync::Arc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::ResponseError;
use wharf_broker::Broker;

use crate::codec::str;
use crate::errors;

/// Kafka's "authorized operations not requested".
const NO_OPERATIONS: i32 = i32::MIN;
/// ConsumerGroupDescribe v1's member type of a consumer-protocol member.
const MEMBER_TYPE_CONSUMER: i8 = 1;

fn assignment(broker: &Broker, list: Vec<(String, Vec<i32>)>) -> Assignment {
    Assignment::default().with_topic_partitions(
        list.into_iter()
            .filter_map(|(topic, partitions)| {
                broker.topic(&topic).map(|t| {
                    TopicPartitions::default()
                        .with_topic_id(t.id)
                        .with_topic_name(TopicName(str(&topic)))
                        .with_partitions(partitions)
                })
            })
            .collect(),
    )
}

pub fn handle(
    broker: &Arc<Broker>,
    req: ConsumerGroupDescribeRequest,
    _version: i16,
) -> ConsumerGroupDescribeResponse {
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            let group = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(NO_OPERATIONS);
            match broker.groups().describe_consumer_group(id.0.as_str()) {
                Err(e) => group
                    .with_error_code(errors::group_code(Some(&e)))
                    .with_error_message(Some(str(&e.to_string()))),
                Ok(None) => group
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str(&format!(
                        "group {} is not a consumer-protocol group",
                        id.0.as_str()
                    )))),
                Ok(Some(d)) => group
                    .with_group_state(str(d.state))
                    .with_group_epoch(d.group_epoch)
                    .with_assignment_epoch(d.assignment_epoch)
                    .with_assignor_name(str(&d.assignor))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                Member::default()
                                    .with_member_id(str(&m.member_id))
                                    .with_instance_id(m.instance_id.as_deref().map(str))
                                    .with_rack_id(m.rack_id.as_deref().map(str))
                                    .with_member_epoch(m.member_epoch)
                                    .with_client_id(str(&m.client_id))
                                    .with_client_host(str(&m.client_host))
                                    .with_subscribed_topic_names(
                                        m.subscribed_topic_names
                                            .iter()
                                            .map(|t| TopicName(str(t)))
                                            .collect(),
                                    )
                                    .with_subscribed_topic_regex(
                                        m.subscribed_topic_regex.as_deref().map(str),
                                    )
                                    .with_assignment(assignment(broker, m.assignment))
                                    .with_target_assignment(assignment(broker, m.target_assignment))
                                    .with_member_type(MEMBER_TYPE_CONSUMER)
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
