//! `wharf topic create|list|describe|alter|delete`: topic administration over the Kafka
//! protocol against a running broker, as `kafka-topics.sh` does.
//!
//! Every Kafka error code in a response becomes an error naming the Kafka error; tables are
//! built by pure functions so their layout is tested without a broker.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::{bail, Context};
use wharf_kafka::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use wharf_kafka::kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use wharf_kafka::kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use wharf_kafka::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use wharf_kafka::kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use wharf_kafka::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use wharf_kafka::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use wharf_kafka::kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use wharf_kafka::kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest,
    MetadataResponse, TopicName,
};
use wharf_kafka::kafka_protocol::protocol::StrBytes;
use wharf_kafka::kafka_protocol::ResponseError;
use wharf_kafka::Client;

const TIMEOUT_MS: i32 = 30_000;
/// `ConfigResource.Type.TOPIC` in `DescribeConfigs` / `IncrementalAlterConfigs`.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// `DescribeConfigs` config source for a value set on the topic itself.
const CONFIG_SOURCE_TOPIC: i8 = 1;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;
const TOPIC_ALREADY_EXISTS: i16 = 36;

#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions; -1 uses the broker default.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor; -1 uses the broker default.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// Topic config override as key=value; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List all topics.
    List,
    /// Describe one topic, or all topics.
    Describe { name: Option<String> },
    /// Add partitions to a topic or change its configs.
    Alter {
        name: String,
        /// New total number of partitions.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a topic config as key=value; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Remove a topic config override; repeatable.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn run(bootstrap: &str, cmd: TopicCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(bootstrap).await?;
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            create(
                &mut client,
                &name,
                partitions,
                replication_factor,
                &configs,
                if_not_exists,
            )
            .await
        }
        TopicCommand::List => {
            let metadata = metadata(&mut client, None).await?;
            let mut names = topic_names(&metadata.topics);
            names.sort();
            for name in names {
                println!("{name}");
            }
            Ok(())
        }
        TopicCommand::Describe { name } => describe(&mut client, name).await,
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => alter(&mut client, &name, partitions, &configs, &delete_configs).await,
        TopicCommand::Delete { names } => delete(&mut client, &names).await,
    }
}

async fn create(
    client: &mut Client,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
    if_not_exists: bool,
) -> anyhow::Result<()> {
    let topic = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
        .with_configs(
            configs
                .iter()
                .map(|(key, value)| {
                    CreatableTopicConfig::default()
                        .with_name(str_bytes(key))
                        .with_value(Some(str_bytes(value)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(TIMEOUT_MS);
    let response = client.send(request).await?;
    let result = response
        .topics
        .iter()
        .find(|result| result.name.as_str() == name)
        .with_context(|| format!("CreateTopics response has no result for topic {name}"))?;
    if if_not_exists && result.error_code == TOPIC_ALREADY_EXISTS {
        println!("Topic {name} already exists.");
        return Ok(());
    }
    check(
        result.error_code,
        result.error_message.as_ref(),
        &format!("creating topic {name}"),
    )?;
    println!("Created topic {name}.");
    Ok(())
}

async fn alter(
    client: &mut Client,
    name: &str,
    partitions: Option<i32>,
    configs: &[(String, String)],
    delete_configs: &[String],
) -> anyhow::Result<()> {
    if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
        bail!("nothing to alter: pass --partitions, --config or --delete-config");
    }
    if let Some(count) = partitions {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(count)])
            .with_timeout_ms(TIMEOUT_MS);
        let response = client.send(request).await?;
        for result in &response.results {
            check(
                result.error_code,
                result.error_message.as_ref(),
                &format!("adding partitions to topic {}", result.name.as_str()),
            )?;
        }
        println!("Topic {name} now has {count} partitions.");
    }
    if !configs.is_empty() || !delete_configs.is_empty() {
        let set = configs.iter().map(|(key, value)| {
            AlterableConfig::default()
                .with_name(str_bytes(key))
                .with_config_operation(OP_SET)
                .with_value(Some(str_bytes(value)))
        });
        let remove = delete_configs.iter().map(|key| {
            AlterableConfig::default()
                .with_name(str_bytes(key))
                .with_config_operation(OP_DELETE)
        });
        let resource = AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TYPE_TOPIC)
            .with_resource_name(str_bytes(name))
            .with_configs(set.chain(remove).collect());
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
        let response = client.send(request).await?;
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
        println!("Updated configs of topic {name}.");
    }
    Ok(())
}

async fn delete(client: &mut Client, names: &[String]) -> anyhow::Result<()> {
    let version = client
        .version_for(ApiKey::DeleteTopics)
        .context("broker does not support DeleteTopics")?;
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(TIMEOUT_MS);
    if version >= 6 {
        request.topics = names
            .iter()
            .map(|name| DeleteTopicState::default().with_name(Some(topic_name(name))))
            .collect();
    } else {
        request.topic_names = names.iter().map(|name| topic_name(name)).collect();
    }
    let response = client.send(request).await?;
    let mut failures = Vec::new();
    for result in &response.responses {
        let name = result.name.as_ref().map_or_else(
            || result.topic_id.to_string(),
            |name| name.as_str().to_owned(),
        );
        match check(
            result.error_code,
            result.error_message.as_ref(),
            &format!("deleting topic {name}"),
        ) {
            Ok(()) => println!("Deleted topic {name}."),
            Err(err) => failures.push(err.to_string()),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

async fn describe(client: &mut Client, name: Option<String>) -> anyhow::Result<()> {
    let metadata = metadata(client, name.as_deref()).await?;
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
        return Ok(());
    }
    let names = topic_names(&metadata.topics);
    let configs = topic_configs(client, &names).await?;
    let earliest = list_offsets(client, &topics, EARLIEST_TIMESTAMP).await?;
    let latest = list_offsets(client, &topics, LATEST_TIMESTAMP).await?;

    let mut out = String::new();
    for topic in topics {
        let name = topic
            .name
            .as_ref()
            .map(|name| name.as_str().to_owned())
            .unwrap_or_default();
        let mut partitions: Vec<PartitionRow> = topic
            .partitions
            .iter()
            .map(|partition| {
                let key = (name.clone(), partition.partition_index);
                PartitionRow {
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
        let description = TopicDescription {
            configs: configs.get(&name).cloned().unwrap_or_default(),
            name,
            topic_id: if topic.topic_id.is_nil() {
                "-".to_owned()
            } else {
                topic.topic_id.to_string()
            },
            partitions,
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format_topic(&description));
    }
    print!("{out}");
    Ok(())
}

/// Fetches metadata for one topic, or for all topics when `name` is `None`.
async fn metadata(client: &mut Client, name: Option<&str>) -> anyhow::Result<MetadataResponse> {
    let version = client
        .version_for(ApiKey::Metadata)
        .context("broker does not support Metadata")?;
    let topics =
        name.map(|name| vec![MetadataRequestTopic::default().with_name(Some(topic_name(name)))]);
    // The flag only exists from v4; older brokers never auto-create on Metadata from admin tools.
    let request = MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(version < 4);
    let response = client.send(request).await?;
    check(response.error_code, None, "fetching metadata")?;
    Ok(response)
}

/// Topic-level config overrides, by topic name, sorted by key.
async fn topic_configs(
    client: &mut Client,
    names: &[String],
) -> anyhow::Result<HashMap<String, Vec<(String, String)>>> {
    let resources = names
        .iter()
        .map(|name| {
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(str_bytes(name))
                .with_configuration_keys(None)
        })
        .collect();
    let response = client
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
    client: &mut Client,
    topics: &[&MetadataResponseTopic],
    timestamp: i64,
) -> anyhow::Result<HashMap<(String, i32), i64>> {
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
    let response = client.send(request).await?;
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

/// Turns a non-zero Kafka error code into an error naming it, e.g.
/// `creating topic t: TopicAlreadyExists: Topic 't' already exists.`
fn check(error_code: i16, message: Option<&StrBytes>, context: &str) -> anyhow::Result<()> {
    let Some(error) = ResponseError::try_from_code(error_code) else {
        return Ok(());
    };
    match message
        .map(StrBytes::as_str)
        .filter(|text| !text.is_empty())
    {
        Some(text) => bail!("{context}: {error}: {text}"),
        None => bail!("{context}: {error}"),
    }
}

fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}

fn topic_names(topics: &[MetadataResponseTopic]) -> Vec<String> {
    topics
        .iter()
        .filter_map(|topic| topic.name.as_ref().map(|name| name.as_str().to_owned()))
        .collect()
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn topic_name(text: &str) -> TopicName {
    TopicName(str_bytes(text))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicDescription {
    name: String,
    topic_id: String,
    configs: Vec<(String, String)>,
    partitions: Vec<PartitionRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionRow {
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    log_start: Option<i64>,
    high_watermark: Option<i64>,
}

/// One summary line, then an aligned table with a row per partition.
fn format_topic(topic: &TopicDescription) -> String {
    let replication_factor = topic
        .partitions
        .first()
        .map_or(0, |partition| partition.replicas.len());
    let configs = if topic.configs.is_empty() {
        "-".to_owned()
    } else {
        topic
            .configs
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = format!(
        "Topic: {}  TopicId: {}  PartitionCount: {}  ReplicationFactor: {}  Configs: {}\n",
        topic.name,
        topic.topic_id,
        topic.partitions.len(),
        replication_factor,
        configs
    );
    let rows: Vec<Vec<String>> = topic
        .partitions
        .iter()
        .map(|row| {
            vec![
                row.partition.to_string(),
                leader_cell(row.leader),
                join_ids(&row.replicas),
                join_ids(&row.isr),
                offset_cell(row.log_start),
                offset_cell(row.high_watermark),
            ]
        })
        .collect();
    out.push_str(&format_table(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "LOG-START",
            "HIGH-WATERMARK",
        ],
        &rows,
    ));
    out
}

/// Left-aligned columns separated by two spaces, no trailing whitespace, one line per row.
fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_cells: Vec<&str> = headers.to_vec();
    push_row(&mut out, &widths, &header_cells);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        push_row(&mut out, &widths, &cells);
    }
    out
}

fn push_row(out: &mut String, widths: &[usize], cells: &[&str]) {
    let mut line = String::new();
    for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if index > 0 {
            line.push_str("  ");
        }
        // Writing to a String cannot fail.
        let _ = write!(line, "{cell:<width$}");
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn leader_cell(leader: i32) -> String {
    if leader < 0 {
        "none".to_owned()
    } else {
        leader.to_string()
    }
}

fn join_ids(ids: &[i32]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn offset_cell(offset: Option<i64>) -> String {
    offset.map_or_else(|| "-".to_owned(), |offset| offset.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up_under_their_headers() {
        let table = format_table(
            &["PARTITION", "LEADER", "REPLICAS"],
            &[
                vec!["0".into(), "1".into(), "1,2,3".into()],
                vec!["10".into(), "none".into(), "2".into()],
            ],
        );
        assert_eq!(
            table,
            "PARTITION  LEADER  REPLICAS\n\
             0          1       1,2,3\n\
             10         none    2\n"
        );
    }

    #[test]
    fn topic_description_shows_summary_and_one_row_per_partition() {
        let topic = TopicDescription {
            name: "orders".into(),
            topic_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            configs: vec![
                ("cleanup.policy".into(), "compact".into()),
                ("retention.ms".into(), "1000".into()),
            ],
            partitions: vec![
                PartitionRow {
                    partition: 0,
                    leader: 1,
                    replicas: vec![1, 2],
                    isr: vec![1, 2],
                    log_start: Some(0),
                    high_watermark: Some(12_345),
                },
                PartitionRow {
                    partition: 1,
                    leader: -1,
                    replicas: vec![2, 1],
                    isr: vec![],
                    log_start: None,
                    high_watermark: None,
                },
            ],
        };
        let text = format_topic(&topic);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "Topic: orders  TopicId: AAAAAAAAAAAAAAAAAAAAAA  PartitionCount: 2  \
                 ReplicationFactor: 2  Configs: cleanup.policy=compact,retention.ms=1000",
                "PARTITION  LEADER  REPLICAS  ISR  LOG-START  HIGH-WATERMARK",
                "0          1       1,2       1,2  0          12345",
                "1          none    2,1            -          -",
            ]
        );
    }

    #[test]
    fn config_argument_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn kafka_error_code_is_reported_by_name_with_its_message() {
        let message = StrBytes::from_static_str("Topic 't' already exists.");
        let Err(err) = check(36, Some(&message), "creating topic t") else {
            panic!("error code 36 must be an error");
        };
        assert_eq!(
            err.to_string(),
            "creating topic t: TopicAlreadyExists: Topic 't' already exists."
        );
        assert!(check(0, None, "ok").is_ok());
    }
}
