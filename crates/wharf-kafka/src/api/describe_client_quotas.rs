//! DescribeClientQuotas: the quotas of entities matching a filter (exact name, default, any
//! name per entity type; `strict` excludes entities with other types).

use std::sync::Arc;

use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use wharf_broker::quota::{EntityName, Match};
use wharf_broker::Broker;

pub fn handle(
    broker: &Arc<Broker>,
    req: DescribeClientQuotasRequest,
    _version: i16,
) -> DescribeClientQuotasResponse {
    let mut filter = Vec::with_capacity(req.components.len());
    let strict = req.strict;
    for c in req.components {
        let kind = c.entity_type.to_string();
        let m = match (c.match_type, &c._match) {
            (0, Some(name)) => Match::Exact(name.to_string()),
            (1, _) => Match::Default,
            (2, _) => Match::AnyNamed,
            _ => {
                return DescribeClientQuotasResponse::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "match type 0 needs a name; match types are 0, 1 and 2",
                    )))
            }
        };
        if kind != "user" && kind != "client-id" {
            return DescribeClientQuotasResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(format!("unknown entity type {kind}").into()));
        }
        filter.push((kind, m));
    }
    let name = |n: &EntityName| match n {
        EntityName::Default => None,
        EntityName::Named(s) => Some(StrBytes::from_string(s.clone())),
    };
    let entries = broker
        .describe_client_quotas(&filter, strict)
        .into_iter()
        .map(|(entity, values)| {
            let mut parts = Vec::new();
            if let Some(user) = &entity.user {
                parts.push(
                    EntityData::default()
                        .with_entity_type(StrBytes::from_static_str("user"))
                        .with_entity_name(name(user)),
                );
            }
            if let Some(client) = &entity.client_id {
                parts.push(
                    EntityData::default()
                        .with_entity_type(StrBytes::from_static_str("client-id"))
                        .with_entity_name(name(client)),
                );
            }
            EntryData::default().with_entity(parts).with_values(
                values
                    .into_iter()
                    .map(|(k, v)| ValueData::default().with_key(k.into()).with_value(v))
                    .collect(),
            )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}
