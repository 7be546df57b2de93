//! Share groups (KIP-932) for `wharf share`: listing, describing (members and the broker's
//! read-only per-partition state entries) and moving start offsets.

use kafka_protocol::messages::alter_share_group_offsets_request::{
    AlterShareGroupOffsetsRequestPartition, AlterShareGroupOffsetsRequestTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    AlterShareGroupOffsetsRequest, DescribeConfigsRequest, GroupId, ListGroupsRequest,
    ShareGroupDescribeRequest, TopicName,
};

use super::{check, str_bytes, Admin, AdminError};

/// Resource type GROUP in the config APIs.
const RESOURCE_GROUP: i8 = 32;

/// A member of a share group and its assignment (topic, partitions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareMember {
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: Vec<(String, Vec<i32>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGroupDescription {
    pub state: String,
    pub epoch: i32,
    pub members: Vec<ShareMember>,
    /// Every config entry of the group (name, value), the read-only state entries included.
    pub configs: Vec<(String, String)>,
}

impl Admin {
    /// Share groups and their states (ListGroups with the `share` type).
    pub async fn list_share_groups(&mut self) -> Result<Vec<(String, String)>, AdminError> {
        let request = ListGroupsRequest::default().with_types_filter(vec![str_bytes("share")]);
        let response = self.client.send(request).await?;
        check(response.error_code, None, "listing share groups")?;
        Ok(response
            .groups
            .iter()
            .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
            .collect())
    }

    /// ShareGroupDescribe plus the group's configs (DescribeConfigs on the GROUP resource).
    pub async fn describe_share_group(
        &mut self,
        group: &str,
    ) -> Result<ShareGroupDescription, AdminError> {
        let response = self
            .client
            .send(
                ShareGroupDescribeRequest::default()
                    .with_group_ids(vec![GroupId(str_bytes(group))]),
            )
            .await?;
        let described = response
            .groups
            .first()
            .ok_or_else(|| AdminError::MissingResult {
                what: "the broker described no group".into(),
            })?;
        check(
            described.error_code,
            described.error_message.as_ref(),
            &format!("describing share group {group}"),
        )?;
        let members = described
            .members
            .iter()
            .map(|m| ShareMember {
                member_id: m.member_id.to_string(),
                member_epoch: m.member_epoch,
                assignment: m
                    .assignment
                    .topic_partitions
                    .iter()
                    .map(|t| (t.topic_name.0.to_string(), t.partitions.clone()))
                    .collect(),
            })
            .collect();
        let configs = self
            .client
            .send(DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_GROUP)
                    .with_resource_name(str_bytes(group))
                    .with_configuration_keys(None),
            ]))
            .await?;
        let result = configs
            .results
            .first()
            .ok_or_else(|| AdminError::MissingResult {
                what: "no config result".into(),
            })?;
        check(
            result.error_code,
            result.error_message.as_ref(),
            &format!("describing configs of {group}"),
        )?;
        Ok(ShareGroupDescription {
            state: described.group_state.to_string(),
            epoch: described.group_epoch,
            members,
            configs: result
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.as_deref().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        })
    }

    /// AlterShareGroupOffsets: new start offsets of `topic`'s partitions for `group`.
    pub async fn alter_share_group_offsets(
        &mut self,
        group: &str,
        topic: &str,
        targets: &[(i32, i64)],
    ) -> Result<(), AdminError> {
        let response = self
            .client
            .send(
                AlterShareGroupOffsetsRequest::default()
                    .with_group_id(GroupId(str_bytes(group)))
                    .with_topics(vec![AlterShareGroupOffsetsRequestTopic::default()
                        .with_topic_name(TopicName(str_bytes(topic)))
                        .with_partitions(
                            targets
                                .iter()
                                .map(|(p, o)| {
                                    AlterShareGroupOffsetsRequestPartition::default()
                                        .with_partition_index(*p)
                                        .with_start_offset(*o)
                                })
                                .collect(),
                        )]),
            )
            .await?;
        check(
            response.error_code,
            response.error_message.as_ref(),
            "resetting share offsets",
        )?;
        for t in &response.responses {
            for p in &t.partitions {
                check(
                    p.error_code,
                    p.error_message.as_ref(),
                    &format!("{topic}[{}]", p.partition_index),
                )?;
            }
        }
        Ok(())
    }
}
