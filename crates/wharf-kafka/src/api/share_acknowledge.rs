//! ShareAcknowledge (KIP-932): acknowledgements without a fetch; epoch -1 closes the share
//! session. Also the translation of acknowledgement batches shared with ShareFetch.

use std::sync::Arc;

use kafka_protocol::messages::share_acknowledge_response::{
    PartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareAcknowledgeResponse};
use wharf_broker::cursor::AckType;
use wharf_broker::share::SharePartitionRequest;
use wharf_broker::{Broker, BrokerError};

use super::error_parts;

/// The topic of `id`, if it exists.
pub fn topic_name(broker: &Broker, id: uuid::Uuid) -> Option<String> {
    broker.topic_by_id(id).map(|t| t.name.clone())
}

/// Kafka's acknowledge type: 0 gap (a missing record: done), 1 accept, 2 release, 3 reject.
fn ack_type(code: i8) -> Option<AckType> {
    match code {
        0 | 1 => Some(AckType::Accept),
        2 => Some(AckType::Release),
        3 => Some(AckType::Reject),
        _ => None,
    }
}

/// Acknowledgement batches as offset ranges with one type each: one type covers the whole
/// batch, or there is one type per offset. `None` when a batch is malformed.
pub fn ack_ranges<'a>(
    batches: impl Iterator<Item = (i64, i64, &'a [i8])>,
) -> Option<Vec<(i64, i64, AckType)>> {
    let mut out: Vec<(i64, i64, AckType)> = Vec::new();
    let mut previous_last = -1i64;
    for (first, last, types) in batches {
        if first > last || first <= previous_last || first < 0 {
            return None;
        }
        previous_last = last;
        match types {
            [one] => out.push((first, last, ack_type(*one)?)),
            many if i64::try_from(many.len()).ok() == Some(last - first + 1) => {
                for (offset, code) in (first..=last).zip(many) {
                    let kind = ack_type(*code)?;
                    match out.last_mut() {
                        Some(r) if r.1 + 1 == offset && r.2 == kind => r.1 = offset,
                        _ => out.push((offset, offset, kind)),
                    }
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

pub async fn handle(
    broker: &Arc<Broker>,
    req: ShareAcknowledgeRequest,
    _version: i16,
) -> ShareAcknowledgeResponse {
    let group = req.group_id.map(|g| g.0.to_string()).unwrap_or_default();
    let member = req.member_id.map(|m| m.to_string()).unwrap_or_default();
    let mut partitions = Vec::new();
    let mut ids = Vec::new();
    for topic in &req.topics {
        let Some(name) = topic_name(broker, topic.topic_id) else {
            continue;
        };
        ids.push((name.clone(), topic.topic_id));
        for p in &topic.partitions {
            let acks = p.acknowledgement_batches.iter().map(|b| {
                (
                    b.first_offset,
                    b.last_offset,
                    b.acknowledge_types.as_slice(),
                )
            });
            let Some(acks) = ack_ranges(acks) else {
                return error(&BrokerError::InvalidRequest(
                    "bad acknowledgement batch".into(),
                ));
            };
            partitions.push(SharePartitionRequest {
                topic: name.clone(),
                partition: p.partition_index,
                acks,
            });
        }
    }
    let results = match broker
        .share_acknowledge(&group, &member, req.share_session_epoch, &partitions)
        .await
    {
        Ok(results) => results,
        Err(e) => return error(&e),
    };
    let mut topics: Vec<ShareAcknowledgeTopicResponse> = Vec::new();
    for (topic, partition, err) in results {
        let Some(id) = ids.iter().find(|(n, _)| *n == topic).map(|(_, id)| *id) else {
            continue;
        };
        let (code, message) = err.as_ref().map_or((0, None), error_parts);
        let data = PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(code)
            .with_error_message(message);
        match topics.last_mut() {
            Some(t) if t.topic_id == id => t.partitions.push(data),
            _ => topics.push(
                ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    ShareAcknowledgeResponse::default().with_responses(topics)
}

fn error(e: &BrokerError) -> ShareAcknowledgeResponse {
    tracing::debug!(error = %e, "share acknowledge refused");
    let (code, message) = error_parts(e);
    ShareAcknowledgeResponse::default()
        .with_error_code(code)
        .with_error_message(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_become_ranges_and_malformed_ones_are_refused() {
        let one: &[i8] = &[2];
        let each: &[i8] = &[1, 1, 3, 0];
        assert_eq!(
            ack_ranges([(0, 4, one), (5, 8, each)].into_iter()),
            Some(vec![
                (0, 4, AckType::Release),
                (5, 6, AckType::Accept),
                (7, 7, AckType::Reject),
                (8, 8, AckType::Accept)
            ])
        );
        let two: &[i8] = &[1, 1];
        let bad: &[i8] = &[9];
        assert_eq!(ack_ranges([(0, 4, two)].into_iter()), None);
        assert_eq!(ack_ranges([(0, 0, bad)].into_iter()), None);
        assert_eq!(ack_ranges([(3, 4, one), (4, 5, one)].into_iter()), None);
    }
}
