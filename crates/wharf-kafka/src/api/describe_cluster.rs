//! DescribeCluster: this broker, the cluster id, the controller (itself).

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
    let cfg = broker.config();
    let me = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(cfg.node_id))
        .with_host(str(&cfg.advertised_host))
        .with_port(cfg.advertised_port);
    DescribeClusterResponse::default()
        .with_cluster_id(str(&broker.cluster_id()))
        .with_controller_id(BrokerId(cfg.node_id))
        .with_brokers(vec![me])
        .with_cluster_authorized_operations(i32::MIN)
        .with_endpoint_type(1)
}
