//! Fetch: reads stored batches as they are, within the request's `max_bytes` and each
//! partition's `partition_max_bytes` (the broker keeps KIP-74's rules); with `max_wait_ms` it
//! parks on the partitions' high watermarks (no polling) until `min_bytes` are there or the
//! wait ends. Fetch sessions (KIP-227, `fetch_session`) let an incremental fetch name only
//! the partitions that changed and get back only those with news. Records and bytes out are
//! counted per topic from the batch headers of what is returned.

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
use crate::fetch_session::{FetchSessions, PartitionKey, Plan, Sent, SessionPartition};

struct Wanted {
    topic: TopicName,
    topic_id: uuid::Uuid,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    target: Result<Partition, BrokerError>,
}

pub async fn handle(
    broker: &Arc<Broker>,
    sessions: &FetchSessions,
    req: FetchRequest,
    version: i16,
) -> FetchResponse {
    let read_committed = req.isolation_level == 1;
    let listed: Vec<SessionPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| SessionPartition {
                key: PartitionKey {
                    topic: t.topic.clone(),
                    topic_id: t.topic_id,
                    partition: p.partition,
                },
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                sent: None,
            })
        })
        .collect();
    let forgotten: Vec<PartitionKey> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| PartitionKey {
                topic: t.topic.clone(),
                topic_id: t.topic_id,
                partition: *p,
            })
        })
        .collect();
    let named = listed.len();
    let plan = sessions.begin(
        req.session_id,
        req.session_epoch,
        listed.clone(),
        &forgotten,
        std::time::Instant::now(),
    );
    metrics::gauge!("wharf_kafka_fetch_sessions")
        .set(u32::try_from(sessions.open_count()).map_or(f64::from(u32::MAX), f64::from));
    let (session_id, incremental, partitions) = match plan {
        Plan::Full { session_id } => (session_id, false, listed),
        Plan::Incremental {
            session_id,
            partitions,
        } => (session_id, true, partitions),
        Plan::Refused(error) => {
            tracing::debug!(
                session_id = req.session_id,
                epoch = req.session_epoch,
                ?error,
                "fetch session refused"
            );
            return FetchResponse::default()
                .with_error_code(error.code())
                .with_session_id(0);
        }
    };
    let kind = match (incremental, session_id) {
        (true, _) => "incremental",
        (false, 0) => "none",
        (false, _) => "full",
    };
    metrics::counter!("wharf_kafka_fetch_requests_total", "session" => kind).increment(1);
    metrics::counter!("wharf_kafka_fetch_request_partitions_total", "session" => kind)
        .increment(named as u64);
    let previous: Vec<Option<Sent>> = partitions.iter().map(|p| p.sent).collect();
    let wanted: Vec<Wanted> = partitions
        .into_iter()
        .map(|p| {
            let topic_name = if version >= 13 {
                broker
                    .topic_by_id(p.key.topic_id)
                    .map(|x| x.name.clone())
                    .unwrap_or_default()
            } else {
                p.key.topic.0.as_str().to_string()
            };
            Wanted {
                target: broker.partition(&topic_name, p.key.partition),
                topic: p.key.topic,
                topic_id: p.key.topic_id,
                partition: p.key.partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.max_bytes).unwrap_or(0),
            }
        })
        .collect();
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
    let mut sent = Vec::new();
    for ((w, r), before) in wanted.iter().zip(results).zip(previous) {
        let now = Sent {
            high_watermark: r.high_watermark,
            last_stable: r.last_stable,
            log_start: r.log_start,
        };
        // An incremental answer carries only partitions with records, an error or news.
        if incremental && r.records.is_empty() && r.error == 0 && before == Some(now) {
            continue;
        }
        if session_id != 0 {
            sent.push((
                PartitionKey {
                    topic: w.topic.clone(),
                    topic_id: w.topic_id,
                    partition: w.partition,
                },
                now,
            ));
        }
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
    sessions.record_sent(session_id, &sent);
    FetchResponse::default()
        .with_session_id(session_id)
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
