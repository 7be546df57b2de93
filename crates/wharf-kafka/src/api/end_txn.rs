//! EndTxn: answered once every marker is written and the outcome is durable.

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};
use wharf_broker::Broker;

use crate::errors;

pub async fn handle(broker: &Arc<Broker>, req: EndTxnRequest, _version: i16) -> EndTxnResponse {
    let result = broker
        .end_txn(
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await;
    match result {
        Ok(()) => EndTxnResponse::default(),
        Err(error) => {
            tracing::debug!(%error, "EndTxn refused");
            EndTxnResponse::default().with_error_code(errors::code(&error))
        }
    }
}
