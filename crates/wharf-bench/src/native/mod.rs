//! The lean client (`--client native`): Kafka requests encoded with `kafka-protocol`, record
//! batches built ahead of time and each distinct Produce request encoded once, several
//! requests in flight per connection, every response checked. It exists so the client uses
//! little of the CPU the broker shares it with (librdkafka uses most of 2 cores).
//!
//! # Layout
//! - `conn`: a request encoded once and sent many times; a pipelined connection.
//! - `produce`: the produce load; `acks`: the checks of its answers.
//! - `fetch`: reading partitions with pipelined Fetches, batch validation.
//! - `read_back`: the measured `consume-1k` and the check after every produce run.
//! - `latency`: the paced producer and the consumer of `e2e-latency`.
//!
//! Fixed versions, supported by Wharf and by Kafka 3.x and 4.x: Produce v9, Fetch v12,
//! Metadata v12 (all flexible, topics by name).

pub mod acks;
pub mod conn;
pub mod fetch;
pub mod latency;
pub mod produce;
pub mod read_back;

use anyhow::{bail, Context as _};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

pub const PRODUCE_VERSION: i16 = 9;
pub const FETCH_VERSION: i16 = 12;
pub const METADATA_VERSION: i16 = 12;

/// Kafka error codes the tool names in its messages.
pub fn error_name(code: i16) -> String {
    let name = match code {
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        35 => "UNSUPPORTED_VERSION",
        56 => "KAFKA_STORAGE_ERROR",
        _ => "",
    };
    if name.is_empty() {
        format!("error code {code}")
    } else {
        format!("error code {code} ({name})")
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// The partition count of each topic, from one Metadata request; fails unless every topic
/// exists and every partition has a leader.
pub async fn partition_counts(bootstrap: &str, topics: &[String]) -> anyhow::Result<Vec<i32>> {
    let (mut writer, mut reader) = conn::connect(bootstrap).await?;
    let request = MetadataRequest::default().with_topics(Some(
        topics
            .iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
            .collect(),
    ));
    writer
        .send(&conn::Prepared::encode(&request, METADATA_VERSION)?)
        .await?;
    writer.flush().await?;
    let response = reader
        .receive::<MetadataRequest>(METADATA_VERSION)
        .await
        .context("Metadata")?;
    topics
        .iter()
        .map(|name| {
            let Some(topic) = response
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
            else {
                bail!("Metadata: topic {name} missing from the response");
            };
            if topic.error_code != 0 {
                bail!("Metadata: topic {name}: {}", error_name(topic.error_code));
            }
            if let Some(p) = topic.partitions.iter().find(|p| p.leader_id.0 < 0) {
                bail!(
                    "Metadata: topic {name} partition {} has no leader",
                    p.partition_index
                );
            }
            Ok(topic.partitions.len() as i32)
        })
        .collect()
}

/// A current-thread tokio runtime for one load: the native client keeps to one core.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the native client's runtime")
}
