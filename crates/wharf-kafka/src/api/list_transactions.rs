//! ListTransactions v0–1: every transactional id, filtered by state names (unknown names
//! are returned as such), producer ids and (v1) how long the transaction has been open.

use std::sync::Arc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use wharf_broker::txn::TxnState;
use wharf_broker::Broker;

use crate::codec::str;

pub fn handle(
    broker: &Arc<Broker>,
    req: ListTransactionsRequest,
    _version: i16,
) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for name in req.state_filters {
        match TxnState::from_name(&name) {
            Some(s) => states.push(s),
            None => unknown.push(name),
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let listed = broker
        .transactions()
        .list()
        .into_iter()
        .filter(|m| states.is_empty() || states.contains(&m.state))
        .filter(|m| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(m.producer_id))
        })
        .filter(|m| {
            req.duration_filter < 0 || (m.start_ms >= 0 && now - m.start_ms >= req.duration_filter)
        })
        .map(|m| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(str(&m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
