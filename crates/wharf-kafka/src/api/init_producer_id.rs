//! InitProducerId: a new producer id, epoch 0, for an idempotent producer. As in Kafka, a
//! request without a transactional id always gets a new id, even when it names its current
//! one (v3+, an epoch bump after an error). Transactions are not supported yet: a
//! transactional id gets COORDINATOR_NOT_AVAILABLE, as FindCoordinator answers for
//! transaction keys (ADR 0007).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use wharf_broker::Broker;

/// Blocking: allocating a block of ids writes `meta.json`.
pub fn handle(
    broker: &Arc<Broker>,
    req: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let transactional_id = req.transactional_id;
    match broker.init_producer_id(transactional_id.as_ref().map(|t| t.0.as_str())) {
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
