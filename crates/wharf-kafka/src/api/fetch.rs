//! Fetch: the broker's `Broker::fetch` reads stored batches as they are, within the request's
//! `max_bytes` and each partition's `partition_max_bytes` (KIP-74), and with `max_wait_ms`
//! parks on the partitions' high watermarks until `min_bytes` are there or the wait ends;
//! this file translates the request and encodes the answer. Fetch sessions (KIP-227, `fetch_session`) let an incremental fetch name only
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
use wharf_broker::txn::AbortedTxn;
use wharf_broker::{Broker, FetchError, FetchSpec, FetchTarget, PartitionRead};

use crate::errors;
use crate::fetch_session::{FetchSessions, PartitionKey, Plan, Sent, SessionPartition};

/// How a partition is named in the answer (as the request named it).
struct Wanted {
    topic: TopicName,
    topic_id: uuid::Uuid,
    partition: i32,
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
        &listed,
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
        .iter()
        .map(|p| Wanted {
            topic: p.key.topic.clone(),
            topic_id: p.key.topic_id,
            partition: p.key.partition,
        })
        .collect();
    let targets: Vec<FetchTarget> = partitions
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
            FetchTarget::new(
                broker,
                topic_name,
                p.key.partition,
                p.fetch_offset,
                usize::try_from(p.max_bytes).unwrap_or(0),
            )
        })
        .collect();
    let targets = Arc::new(targets);
    let spec = FetchSpec {
        max_bytes: usize::try_from(req.max_bytes).unwrap_or(usize::MAX),
        min_bytes: usize::try_from(req.min_bytes).unwrap_or(0),
        max_wait: Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)),
        read_committed,
    };
    let results: Vec<PartitionResult> = broker
        .fetch(targets.clone(), spec)
        .await
        .into_iter()
        .map(PartitionResult::from)
        .collect();
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut sent = Vec::new();
    for (((w, r), before), target) in wanted.iter().zip(results).zip(previous).zip(targets.iter()) {
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
        if let (false, Some(p)) = (r.records.is_empty(), &target.partition) {
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

impl From<Result<PartitionRead, FetchError>> for PartitionResult {
    fn from(read: Result<PartitionRead, FetchError>) -> Self {
        match read {
            Ok(r) => Self {
                error: 0,
                high_watermark: r.high_watermark,
                last_stable: r.last_stable,
                log_start: r.log_start,
                records: r.records,
                aborted: r.aborted,
            },
            Err(e) => {
                if !matches!(
                    errors::kafka_error(&e.error),
                    ResponseError::OffsetOutOfRange | ResponseError::UnknownTopicOrPartition
                ) {
                    tracing::error!(error = %e.error, "fetch read failed");
                }
                Self {
                    error: errors::code(&e.error),
                    high_watermark: e.high_watermark,
                    last_stable: e.last_stable,
                    log_start: e.log_start,
                    records: Bytes::new(),
                    aborted: Vec::new(),
                }
            }
        }
    }
}
