//! AlterClientQuotas: sets or removes `producer_byte_rate` / `consumer_byte_rate` of users,
//! client ids and their defaults; saved durably before the answer. Each entry fails alone.

use std::sync::Arc;

use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};
use wharf_broker::quota::entity_of;
use wharf_broker::Broker;

use crate::errors;

pub fn handle(
    broker: &Arc<Broker>,
    req: AlterClientQuotasRequest,
    _version: i16,
) -> AlterClientQuotasResponse {
    let validate_only = req.validate_only;
    let entries = req
        .entries
        .into_iter()
        .map(|entry| {
            let parts: Vec<(String, Option<String>)> = entry
                .entity
                .iter()
                .map(|e| {
                    (
                        e.entity_type.to_string(),
                        e.entity_name.as_ref().map(ToString::to_string),
                    )
                })
                .collect();
            let ops: Vec<(String, Option<f64>)> = entry
                .ops
                .iter()
                .map(|op| (op.key.to_string(), (!op.remove).then_some(op.value)))
                .collect();
            let result = entity_of(&parts)
                .and_then(|entity| broker.alter_client_quota(&entity, &ops, validate_only));
            let (code, message) = match result {
                Ok(()) => (0, None),
                Err(error) => (errors::code(&error), Some(error.to_string().into())),
            };
            EntryData::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_entity(
                    entry
                        .entity
                        .into_iter()
                        .map(|e| {
                            EntityData::default()
                                .with_entity_type(e.entity_type)
                                .with_entity_name(e.entity_name)
                        })
                        .collect(),
                )
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
