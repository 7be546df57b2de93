//! DeleteRecords: moves partitions' log start offsets forward.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use wharf_broker::Broker;

use crate::errors;

pub fn handle(
    broker: &Arc<Broker>,
    req: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match broker.delete_records(t.name.0.as_str(), p.partition_index, p.offset) {
                        Ok(low) => r.with_low_watermark(low),
                        Err(e) => r.with_error_code(errors::code(&e)).with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
