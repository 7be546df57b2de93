//! InitProducerId. Without a transactional id: a new producer id, epoch 0 (as in Kafka, even
//! when a v3+ request names its current one). With one: the transaction coordinator bumps
//! the id's epoch, fencing the previous producer; an open transaction of that producer is
//! aborted first and the client, answered CONCURRENT_TRANSACTIONS, retries (ADR 0008).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use wharf_broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    req: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let result = if let Some(id) = req.transactional_id.as_ref().map(|t| t.0.to_string()) {
        broker
            .init_transactional_producer(&id, req.transaction_timeout_ms)
            .await
    } else {
        // Blocking: allocating a block of ids writes `meta.json`.
        let b = broker.clone();
        tokio::task::spawn_blocking(move || b.init_producer_id(None))
            .await
            .unwrap_or_else(|e| {
                Err(wharf_broker::BrokerError::InvalidRequest(format!(
                    "producer id task failed: {e}"
                )))
            })
    };
    match result {
        Ok((producer_id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(error) => {
            tracing::info!(%error, "InitProducerId refused");
            InitProducerIdResponse::default()
                .with_error_code(crate::errors::code(&error))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
