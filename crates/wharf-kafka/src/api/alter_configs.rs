//! AlterConfigs: replaces a topic's whole set of overrides.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::ResponseError;
use wharf_broker::Broker;

use super::{error_parts, RESOURCE_TOPIC};
use crate::codec::str;

pub fn handle(
    broker: &Arc<Broker>,
    req: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let resp = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if r.resource_type != RESOURCE_TOPIC {
                return resp
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str("only topic configs can be altered")));
            }
            let configs: BTreeMap<String, String> = r
                .configs
                .iter()
                .filter_map(|c| {
                    Some((
                        c.name.as_str().to_string(),
                        c.value.as_ref()?.as_str().to_string(),
                    ))
                })
                .collect();
            match broker.alter_configs(
                r.resource_name.as_str(),
                Some(configs),
                &[],
                req.validate_only,
            ) {
                Ok(()) => resp,
                Err(e) => {
                    let (code, message) = error_parts(&e);
                    resp.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}
