//! DescribeTransactions: state, producer, timeout, start time and partitions of each
//! transactional id; TRANSACTIONAL_ID_NOT_FOUND for an unknown one.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::ResponseError;
use wharf_broker::Broker;

use crate::codec::str;

pub fn handle(
    broker: &Arc<Broker>,
    req: DescribeTransactionsRequest,
    _version: i16,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let state = TransactionState::default().with_transactional_id(id.clone());
            let Some(meta) = broker.transactions().describe(&id.0) else {
                return state
                    .with_error_code(ResponseError::TransactionalIdNotFound.code())
                    .with_transaction_state(str(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1);
            };
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for p in &meta.partitions {
                topics
                    .entry(p.topic.as_str())
                    .or_default()
                    .push(p.partition);
            }
            state
                .with_transaction_state(str(meta.state.name()))
                .with_transaction_timeout_ms(meta.timeout_ms)
                .with_transaction_start_time_ms(meta.start_ms)
                .with_producer_id(ProducerId(meta.producer_id))
                .with_producer_epoch(meta.producer_epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            TopicData::default()
                                .with_topic(TopicName(str(topic)))
                                .with_partitions(partitions)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
