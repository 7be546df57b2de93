//! Produce: every partition of the request is validated and submitted to storage before any
//! is awaited, so one group commit covers them. acks=0 gets no response.

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use wharf_broker::{Acks, Broker, BrokerError, PendingProduce};

use super::error_parts;

enum Slot {
    Pending(PendingProduce),
    Failed(i16, Option<kafka_protocol::protocol::StrBytes>),
}

/// A produce whose partitions are all handed to storage, awaiting their acks.
pub struct InFlight {
    acks: i16,
    slots: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Slot)>)>,
}

/// Validates and submits every partition now. Called in request order on the connection's
/// reader, so two pipelined produces to one partition keep their order.
pub fn submit(broker: &Arc<Broker>, req: ProduceRequest) -> InFlight {
    // A shard writer asleep is woken once, after the last partition: one group commit then
    // covers every partition of this request on its shard.
    let _later = wharf_broker::WakeWritersLater::begin();
    let acks = Acks::from_kafka(req.acks);
    let mut slots = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.as_str().to_string();
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let slot = match (acks, p.records) {
                (None, _) => Slot::Failed(ResponseError::InvalidRequiredAcks.code(), None),
                (_, None) => Slot::Failed(ResponseError::CorruptMessage.code(), None),
                (Some(acks), Some(records)) => {
                    match broker.submit_produce(&name, p.index, records, acks) {
                        Ok(pending) => Slot::Pending(pending),
                        Err(e) => {
                            log_failure(&name, p.index, &e);
                            let (code, msg) = error_parts(&e);
                            Slot::Failed(code, msg)
                        }
                    }
                }
            };
            parts.push((p.index, slot));
        }
        slots.push((topic.name, parts));
    }
    InFlight {
        acks: req.acks,
        slots,
    }
}

/// Waits for every partition's ack; `None` for acks=0, which gets no response. The flag is
/// true when any partition failed.
pub async fn finish(in_flight: InFlight) -> (Option<ProduceResponse>, bool) {
    let InFlight { acks, slots } = in_flight;
    let mut failed = false;
    let mut responses = Vec::with_capacity(slots.len());
    for (name, parts) in slots {
        let mut partition_responses = Vec::with_capacity(parts.len());
        for (index, slot) in parts {
            let resp = PartitionProduceResponse::default().with_index(index);
            let resp = match slot {
                Slot::Pending(pending) => match pending.wait().await {
                    Ok(o) => resp
                        .with_base_offset(o.base_offset)
                        .with_log_append_time_ms(o.log_append_time)
                        .with_log_start_offset(o.log_start_offset),
                    Err(e) => {
                        failed = true;
                        log_failure(name.0.as_str(), index, &e);
                        let (code, msg) = error_parts(&e);
                        resp.with_error_code(code)
                            .with_error_message(msg)
                            .with_base_offset(-1)
                    }
                },
                Slot::Failed(code, msg) => {
                    failed = true;
                    resp.with_error_code(code)
                        .with_error_message(msg)
                        .with_base_offset(-1)
                }
            };
            partition_responses.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partition_responses),
        );
    }
    if acks == 0 {
        return (None, failed);
    }
    (
        Some(ProduceResponse::default().with_responses(responses)),
        failed,
    )
}

fn log_failure(topic: &str, partition: i32, error: &BrokerError) {
    match error {
        // A follower's answer, routine in a cluster: the client re-routes.
        BrokerError::Storage(wharf_broker::StorageError::NotLeader { .. }) => {
            tracing::debug!(topic, partition, %error, "produce refused: not the leader");
        }
        BrokerError::Storage(_) => tracing::error!(topic, partition, %error, "produce failed"),
        _ => tracing::info!(topic, partition, %error, "produce rejected"),
    }
}
