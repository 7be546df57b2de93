//! ListOffsets: earliest (-2), latest (-1; with read_committed the last stable offset), or
//! the first offset at or after a timestamp.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use wharf_broker::Broker;

use crate::errors;

pub fn handle(broker: &Arc<Broker>, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    // leader_epoch exists from v4; setting it on an older response fails the encode.
    let leader_epoch = if version >= 4 { 0 } else { -1 };
    let read_committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let found = if read_committed && p.timestamp == -1 {
                        broker
                            .partition(t.name.0.as_str(), p.partition_index)
                            .map(|part| wharf_broker::TimestampMatch {
                                offset: broker.last_stable_offset(&part),
                                timestamp: -1,
                            })
                    } else {
                        broker.list_offset(t.name.0.as_str(), p.partition_index, p.timestamp)
                    };
                    match found {
                        Ok(m) => resp
                            .with_offset(m.offset)
                            .with_timestamp(m.timestamp)
                            .with_leader_epoch(leader_epoch),
                        Err(e) => resp
                            .with_error_code(errors::code(&e))
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
