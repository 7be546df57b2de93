//! DeleteTopics (by name; versions with topic ids are not advertised).

use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use wharf_broker::Broker;

use super::error_parts;

pub fn handle(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    _version: i16,
) -> DeleteTopicsResponse {
    let responses = req
        .topic_names
        .into_iter()
        .map(|name| {
            let result = DeletableTopicResult::default().with_name(Some(name.clone()));
            match broker.delete_topic(name.0.as_str()) {
                Ok(()) => result,
                Err(e) => {
                    let (code, message) = error_parts(&e);
                    result.with_error_code(code).with_error_message(message)
                }
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
