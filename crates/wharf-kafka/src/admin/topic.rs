//! Topics: CreateTopics, CreatePartitions, IncrementalAlterConfigs, DeleteTopics, and a
//! description built from Metadata, DescribeConfigs and ListOffsets.

use std::collections::HashMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest,
    MetadataResponse, TopicName,
};

use super::{check, str_bytes, Admin, AdminError, TIMEOUT_MS};

/// `ConfigResource.Type.TOPIC` in `DescribeConfigs` / `IncrementalAlterConfigs`.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// `DescribeConfigs` config source for a value set on the topic itself.
const CONFIG_SOURCE_TOPIC: i8 = 1;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// A topic to create; -1 partitions or replication factor use the broker default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// What [`Admin::create_topic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// The topic existed and the caller allowed it.
    AlreadyExists,
}

/// A topic as `wharf topic describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    /// `None` when the broker sent the nil id.
    pub topic_id: Option<String>,
    /// Topic-level config overrides, sorted by key; sensitive values read `[hidden]`.
    pub configs: Vec<(String, String)>,
    /// Sorted by partition.
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: i32,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// `None` when the partition has no leader to ask.
    pub log_start: Option<i64>,
    pub high_watermark: Option<i64>,
}

impl Admin {
    /// Creates a topic; with `if_not_exists`, an existing topic is [`Created::AlreadyExists`]
    /// rather than an error.
    pub async fn create_topic(
        &mut self,
        topic: &NewTopic,
        if_not_exists: bool,
    ) -> Result<Created, AdminError> {
        let name = &topic.name;
        let creatable = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(topic.partitions)
            .with_replication_factor(topic.replication_factor)
            .with_configs(
                topic
                    .configs
                    .iter()
                    .map(|(key, value)| {
                        CreatableTopicConfig::default()
                            .with_name(str_bytes(key))
                            .with_value(Some(str_bytes(value)))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![creatable])
            .with_timeout_ms(TIMEOUT_MS);
        let response = self.client.send(request).await?;
        let result = response
            .topics
            .iter()
            .find(|result| result.name.as_str() == name)
            .ok_or_else(|| AdminError::MissingResult {
                what: format!("CreateTopics response has no result for topic {name}"),
            })?;
        if if_not_exists && result.error_code == TOPIC_ALREADY_EXISTS {
            return Ok(Created::AlreadyExists);
        }
        check(
            result.error_code,
            result.error_message.as_ref(),
            &format!("creating topic {name}"),
        )?;
        Ok(Created::Created)
    }

    /// Raises the partition count of `name` to `count`.
    pub async fn create_partitions(&mut self, name: &str, count: i32) -> Result<(), AdminError> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(count)])
            .with_timeout_ms(TIMEOUT_MS);
        let response = self.client.send(request).await?;
        for result in &response.results {
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!("adding partitions to topic {}", result.name.as_str()),
            )?;
        }
        Ok(())
    }

    /// Sets the `set` configs of topic `name` and removes its `delete` overrides, in one
    /// IncrementalAlterConfigs request.
    pub async fn alter_topic_configs(
        &mut self,
        name: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<(), AdminError> {
        let set = set.iter().map(|(key, value)| {
            AlterableConfig::default()
                .with_name(str_bytes(key))
                .with_config_operation(OP_SET)
                .with_value(Some(str_bytes(value)))
        });
        let remove = delete.iter().map(|key| {
            AlterableConfig::default()
                .with_name(str_bytes(key))
                .with_config_operation(OP_DELETE)
        });
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(str_bytes(name))
            .with_configs(set.chain(remove).collect());
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
        let response = self.client.send(request).await?;
        for result in &response.responses {
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!(
                    "altering configs of topic {}",
                    result.resource_name.as_str()
                ),
            )?;
        }
        Ok(())
    }

    /// Deletes `names`; one result per topic in the broker's order, named by the topic (or its
    /// id when the broker answers without a name).
    pub async fn delete_topics(
        &mut self,
        names: &[String],
    ) -> Result<Vec<(String, Result<(), AdminError>)>, AdminError> {
        let version =
            self.client
                .version_for(ApiKey::DeleteTopics)
                .ok_or(AdminError::Unsupported {
                    api: "DeleteTopics",
                })?;
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(TIMEOUT_MS);
        if version >= 6 {
            request.topics = names
                .iter()
                .map(|name| DeleteTopicState::default().with_name(Some(topic_name(name))))
                .collect();
        } else {
            request.topic_names = names.iter().map(|name| topic_name(name)).collect();
        }
        let response = self.client.send(request).await?;
        Ok(response
            .responses
            .iter()
            .map(|result| {
                let name = result.name.as_ref().map_or_else(
                    || result.topic_id.to_string(),
                    |name| name.as_str().to_owned(),
                );
                let outcome = check(
                    result.error_code,
                    result.error_message.as_ref(),
                    &format!("deleting topic {name}"),
                );
                (name, outcome)
            })
            .collect())
    }

    /// Names of all topics, in the broker's order.
    pub async fn list_topics(&mut self) -> Result<Vec<String>, AdminError> {
        let metadata = self.metadata(None).await?;
        Ok(topic_names(&metadata.topics))
    }

    /// One topic, or all topics when `name` is `None`, sorted by name: partitions with their
    /// leaders, replicas, log start and high watermark, and the topic's config overrides.
    pub async fn describe_topics(
        &mut self,
        name: Option<&str>,
    ) -> Result<Vec<TopicDescription>, AdminError> {
        let metadata = self.metadata(name).await?;
        let mut topics: Vec<&MetadataResponseTopic> = metadata.topics.iter().collect();
        topics.sort_by(|left, right| left.name.cmp(&right.name));
        for topic in &topics {
            let topic_label = topic
                .name
                .as_ref()
                .map_or("<unnamed>", |name| name.as_str());
            check(
                topic.error_code,
                None,
                &format!("describing topic {topic_label}"),
            )?;
            for partition in &topic.partitions {
                check(
                    partition.error_code,
                    None,
                    &format!(
                        "describing topic {topic_label} partition {}",
                        partition.partition_index
                    ),
                )?;
            }
        }
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let names = topic_names(&metadata.topics);
        let configs = self.topic_configs(&names).await?;
        let earliest = self.list_offsets(&topics, EARLIEST_TIMESTAMP).await?;
        let latest = self.list_offsets(&topics, LATEST_TIMESTAMP).await?;

        let descriptions = topics
            .into_iter()
            .map(|topic| {
                let name = topic
                    .name
                    .as_ref()
                    .map(|name| name.as_str().to_owned())
                    .unwrap_or_default();
                let mut partitions: Vec<PartitionDescription> = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let key = (name.clone(), partition.partition_index);
                        PartitionDescription {
                            partition: partition.partition_index,
                            leader: partition.leader_id.0,
                            replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
                            isr: partition.isr_nodes.iter().map(|id| id.0).collect(),
                            log_start: earliest.get(&key).copied(),
                            high_watermark: latest.get(&key).copied(),
                        }
                    })
                    .collect();
                partitions.sort_by_key(|row| row.partition);
                TopicDescription {
                    configs: configs.get(&name).cloned().unwrap_or_default(),
                    name,
                    topic_id: (!topic.topic_id.is_nil()).then(|| topic.topic_id.to_string()),
                    partitions,
                }
            })
            .collect();
        Ok(descriptions)
    }

    /// Metadata for one topic, or for all topics when `name` is `None`.
    async fn metadata(&mut self, name: Option<&str>) -> Result<MetadataResponse, AdminError> {
        let version = self
            .client
            .version_for(ApiKey::Metadata)
            .ok_or(AdminError::Unsupported { api: "Metadata" })?;
        let topics = name
            .map(|name| vec![MetadataRequestTopic::default().with_name(Some(topic_name(name)))]);
        // The flag only exists from v4; older brokers never auto-create on Metadata from admin
        // tools.
        let request = MetadataRequest::default()
            .with_topics(topics)
            .with_allow_auto_topic_creation(version < 4);
        let response = self.client.send(request).await?;
        check(response.error_code, None, "fetching metadata")?;
        Ok(response)
    }

    /// Topic-level config overrides, by topic name, sorted by key.
    async fn topic_configs(
        &mut self,
        names: &[String],
    ) -> Result<HashMap<String, Vec<(String, String)>>, AdminError> {
        let resources = names
            .iter()
            .map(|name| {
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_TYPE_TOPIC)
                    .with_resource_name(str_bytes(name))
                    .with_configuration_keys(None)
            })
            .collect();
        let response = self
            .client
            .send(DescribeConfigsRequest::default().with_resources(resources))
            .await?;
        let mut configs = HashMap::new();
        for result in response.results {
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!(
                    "describing configs of topic {}",
                    result.resource_name.as_str()
                ),
            )?;
            let mut overrides: Vec<(String, String)> = result
                .configs
                .iter()
                .filter(|config| config.config_source == CONFIG_SOURCE_TOPIC)
                .map(|config| {
                    let value = match (&config.value, config.is_sensitive) {
                        (_, true) => "[hidden]".to_owned(),
                        (Some(value), false) => value.to_string(),
                        (None, false) => "null".to_owned(),
                    };
                    (config.name.to_string(), value)
                })
                .collect();
            overrides.sort();
            configs.insert(result.resource_name.to_string(), overrides);
        }
        Ok(configs)
    }

    /// Offsets at `timestamp` (-2 earliest, -1 latest) for every partition that has a leader.
    async fn list_offsets(
        &mut self,
        topics: &[&MetadataResponseTopic],
        timestamp: i64,
    ) -> Result<HashMap<(String, i32), i64>, AdminError> {
        let request_topics: Vec<ListOffsetsTopic> = topics
            .iter()
            .filter_map(|topic| {
                let name = topic.name.clone()?;
                let partitions: Vec<ListOffsetsPartition> = topic
                    .partitions
                    .iter()
                    .filter(|partition| partition.leader_id.0 >= 0)
                    .map(|partition| {
                        ListOffsetsPartition::default()
                            .with_partition_index(partition.partition_index)
                            .with_timestamp(timestamp)
                    })
                    .collect();
                (!partitions.is_empty()).then(|| {
                    ListOffsetsTopic::default()
                        .with_name(name)
                        .with_partitions(partitions)
                })
            })
            .collect();
        let mut offsets = HashMap::new();
        if request_topics.is_empty() {
            return Ok(offsets);
        }
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(request_topics);
        let response = self.client.send(request).await?;
        for topic in response.topics {
            for partition in topic.partitions {
                check(
                    partition.error_code,
                    None,
                    &format!(
                        "listing offsets of topic {} partition {}",
                        topic.name.as_str(),
                        partition.partition_index
                    ),
                )?;
                offsets.insert(
                    (topic.name.as_str().to_owned(), partition.partition_index),
                    partition.offset,
                );
            }
        }
        Ok(offsets)
    }
}

fn topic_names(topics: &[MetadataResponseTopic]) -> Vec<String> {
    topics
        .iter()
        .filter_map(|topic| topic.name.as_ref().map(|name| name.as_str().to_owned()))
        .collect()
}

fn topic_name(text: &str) -> TopicName {
    TopicName(str_bytes(text))
}
