//! IncrementalAlterConfigs: SET, DELETE, and APPEND/SUBTRACT of list configs
//! (`cleanup.policy`); the resulting configs are validated as a whole. GROUP resources
//! take share-group configs.

use std::sync::Arc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::ResponseError;
use wharf_broker::{Broker, ConfigOp};

use super::{error_parts, RESOURCE_GROUP, RESOURCE_TOPIC};
use crate::codec::str;

pub fn handle(
    broker: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let resp = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if r.resource_type != RESOURCE_TOPIC && r.resource_type != RESOURCE_GROUP {
                return resp
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str("only topic and group configs can be altered")));
            }
            let mut ops = Vec::with_capacity(r.configs.len());
            for c in &r.configs {
                let name = c.name.as_str().to_string();
                match (c.config_operation, &c.value) {
                    (0, Some(v)) => ops.push(ConfigOp::Set(name, v.as_str().to_string())),
                    (1, _) => ops.push(ConfigOp::Delete(name)),
                    (2, Some(v)) => ops.push(ConfigOp::Append(name, v.as_str().to_string())),
                    (3, Some(v)) => ops.push(ConfigOp::Subtract(name, v.as_str().to_string())),
                    _ => {
                        return resp
                            .with_error_code(ResponseError::InvalidConfig.code())
                            .with_error_message(Some(str(&format!(
                                "operation {} on {name} is not supported",
                                c.config_operation
                            ))));
                    }
                }
            }
            let result = if r.resource_type == RESOURCE_GROUP {
                // Runs on a blocking thread (see dispatch): waiting here blocks no worker.
                tokio::runtime::Handle::current().block_on(broker.share_alter_configs(
                    r.resource_name.as_str(),
                    &ops,
                    req.validate_only,
                ))
            } else {
                broker.alter_configs(r.resource_name.as_str(), None, &ops, req.validate_only)
            };
            match result {
                Ok(()) => resp,
                Err(e) => {
                    let (code, message) = error_parts(&e);
                    resp.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
