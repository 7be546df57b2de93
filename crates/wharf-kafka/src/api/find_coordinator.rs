//! FindCoordinator: a group's or transactional id's coordinator is the leader of the shard
//! holding its internal partition (this node when it runs alone). v4+
//! batches keys. Share-group coordinators do not exist yet: COORDINATOR_NOT_AVAILABLE.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use wharf_broker::cluster::NodeAddress;
use wharf_broker::Broker;

use crate::codec::str;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub fn handle(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let supported = matches!(req.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION);
    let transactional = req.key_type == KEY_TYPE_TRANSACTION;
    // The coordinator is the leader of the shard holding the key's internal partition.
    let locate = |key: &str| -> Result<NodeAddress, (i16, StrBytes)> {
        if !supported {
            return Err((
                ResponseError::CoordinatorNotAvailable.code(),
                str("only group and transaction coordinators are implemented"),
            ));
        }
        broker.coordinator_node(key, transactional).ok_or_else(|| {
            (
                ResponseError::CoordinatorNotAvailable.code(),
                str("the coordinator's partition has no leader right now"),
            )
        })
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = locate(key.as_str());
                let c = Coordinator::default().with_key(key);
                match found {
                    Err((code, message)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(Some(message)),
                    Ok(node) => c
                        .with_node_id(BrokerId(node.id))
                        .with_host(str(&node.host))
                        .with_port(node.port),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let resp = FindCoordinatorResponse::default();
    match locate(req.key.as_str()) {
        Err((code, message)) => resp
            .with_error_code(code)
            .with_error_message((version >= 1).then_some(message))
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1),
        Ok(node) => resp
            .with_node_id(BrokerId(node.id))
            .with_host(str(&node.host))
            .with_port(node.port),
    }
}
