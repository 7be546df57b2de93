//! AddOffsetsToTxn: the group's offsets will be committed by the open transaction.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use wharf_broker::Broker;

use crate::errors;

pub async fn handle(
    broker: &Arc<Broker>,
    req: AddOffsetsToTxnRequest,
    _version: i16,
) -> AddOffsetsToTxnResponse {
    let result = broker
        .add_offsets_to_txn(
            &req.transactional_id.0,
            req.producer_id.0,
            req.producer_epoch,
            &req.group_id.0,
        )
        .await;
    match result {
        Ok(()) => AddOffsetsToTxnResponse::default(),
        Err(error) => {
            tracing::debug!(%error, "AddOffsetsToTxn refused");
            AddOffsetsToTxnResponse::default().with_error_code(errors::code(&error))
        }
    }
}
