//! AddPartitionsToTxn v0–3 (a client adding partitions to its open transaction). The v4+
//! batched form is broker-to-broker and not advertised.

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use wharf_broker::txn::TxnPartition;
use wharf_broker::Broker;

use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    req: AddPartitionsToTxnRequest,
    _version: i16,
) -> AddPartitionsToTxnResponse {
    let partitions: Vec<TxnPartition> = req
        .v3_and_below_topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TxnPartition::new(t.name.0.to_string(), *p))
        })
        .collect();
    let result = broker
        .add_partitions_to_txn(
            &req.v3_and_below_transactional_id.0,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &partitions,
        )
        .await;
    let code = match &result {
        Ok(()) => 0,
        Err(error) => {
            tracing::debug!(%error, "AddPartitionsToTxn refused");
            errors::code(error)
        }
    };
    let results = req
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name)
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}
