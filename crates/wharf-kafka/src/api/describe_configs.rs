//! DescribeConfigs for topics (every key Wharf honours), the broker, and share groups.

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;
use wharf_broker::{Broker, ConfigSource, MessageType};

use super::{error_parts, RESOURCE_BROKER, RESOURCE_GROUP, RESOURCE_TOPIC};
use crate::codec::str;

/// Kafka's config sources: DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// DYNAMIC_GROUP_CONFIG.
const SOURCE_GROUP: i8 = 8;

fn entry(name: &str, value: &str, source: i8, read_only: bool) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str(name))
        .with_value(Some(str(value)))
        .with_config_source(source)
        .with_read_only(read_only)
}

/// Read-only entries of a `delay` or `transaction` topic: records waiting in
/// `__wharf_scheduled` and the earliest due time (epoch ms, -1 when none), so `wharf topic
/// describe` and Kafka tools show them. They cannot be set.
fn scheduled_entries(broker: &Broker, topic: &str) -> Vec<(&'static str, String)> {
    match broker.topic(topic) {
        Some(t) if t.config.message_type != MessageType::Normal => {
            let (waiting, next_due_ms) = broker.scheduler().waiting(topic);
            vec![
                ("wharf.scheduled.waiting", waiting.to_string()),
                (
                    "wharf.scheduled.next.due.ms",
                    next_due_ms.unwrap_or(-1).to_string(),
                ),
            ]
        }
        _ => Vec::new(),
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    req: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            match r.resource_type {
                RESOURCE_TOPIC => match broker.describe_configs(r.resource_name.as_str()) {
                    Ok(entries) => {
                        let mut configs: Vec<_> = entries
                            .iter()
                            .filter(|e| wanted(&e.name))
                            .map(|e| {
                                entry(
                                    &e.name,
                                    &e.value,
                                    if e.source == ConfigSource::Topic {
                                        SOURCE_TOPIC
                                    } else {
                                        SOURCE_DEFAULT
                                    },
                                    false,
                                )
                            })
                            .collect();
                        configs.extend(
                            scheduled_entries(broker, r.resource_name.as_str())
                                .into_iter()
                                .filter(|(n, _)| wanted(n))
                                .map(|(n, v)| entry(n, &v, SOURCE_TOPIC, true)),
                        );
                        result.with_configs(configs)
                    }
                    Err(e) => {
                        let (code, message) = error_parts(&e);
                        result.with_error_code(code).with_error_message(message)
                    }
                },
                RESOURCE_BROKER => {
                    let cfg = broker.config();
                    let all = [
                        (
                            "auto.create.topics.enable",
                            cfg.auto_create_topics.to_string(),
                        ),
                        ("num.partitions", cfg.num_partitions.to_string()),
                        ("broker.id", cfg.node_id.to_string()),
                    ];
                    result.with_configs(
                        all.iter()
                            .filter(|(n, _)| wanted(n))
                            .map(|(n, v)| entry(n, v, SOURCE_STATIC_BROKER, true))
                            .collect(),
                    )
                }
                RESOURCE_GROUP => {
                    let set = broker.share().configs_set(r.resource_name.as_str());
                    result.with_configs(
                        wharf_broker::share::config::SHARE_CONFIG_DEFAULTS
                            .iter()
                            .filter(|(n, _)| wanted(n))
                            .map(|(n, default)| match set.get(*n) {
                                Some(v) => entry(n, v, SOURCE_GROUP, false),
                                None => entry(n, default, SOURCE_DEFAULT, false),
                            })
                            .collect(),
                    )
                }
                _ => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str("unsupported resource type"))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
