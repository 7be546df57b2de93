//! Consumer groups: ListGroups, DeleteGroups, a description built from ConsumerGroupDescribe
//! (KIP-848 groups) or DescribeGroups (classic groups), OffsetFetch and ListOffsets, and the
//! pieces of an offset reset (OffsetCommit).
//!
//! Lag is the partition's log end offset (high watermark) minus the committed offset.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerGroupDescribeRequest, ConsumerProtocolAssignment,
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest, ListOffsetsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;

use super::{check, str_bytes, Admin, AdminError};

/// Which offset of a partition ListOffsets is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    /// The log end offset (high watermark).
    Latest,
    /// The first offset whose timestamp is at or after these epoch milliseconds.
    Timestamp(i64),
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

/// One row of `wharf group list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// Empty when the broker does not report states.
    pub state: String,
    pub protocol_type: String,
}

/// One partition of a group's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRow {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub log_end: Option<i64>,
    /// Member id of the member the partition is assigned to.
    pub owner: Option<String>,
}

impl PartitionRow {
    /// Log end offset minus committed offset, when both are known.
    pub fn lag(&self) -> Option<i64> {
        Some((self.log_end? - self.committed?).max(0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<(String, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    /// The classic group's protocol, or `consumer protocol, <assignor> assignor`.
    pub protocol: String,
    pub members: Vec<MemberRow>,
    /// Every partition with a committed offset or an owner, sorted.
    pub partitions: Vec<PartitionRow>,
}

/// Members of a group as DescribeGroups reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub members: usize,
    pub state: String,
}

/// The (topic, partition) pairs of a consumer-protocol assignment; empty if it is not one.
pub fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    let (Some(&[high, low]), Some(mut rest)) = (bytes.get(..2), bytes.get(2..)) else {
        return Vec::new();
    };
    let version = i16::from_be_bytes([high, low]).clamp(0, 3);
    ConsumerProtocolAssignment::decode(&mut rest, version)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.0.to_string(), *p)))
                .collect()
        })
        .unwrap_or_default()
}

impl Admin {
    /// Every group the broker knows, in the broker's order.
    pub async fn list_groups(&mut self) -> Result<Vec<GroupListing>, AdminError> {
        let response = self.client.send(ListGroupsRequest::default()).await?;
        check(response.error_code, None, "listing groups")?;
        Ok(response
            .groups
            .iter()
            .map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
            })
            .collect())
    }

    /// Deletes `groups`; one result per group in the broker's order.
    pub async fn delete_groups(
        &mut self,
        groups: &[String],
    ) -> Result<Vec<(String, Result<(), AdminError>)>, AdminError> {
        let request = DeleteGroupsRequest::default()
            .with_groups_names(groups.iter().map(|g| GroupId(str_bytes(g))).collect());
        let response = self.client.send(request).await?;
        Ok(response
            .results
            .iter()
            .map(|r| {
                let group = r.group_id.0.to_string();
                let outcome = check(r.error_code, None, &format!("deleting group {group}"));
                (group, outcome)
            })
            .collect())
    }

    /// Members, assignments, committed offsets and log end offsets of `group`, a
    /// consumer-protocol group if ConsumerGroupDescribe knows it, else a classic group.
    pub async fn describe_group(&mut self, group: &str) -> Result<GroupDescription, AdminError> {
        if let Some((state, protocol, members)) = self.describe_consumer_protocol(group).await {
            return self.describe_with(group, state, protocol, members).await;
        }
        let response = self
            .client
            .send(DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group))]))
            .await?;
        let described = response
            .groups
            .first()
            .ok_or_else(|| AdminError::MissingResult {
                what: "DescribeGroups returned no group".to_owned(),
            })?;
        let missing = ResponseError::GroupIdNotFound.code();
        if described.error_code == missing || described.group_state.as_str() == "Dead" {
            return Err(AdminError::GroupNotFound {
                group: group.to_owned(),
            });
        }
        check(
            described.error_code,
            None,
            &format!("describing group {group}"),
        )?;
        let members: Vec<MemberRow> = described
            .members
            .iter()
            .map(|m| MemberRow {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.as_ref().map(ToString::to_string),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment: decode_assignment(&m.member_assignment),
            })
            .collect();
        let state = described.group_state.to_string();
        let protocol = described.protocol_data.to_string();
        self.describe_with(group, state, protocol, members).await
    }

    /// The classic group's member count and state from DescribeGroups; `None` when the
    /// answer holds no group. The group's error code is not checked.
    pub async fn group_membership(
        &mut self,
        group: &str,
    ) -> Result<Option<Membership>, AdminError> {
        let response = self
            .client
            .send(DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group))]))
            .await?;
        Ok(response.groups.first().map(|g| Membership {
            members: g.members.len(),
            state: g.group_state.to_string(),
        }))
    }

    /// Every committed offset of `group` (partitions without one are left out).
    pub async fn committed_offsets(
        &mut self,
        group: &str,
    ) -> Result<BTreeMap<(String, i32), i64>, AdminError> {
        let version = self
            .client
            .version_for(ApiKey::OffsetFetch)
            .ok_or(AdminError::Unsupported { api: "OffsetFetch" })?;
        let mut out = BTreeMap::new();
        let mut add = |topic: &str, partition: i32, offset: i64, code: i16| {
            check(
                code,
                None,
                &format!("fetching offsets of {topic}[{partition}]"),
            )?;
            if offset >= 0 {
                out.insert((topic.to_string(), partition), offset);
            }
            Ok::<(), AdminError>(())
        };
        let context = format!("fetching offsets of group {group}");
        if version >= 8 {
            let request =
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(str_bytes(group)))
                    .with_topics(None)]);
            let response = self.client.send(request).await?;
            for g in &response.groups {
                check(g.error_code, None, &context)?;
                for t in &g.topics {
                    for p in &t.partitions {
                        add(
                            t.name.0.as_str(),
                            p.partition_index,
                            p.committed_offset,
                            p.error_code,
                        )?;
                    }
                }
            }
        } else {
            let request = OffsetFetchRequest::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_topics(None);
            let response = self.client.send(request).await?;
            check(response.error_code, None, &context)?;
            for t in &response.topics {
                for p in &t.partitions {
                    add(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    )?;
                }
            }
        }
        Ok(out)
    }

    /// ListOffsets for each partition of `keys`; partitions answering with an error are left
    /// out, and -1 means no record is at or after a timestamp.
    pub async fn log_offsets(
        &mut self,
        keys: &BTreeSet<(String, i32)>,
        spec: OffsetSpec,
    ) -> Result<BTreeMap<(String, i32), i64>, AdminError> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in keys {
            by_topic.entry(topic).or_default().push(*partition);
        }
        let mut out = BTreeMap::new();
        if by_topic.is_empty() {
            return Ok(out);
        }
        let timestamp = spec.timestamp();
        let topics = by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                ListOffsetsTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    )
            })
            .collect();
        let response = self
            .client
            .send(
                ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(topics),
            )
            .await?;
        for t in response.topics {
            for p in t.partitions {
                if p.error_code == 0 {
                    out.insert((t.name.0.to_string(), p.partition_index), p.offset);
                }
            }
        }
        Ok(out)
    }

    /// Partitions of a topic, from Metadata.
    pub async fn topic_partitions(&mut self, topic: &str) -> Result<Vec<i32>, AdminError> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(topic))))
            ]))
            .with_allow_auto_topic_creation(false);
        let response = self.client.send(request).await?;
        let t = response
            .topics
            .first()
            .ok_or_else(|| AdminError::MissingResult {
                what: format!("no metadata for topic {topic}"),
            })?;
        check(t.error_code, None, &format!("topic {topic}"))?;
        Ok(t.partitions.iter().map(|p| p.partition_index).collect())
    }

    /// Commits `offsets` for `group` as an admin (no member, no generation).
    pub async fn commit_offsets(
        &mut self,
        group: &str,
        offsets: &[((String, i32), i64)],
    ) -> Result<(), AdminError> {
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), offset) in offsets {
            topics.entry(topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_retention_time_ms(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(str_bytes(topic)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let response = self.client.send(request).await?;
        for t in &response.topics {
            for p in &t.partitions {
                check(
                    p.error_code,
                    None,
                    &format!("committing {}[{}]", t.name.0, p.partition_index),
                )?;
            }
        }
        Ok(())
    }

    /// A consumer-protocol (KIP-848) group through ConsumerGroupDescribe: `None` when the
    /// group is not one (or the broker does not serve the API, or the request fails).
    async fn describe_consumer_protocol(
        &mut self,
        group: &str,
    ) -> Option<(String, String, Vec<MemberRow>)> {
        let request =
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(str_bytes(group))]);
        let response = self.client.send(request).await.ok()?;
        let described = response.groups.first()?;
        if described.error_code != 0 {
            return None;
        }
        let members = described
            .members
            .iter()
            .map(|m| MemberRow {
                member_id: m.member_id.to_string(),
                instance_id: m.instance_id.as_ref().map(ToString::to_string),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment: m
                    .assignment
                    .topic_partitions
                    .iter()
                    .flat_map(|tp| {
                        tp.partitions
                            .iter()
                            .map(|p| (tp.topic_name.0.to_string(), *p))
                    })
                    .collect(),
            })
            .collect();
        Some((
            described.group_state.to_string(),
            format!("consumer protocol, {} assignor", described.assignor_name),
            members,
        ))
    }

    /// The rest of `describe_group`: committed offsets, log ends and owners for `members`.
    async fn describe_with(
        &mut self,
        group: &str,
        state: String,
        protocol: String,
        members: Vec<MemberRow>,
    ) -> Result<GroupDescription, AdminError> {
        let committed = self.committed_offsets(group).await?;
        let mut keys: BTreeSet<(String, i32)> = committed.keys().cloned().collect();
        for m in &members {
            keys.extend(m.assignment.iter().cloned());
        }
        let log_end = self.log_offsets(&keys, OffsetSpec::Latest).await?;
        let partitions = keys
            .into_iter()
            .map(|(topic, partition)| {
                let key = (topic.clone(), partition);
                PartitionRow {
                    committed: committed.get(&key).copied(),
                    log_end: log_end.get(&key).copied(),
                    owner: members
                        .iter()
                        .find(|m| m.assignment.contains(&key))
                        .map(|m| m.member_id.clone()),
                    topic,
                    partition,
                }
            })
            .collect();
        Ok(GroupDescription {
            group: group.to_string(),
            state,
            protocol,
            members,
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn assignments_decode_from_consumer_protocol_bytes() {
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(str_bytes("t")))
                .with_partitions(vec![1, 3]),
        ]);
        let mut buf: Vec<u8> = 1i16.to_be_bytes().to_vec();
        a.encode(&mut buf, 1).unwrap();
        assert_eq!(
            decode_assignment(&buf),
            vec![("t".to_string(), 1), ("t".to_string(), 3)]
        );
        assert!(decode_assignment(b"x").is_empty());
    }
}
