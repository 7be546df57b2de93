//! Topic administration over the Kafka protocol (rdkafka's `AdminClient`) and the offset
//! look-ups the scenarios need. Never reaches into the broker.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// Topics created per CreateTopics request.
const CREATE_BATCH: usize = 100;

pub struct Admin {
    client: AdminClient<DefaultClientContext>,
    metadata: BaseConsumer,
    runtime: tokio::runtime::Runtime,
}

/// A consumer configuration for `assign`ed partitions. librdkafka needs a `group.id` even
/// then, but with no commits and no subscribe the group is never joined or used.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "wharf-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("log_level", "3");
    config
}

impl Admin {
    pub fn connect(bootstrap: &str) -> anyhow::Result<Admin> {
        let client = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("log_level", "3")
            .create()
            .context("creating the admin client")?;
        let metadata = consumer_config(bootstrap)
            .create()
            .context("creating the metadata client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Admin {
            client,
            metadata,
            runtime,
        })
    }

    /// Creates the topics and waits until the broker's metadata lists all their partitions.
    pub fn create_topics(&self, names: &[String], partitions: i32) -> anyhow::Result<()> {
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(60)))
            .request_timeout(Some(Duration::from_secs(90)));
        for batch in names.chunks(CREATE_BATCH) {
            let topics: Vec<NewTopic> = batch
                .iter()
                .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
                .collect();
            let results = self
                .runtime
                .block_on(self.client.create_topics(&topics, &options))
                .context("CreateTopics")?;
            for result in results {
                if let Err((topic, code)) = result {
                    bail!("creating topic {topic}: {code}");
                }
            }
        }
        self.wait_for_partitions(names, partitions, Duration::from_secs(60))
    }

    fn wait_for_partitions(
        &self,
        names: &[String],
        partitions: i32,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut missing: HashSet<&str> = names.iter().map(String::as_str).collect();
        while !missing.is_empty() {
            if let Ok(metadata) = self.metadata.fetch_metadata(None, Duration::from_secs(10)) {
                for topic in metadata.topics() {
                    let ready = topic.error().is_none()
                        && topic.partitions().len() == partitions as usize
                        && topic.partitions().iter().all(|p| p.leader() >= 0);
                    if ready {
                        missing.remove(topic.name());
                    }
                }
            }
            if missing.is_empty() {
                break;
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} of {} new topics not in metadata after {timeout:?}",
                    missing.len(),
                    names.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn delete_topics(&self, names: &[String]) -> anyhow::Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
        for batch in names.chunks(CREATE_BATCH) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let results = self
                .runtime
                .block_on(self.client.delete_topics(&refs, &options))
                .context("DeleteTopics")?;
            for result in results {
                if let Err((topic, code)) = result {
                    bail!("deleting topic {topic}: {code}");
                }
            }
        }
        Ok(())
    }

    /// The high watermark (next offset) of each partition `0..partitions` of `topic`.
    pub fn high_watermarks(&self, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
        (0..partitions)
            .map(|partition| {
                let (_, high) = self
                    .metadata
                    .fetch_watermarks(topic, partition, Duration::from_secs(30))
                    .with_context(|| format!("ListOffsets {topic}/{partition}"))?;
                Ok(high)
            })
            .collect()
    }
}
