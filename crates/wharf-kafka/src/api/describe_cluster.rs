//! DescribeCluster: the cluster's nodes, the cluster id, the controller.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use wharf_broker::Broker;

use crate::codec::str;

pub fn handle(
    broker: &Arc<Broker>,
    _req: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let cluster = broker.cluster();
    let brokers = cluster
        .nodes()
        .into_iter()
        .map(|n| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(n.id))
                .with_host(str(&n.host))
                .with_port(n.port)
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(str(&broker.cluster_id()))
        .with_controller_id(BrokerId(cluster.controller().unwrap_or(-1)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN)
        .with_endpoint_type(1)
}
