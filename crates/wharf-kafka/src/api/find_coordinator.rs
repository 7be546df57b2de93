//! FindCoordinator: this broker coordinates every group and every transactional id. v4+
//! batches keys. Share-group coordinators do not exist yet: COORDINATOR_NOT_AVAILABLE.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use wharf_broker::Broker;

use crate::codec::str;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub fn handle(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let cfg = broker.config();
    let error = (!matches!(req.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION)).then(|| {
        (
            ResponseError::CoordinatorNotAvailable.code(),
            str("only group and transaction coordinators are implemented"),
        )
    });
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key);
                match &error {
                    Some((code, message)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(*code)
                        .with_error_message(Some(message.clone())),
                    None => c
                        .with_node_id(BrokerId(cfg.node_id))
                        .with_host(str(&cfg.advertised_host))
                        .with_port(cfg.advertised_port),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let resp = FindCoordinatorResponse::default();
    match error {
        Some((code, message)) => resp
            .with_error_code(code)
            .with_error_message((version >= 1).then_some(message))
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1),
        None => resp
            .with_node_id(BrokerId(cfg.node_id))
            .with_host(str(&cfg.advertised_host))
            .with_port(cfg.advertised_port),
    }
}
