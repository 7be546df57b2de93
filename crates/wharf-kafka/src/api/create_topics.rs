//! CreateTopics, with configs and `validate_only`.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;
use wharf_broker::{Broker, BrokerError, ConfigSource, TopicSpec};

use super::error_parts;
use crate::codec::str;

pub fn handle(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let node = broker.config().node_id;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.as_str().to_string();
            let result = CreatableTopicResult::default().with_name(t.name.clone());
            let mut partitions = t.num_partitions;
            let mut replication = t.replication_factor;
            if !t.assignments.is_empty() {
                if t.assignments
                    .iter()
                    .any(|a| a.broker_ids.iter().any(|b| b.0 != node) || a.broker_ids.len() != 1)
                {
                    return result
                        .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                        .with_error_message(Some(str("replicas must be exactly this broker")));
                }
                partitions = t.assignments.len() as i32;
                replication = 1;
            }
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                match &c.value {
                    Some(v) => configs.insert(c.name.as_str().to_string(), v.as_str().to_string()),
                    None => continue,
                };
            }
            let spec = TopicSpec {
                name: name.clone(),
                partitions,
                replication_factor: replication,
                configs,
            };
            match broker.create_topic(&spec, req.validate_only) {
                Ok(topic) => {
                    let described = topic
                        .config
                        .describe(&topic.overrides)
                        .into_iter()
                        .map(|e| {
                            CreatableTopicConfigs::default()
                                .with_name(str(&e.name))
                                .with_value(Some(str(&e.value)))
                                .with_config_source(if e.source == ConfigSource::Topic {
                                    1
                                } else {
                                    5
                                })
                        })
                        .collect();
                    let count = if req.validate_only {
                        spec_partitions(broker, partitions)
                    } else {
                        topic.partitions.len() as i32
                    };
                    let result = result
                        .with_topic_id(topic.id)
                        .with_num_partitions(count)
                        .with_replication_factor(1);
                    if version >= 5 {
                        result.with_configs(Some(described))
                    } else {
                        result
                    }
                }
                Err(e) => {
                    if !matches!(e, BrokerError::TopicAlreadyExists { .. }) {
                        tracing::info!(topic = %name, error = %e, "create topic rejected");
                    }
                    let (code, message) = error_parts(&e);
                    result
                        .with_error_code(code)
                        .with_error_message(message)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn spec_partitions(broker: &Broker, partitions: i32) -> i32 {
    if partitions == -1 {
        broker.config().num_partitions
    } else {
        partitions
    }
}
