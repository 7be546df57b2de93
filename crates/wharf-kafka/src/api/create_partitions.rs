//! CreatePartitions: grows a topic to a new total.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;
use wharf_broker::Broker;

use super::error_parts;
use crate::codec::str;

pub fn handle(
    broker: &Arc<Broker>,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let node = broker.config().node_id;
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if let Some(assignments) = &t.assignments {
                if assignments
                    .iter()
                    .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
                {
                    return result
                        .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                        .with_error_message(Some(str("replicas must be exactly this broker")));
                }
            }
            match broker.create_partitions(t.name.0.as_str(), t.count, req.validate_only) {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = error_parts(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
