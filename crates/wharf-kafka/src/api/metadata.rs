//! Metadata: the cluster's nodes, topics and partitions (each with its shard's leader,
//! replicas and ISR); auto-creates requested topics when
//! `auto.create.topics.enable` and the request allow it.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;
use wharf_broker::{Broker, Topic};

use crate::codec::str;

fn topic_entry(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let ids = |nodes: Vec<i32>| nodes.into_iter().map(BrokerId).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            // Every partition of a shard shares the shard's leader, replicas and ISR.
            let role = broker.partition_role(p);
            let entry = MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(role.leader.unwrap_or(-1)))
                .with_leader_epoch(role.leader_epoch)
                .with_replica_nodes(ids(role.replicas))
                .with_isr_nodes(ids(role.isr));
            match role.leader {
                Some(_) => entry,
                // During an election: clients retry (Kafka's answer too).
                None => entry.with_error_code(ResponseError::LeaderNotAvailable.code()),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str(&topic.name))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.is_internal())
        .with_partitions(partitions)
        .with_topic_authorized_operations(i32::MIN)
}

fn error_entry(
    name: Option<TopicName>,
    id: uuid::Uuid,
    error: ResponseError,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name)
        .with_topic_id(id)
        .with_error_code(error.code())
        .with_topic_authorized_operations(i32::MIN)
}

pub fn handle(broker: &Arc<Broker>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let allow_auto_create = version < 4 || req.allow_auto_topic_creation;
    let requested = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let topics = match requested {
        None => broker
            .topics()
            .iter()
            .map(|t| topic_entry(broker, t))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) => match broker.topic(name.0.as_str()) {
                    Some(t) => topic_entry(broker, &t),
                    None if allow_auto_create => match broker.auto_create(name.0.as_str()) {
                        Some(Ok(t)) => topic_entry(broker, &t),
                        Some(Err(e)) => error_entry(
                            Some(name),
                            uuid::Uuid::nil(),
                            crate::errors::kafka_error(&e),
                        ),
                        None => error_entry(
                            Some(name),
                            uuid::Uuid::nil(),
                            ResponseError::UnknownTopicOrPartition,
                        ),
                    },
                    None => error_entry(
                        Some(name),
                        uuid::Uuid::nil(),
                        ResponseError::UnknownTopicOrPartition,
                    ),
                },
                None => match broker.topic_by_id(wanted.topic_id) {
                    Some(t) => topic_entry(broker, &t),
                    None => error_entry(None, wanted.topic_id, ResponseError::UnknownTopicId),
                },
            })
            .collect(),
    };
    let cluster = broker.cluster();
    let brokers = cluster
        .nodes()
        .into_iter()
        .map(|n| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(n.id))
                .with_host(str(&n.host))
                .with_port(n.port)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str(&broker.cluster_id())))
        .with_controller_id(BrokerId(cluster.controller().unwrap_or(-1)))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN)
}
