//! Routes a parsed request to its API handler and frames the response. Every request that
//! reaches a handler is counted once, when it is answered (or dropped), with its latency and
//! whether it failed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ProduceRequest};
use tracing::Instrument;
use wharf_broker::{stage, Broker};

use crate::api;
use crate::codec::{decode, frame, CodecError};
use crate::connection::Request;
use crate::fetch_session::FetchSessions;
use crate::rejection::ProtocolError;
use crate::throttle;
use crate::versions::SUPPORTED_APIS;
use wharf_broker::quota;

/// What the connection does once a request is served.
pub enum Answer {
    /// Send this response frame.
    Frame(BytesMut),
    /// Send this response frame, given in pieces (a Fetch answer: stored record bytes are
    /// written from where storage read them, not copied into the frame).
    Pieces(Vec<Bytes>),
    /// No response is due (acks=0).
    Nothing,
    /// The request could not be decoded: close the connection, as Kafka does, rather than
    /// leave the client waiting. Counted and summarised, not logged one by one.
    Rejected(ProtocolError),
    /// The request could not be served or its answer encoded (a fault of the broker):
    /// close the connection.
    Close,
}

/// The answer to a request that failed to decode or whose response failed to encode.
fn codec_failure(error: CodecError) -> Answer {
    match error {
        CodecError::Decode { .. } => Answer::Rejected(ProtocolError::Body(error)),
        CodecError::Encode { .. } => {
            tracing::warn!(%error, "closing connection: response failed to encode");
            Answer::Close
        }
    }
}

/// A request being served; resolves to what to send back.
pub type Reply = Pin<Box<dyn Future<Output = Answer> + Send + 'static>>;

/// One API's request metrics, registered once with its `api` label.
struct ApiMetrics {
    requests: metrics::Counter,
    errors: metrics::Counter,
    duration: metrics::Histogram,
}

impl ApiMetrics {
    fn observe(&self, started: Instant, failed: bool) {
        self.requests.increment(1);
        if failed {
            self.errors.increment(1);
        }
        self.duration.record(started.elapsed().as_secs_f64());
    }
}

fn api_metrics(api: ApiKey) -> Option<&'static ApiMetrics> {
    static ALL: LazyLock<HashMap<i16, ApiMetrics>> = LazyLock::new(|| {
        SUPPORTED_APIS
            .iter()
            .map(|&(api, _, _)| {
                let label = format!("{api:?}");
                let metrics = ApiMetrics {
                    requests: metrics::counter!("wharf_kafka_requests_total", "api" => label.clone()),
                    errors: metrics::counter!("wharf_kafka_request_errors_total", "api" => label.clone()),
                    duration: metrics::histogram!("wharf_kafka_request_duration_seconds", "api" => label),
                };
                (api as i16, metrics)
            })
            .collect()
    });
    ALL.get(&(api as i16))
}

/// From a Produce frame read whole to its partitions handed to storage (`stage`).
static RECEIVE: LazyLock<metrics::Histogram> =
    LazyLock::new(|| stage::produce_histogram("receive"));

/// Whether a Fetch answer carries an error code, at the top or for any partition.
fn fetch_failed(resp: &FetchResponse) -> bool {
    resp.error_code != 0
        || resp
            .responses
            .iter()
            .any(|t| t.partitions.iter().any(|p| p.error_code != 0))
}

/// Starts serving one request. Called on the connection's reader in request order: a
/// Produce is decoded and handed to storage here, before the next request is read, so
/// pipelined produces keep their order; its acks are awaited in the returned future.
pub fn start(broker: &Arc<Broker>, sessions: &Arc<FetchSessions>, request: Request) -> Reply {
    let started = Instant::now();
    let metrics = api_metrics(request.api);
    let observe = move |failed: bool| {
        if let Some(m) = metrics {
            m.observe(started, failed);
        }
    };
    if request.api == ApiKey::Produce {
        let Request {
            api,
            version,
            header,
            mut body,
            mute,
            received,
            ..
        } = request;
        let correlation_id = header.correlation_id;
        let client_id = header.client_id.as_deref().unwrap_or_default().to_string();
        let submitted = Instant::now();
        let (in_flight, bytes) = match decode::<ProduceRequest>(api, version, &mut body) {
            Ok(req) => {
                let bytes: usize = req
                    .topic_data
                    .iter()
                    .flat_map(|t| t.partition_data.iter())
                    .map(|p| p.records.as_ref().map_or(0, Bytes::len))
                    .sum();
                let in_flight = api::produce::submit(broker, req);
                stage::record_since(&RECEIVE, received);
                (in_flight, bytes as u64)
            }
            Err(error) => {
                observe(true);
                return Box::pin(async { codec_failure(error) });
            }
        };
        let submit_work = submitted.elapsed();
        let broker = broker.clone();
        return Box::pin(async move {
            let ((resp, failed), finish_work) =
                wharf_broker::work::measure(api::produce::finish(in_flight)).await;
            // acks=0 has no answer to carry a throttle time, so it is not throttled (Kafka
            // closes such a connection instead; Wharf counts the bytes only).
            let throttle_ms = throttle::apply(
                &broker,
                &mute,
                &client_id,
                quota::PRODUCER_BYTE_RATE,
                bytes,
                version >= 6,
            )
            .await;
            let Some(mut resp) = resp else {
                observe(failed);
                return Answer::Nothing;
            };
            resp.throttle_time_ms = throttle_ms;
            throttle::request_time(
                &broker,
                &mute,
                &client_id,
                submit_work + finish_work,
                version,
                &mut resp,
            )
            .await;
            match frame(api, version, correlation_id, &resp) {
                Ok(framed) => {
                    observe(failed);
                    Answer::Frame(framed)
                }
                Err(error) => {
                    observe(true);
                    codec_failure(error)
                }
            }
        });
    }
    let broker = broker.clone();
    let sessions = sessions.clone();
    Box::pin(async move {
        let (reply, failed) = handle(&broker, &sessions, request).await;
        observe(failed);
        reply
    })
}

/// Serves one request. The flag is true when the request failed: it could not be decoded,
/// served or encoded, or (ApiVersions, Fetch) its answer carries an error code.
async fn handle(
    broker: &Arc<Broker>,
    sessions: &FetchSessions,
    request: Request,
) -> (Answer, bool) {
    let Request {
        api,
        version,
        header,
        mut body,
        mute,
        peer,
        ..
    } = request;
    let correlation_id = header.correlation_id;
    let span =
        tracing::debug_span!("request", api_key = ?api, api_version = version, correlation_id);
    let mut failed = false;
    let client_id = header.client_id.as_deref().unwrap_or_default();
    // Every answer first pays the client's request-time quota (`request_percentage`).
    macro_rules! answer {
        ($resp:expr, $work:expr) => {{
            let mut resp = $resp;
            throttle::request_time(broker, &mute, client_id, $work, version, &mut resp).await;
            frame(api, version, correlation_id, &resp)
        }};
    }
    // Async handlers (they wait): their cost is the time they are polled.
    macro_rules! call {
        ($module:ident) => {{
            let req = decode(api, version, &mut body)?;
            let (resp, work) =
                wharf_broker::work::measure(api::$module::handle(broker, req, version)).await;
            answer!(resp, work)
        }};
    }
    // Handlers that touch files (metadata writes with fsync, segment reads) run off the
    // async workers.
    macro_rules! call_blocking {
        ($module:ident) => {{
            let req = decode(api, version, &mut body)?;
            let b = broker.clone();
            let work = move || {
                let started = Instant::now();
                let resp = api::$module::handle(&b, req, version);
                (resp, started.elapsed())
            };
            match tokio::task::spawn_blocking(work).await {
                Ok((resp, work)) => answer!(resp, work),
                Err(error) => {
                    tracing::error!(%error, "request handler failed");
                    failed = true;
                    return Ok(Answer::Close);
                }
            }
        }};
    }
    // Handlers that only read memory.
    macro_rules! call_sync {
        ($module:ident) => {{
            let req = decode(api, version, &mut body)?;
            let started = Instant::now();
            let resp = api::$module::handle(broker, req, version);
            answer!(resp, started.elapsed())
        }};
    }
    let result: Result<Answer, CodecError> = async {
        Ok(Answer::Frame(match api {
            ApiKey::ApiVersions => {
                let resp = api::api_versions::handle(version);
                // A version we do not know is answered in v0 (KIP-511).
                let v = if resp.error_code == 0 { version } else { 0 };
                failed = resp.error_code != 0;
                frame(api, v, correlation_id, &resp)?
            }
            ApiKey::Fetch => {
                let req = decode(api, version, &mut body)?;
                let (mut resp, work) =
                    wharf_broker::work::measure(api::fetch::handle(broker, sessions, req, version))
                        .await;
                let bytes: usize = resp
                    .responses
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| p.records.as_ref().map_or(0, Bytes::len))
                    .sum();
                resp.throttle_time_ms = throttle::apply(
                    broker,
                    &mute,
                    client_id,
                    quota::CONSUMER_BYTE_RATE,
                    bytes as u64,
                    version >= 8,
                )
                .await;
                failed = fetch_failed(&resp);
                throttle::request_time(broker, &mute, client_id, work, version, &mut resp).await;
                return Ok(Answer::Pieces(crate::codec::fetch_frame(
                    version,
                    correlation_id,
                    resp,
                )?));
            }
            ApiKey::ListOffsets => call_blocking!(list_offsets)?,
            ApiKey::Metadata => call_blocking!(metadata)?,
            ApiKey::CreateTopics => call_blocking!(create_topics)?,
            ApiKey::DeleteTopics => call_blocking!(delete_topics)?,
            ApiKey::DeleteRecords => call_blocking!(delete_records)?,
            ApiKey::DescribeConfigs => call_sync!(describe_configs)?,
            ApiKey::AlterConfigs => call_blocking!(alter_configs)?,
            ApiKey::IncrementalAlterConfigs => call_blocking!(incremental_alter_configs)?,
            ApiKey::CreatePartitions => call_blocking!(create_partitions)?,
            ApiKey::DescribeCluster => call_sync!(describe_cluster)?,
            ApiKey::DescribeClientQuotas => call_sync!(describe_client_quotas)?,
            ApiKey::AlterClientQuotas => call_blocking!(alter_client_quotas)?,
            ApiKey::FindCoordinator => call_sync!(find_coordinator)?,
            ApiKey::JoinGroup => {
                let req = decode(api, version, &mut body)?;
                let (resp, work) = wharf_broker::work::measure(api::join_group::handle(
                    broker, req, version, client_id, peer,
                ))
                .await;
                answer!(resp, work)?
            }
            ApiKey::ConsumerGroupHeartbeat => {
                let req = decode(api, version, &mut body)?;
                let started = Instant::now();
                let resp =
                    api::consumer_group_heartbeat::handle(broker, req, version, client_id, peer);
                answer!(resp, started.elapsed())?
            }
            ApiKey::ConsumerGroupDescribe => call_sync!(consumer_group_describe)?,
            ApiKey::SyncGroup => call!(sync_group)?,
            ApiKey::Heartbeat => call_sync!(heartbeat)?,
            ApiKey::LeaveGroup => call_sync!(leave_group)?,
            ApiKey::OffsetCommit => call!(offset_commit)?,
            ApiKey::OffsetFetch => call_sync!(offset_fetch)?,
            ApiKey::ListGroups => call_sync!(list_groups)?,
            ApiKey::DescribeGroups => call_sync!(describe_groups)?,
            ApiKey::DeleteGroups => call!(delete_groups)?,
            ApiKey::OffsetDelete => call!(offset_delete)?,
            ApiKey::InitProducerId => call!(init_producer_id)?,
            ApiKey::AddPartitionsToTxn => call!(add_partitions_to_txn)?,
            ApiKey::AddOffsetsToTxn => call!(add_offsets_to_txn)?,
            ApiKey::EndTxn => call!(end_txn)?,
            ApiKey::TxnOffsetCommit => call!(txn_offset_commit)?,
            ApiKey::DescribeTransactions => call_sync!(describe_transactions)?,
            ApiKey::ListTransactions => call_sync!(list_transactions)?,
            ApiKey::ShareGroupHeartbeat => call_sync!(share_group_heartbeat)?,
            ApiKey::ShareFetch => call!(share_fetch)?,
            ApiKey::ShareAcknowledge => call!(share_acknowledge)?,
            ApiKey::ShareGroupDescribe => call_sync!(share_group_describe)?,
            ApiKey::DescribeShareGroupOffsets => call_sync!(describe_share_group_offsets)?,
            ApiKey::AlterShareGroupOffsets => call!(alter_share_group_offsets)?,
            ApiKey::DeleteShareGroupOffsets => call!(delete_share_group_offsets)?,
            other => {
                return Ok(Answer::Rejected(ProtocolError::NotImplemented {
                    api_key: other as i16,
                    api: other,
                }));
            }
        }))
    }
    .instrument(span.clone())
    .await;
    match result {
        Ok(reply) => (reply, failed),
        Err(error) => (span.in_scope(|| codec_failure(error)), true),
    }
}
