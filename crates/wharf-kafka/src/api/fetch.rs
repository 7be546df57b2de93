//! Fetch: reads stored batches as they are, within the request's `max_bytes` and each
//! partition's `partition_max_bytes` (the broker keeps KIP-74's rules); with `max_wait_ms` it
//! parks on the partitions' high watermarks (no polling) until `min_bytes` are there or the
//! wait ends. Fetch sessions (KIP-227) are declined by answering session id 0, so every
//! fetch is a full one. Records and bytes out are counted per topic from the batch headers
//! of what is returned.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use wharf_broker::txn::AbortedTxn;
use wharf_broker::{Broker, BrokerError, FetchBudget, Partition};

use crate::errors;

struct Wanted {
    topic: TopicName,
    topic_id: uuid::Uuid,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    target: Result<Partition, BrokerError>,
}

pub async fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> FetchResponse {
    if req.session_epoch > 0 {
        // An incremental fetch on a session we never granted.
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
    }
    let read_committed = req.isolation_level == 1;
    let mut wanted = Vec::new();
    for t in &req.topics {
        let topic_name = if version >= 13 {
            broker
                .topic_by_id(t.topic_id)
                .map(|x| x.name.clone())
                .unwrap_or_default()
        } else {
            t.topic.0.as_str().to_string()
        };
        for p in &t.partitions {
            wanted.push(Wanted {
                topic: t.topic.clone(),
                topic_id: t.topic_id,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                target: broker.partition(&topic_name, p.partition),
            });
        }
    }
    let wanted = Arc::new(wanted);
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(usize::MAX);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));
    let notify = Arc::new(Notify::new());
    let results = loop {
        for w in wanted.iter() {
            if let Ok(p) = &w.target {
                p.log.register_waiter(&notify);
            }
        }
        let batch = wanted.clone();
        let b = broker.clone();
        let results = match tokio::task::spawn_blocking(move || {
            gather(&b, &batch, max_bytes, read_committed)
        })
        .await
        {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, "fetch read task failed");
                return FetchResponse::default()
                    .with_error_code(ResponseError::UnknownServerError.code());
            }
        };
        let bytes: usize = results.iter().map(|r| r.records.len()).sum();
        let any_error = results.iter().any(|r| r.error != 0);
        if min_bytes == 0
            || bytes >= min_bytes
            || any_error
            || tokio::time::Instant::now() >= deadline
        {
            break results;
        }
        if tokio::time::timeout_at(deadline, notify.notified())
            .await
            .is_err()
        {
            // Deadline: one last read so data that raced the timer is not missed.
            let batch = wanted.clone();
            let b = broker.clone();
            break tokio::task::spawn_blocking(move || {
                gather(&b, &batch, max_bytes, read_committed)
            })
            .await
            .unwrap_or(results);
        }
    };
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    for (w, r) in wanted.iter().zip(results) {
        if let (false, Ok(p)) = (r.records.is_empty(), &w.target) {
            p.counters.count_out(&r.records);
        }
        let data = PartitionData::default()
            .with_partition_index(w.partition)
            .with_error_code(r.error)
            .with_high_watermark(r.high_watermark)
            .with_last_stable_offset(r.last_stable)
            .with_log_start_offset(r.log_start)
            .with_aborted_transactions(read_committed.then(|| {
                r.aborted
                    .iter()
                    .map(|a| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(a.producer_id))
                            .with_first_offset(a.first_offset)
                    })
                    .collect()
            }))
            .with_records(Some(r.records));
        match responses.last_mut() {
            Some(last) if last.topic == w.topic && last.topic_id == w.topic_id => {
                last.partitions.push(data);
            }
            _ => responses.push(
                FetchableTopicResponse::default()
                    .with_topic(w.topic.clone())
                    .with_topic_id(w.topic_id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}

struct PartitionResult {
    error: i16,
    high_watermark: i64,
    last_stable: i64,
    log_start: i64,
    records: Bytes,
    aborted: Vec<AbortedTxn>,
}

/// Reads every wanted partition, in request order, within the response's byte budget
/// (`Broker::fetch_partition` keeps KIP-74's rules). Blocking (file reads).
fn gather(
    broker: &Broker,
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
) -> Vec<PartitionResult> {
    let mut budget = FetchBudget::new(max_bytes);
    wanted
        .iter()
        .map(|w| {
            let p = match &w.target {
                Ok(p) => p,
                Err(e) => {
                    return PartitionResult {
                        error: errors::code(e),
                        high_watermark: -1,
                        last_stable: -1,
                        log_start: -1,
                        records: Bytes::new(),
                        aborted: Vec::new(),
                    }
                }
            };
            match broker.fetch_partition(p, w.offset, w.max_bytes, &mut budget, read_committed) {
                Ok(r) => PartitionResult {
                    error: 0,
                    high_watermark: r.high_watermark,
                    last_stable: r.last_stable,
                    log_start: r.log_start,
                    records: r.records,
                    aborted: r.aborted,
                },
                Err(e) => {
                    if !matches!(errors::kafka_error(&e.error), ResponseError::OffsetOutOfRange) {
                        tracing::error!(partition = w.partition, error = %e.error, "fetch read failed");
                    }
                    PartitionResult {
                        error: errors::code(&e.error),
                        high_watermark: e.high_watermark,
                        last_stable: e.last_stable,
                        log_start: e.log_start,
                        records: Bytes::new(),
                        aborted: Vec::new(),
                    }
                }
            }
        })
        .collect()
}
