//! Routes a parsed request to its API handler and frames the response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use wharf_broker::Broker;

use crate::api;
use crate::codec::{decode, frame, CodecError};
use crate::connection::Request;

/// A request being served; resolves to its response frame.
pub type Reply = Pin<Box<dyn Future<Output = Option<BytesMut>> + Send + 'static>>;

/// Starts serving one request. Called on the connection's reader in request order: a
/// Produce is decoded and handed to storage here, before the next request is read, so
/// pipelined produces keep their order; its acks are awaited in the returned future.
pub fn start(broker: &Arc<Broker>, request: Request) -> Reply {
    if request.api == ApiKey::Produce {
        let Request {
            api,
            version,
            header,
            mut body,
        } = request;
        let correlation_id = header.correlation_id;
        let in_flight = match decode(api, version, &mut body) {
            Ok(req) => api::produce::submit(broker, req),
            Err(error) => {
                tracing::warn!(%error, "request failed to decode");
                return Box::pin(async { None });
            }
        };
        return Box::pin(async move {
            let resp = api::produce::finish(in_flight).await?;
            frame(api, version, correlation_id, &resp)
                .map_err(|error| tracing::warn!(%error, "response failed to encode"))
                .ok()
        });
    }
    let broker = broker.clone();
    Box::pin(async move { handle(&broker, request).await })
}

/// Serves one request. `None`: no response is due, or the request could not be decoded
/// (logged).
async fn handle(broker: &Arc<Broker>, request: Request) -> Option<BytesMut> {
    let Request {
        api,
        version,
        header,
        mut body,
    } = request;
    let correlation_id = header.correlation_id;
    let span =
        tracing::debug_span!("request", api_key = ?api, api_version = version, correlation_id);
    let _enter = span.enter();
    // Async handlers (they wait).
    macro_rules! call {
        ($module:ident) => {{
            let req = decode(api, version, &mut body)?;
            let resp = api::$module::handle(broker, req, version).await;
            frame(api, version, correlation_id, &resp)
        }};
    }
    // Handlers that touch files (metadata writes with fsync, segment reads) run off the
    // async workers.
    macro_rules! call_blocking {
        ($module:ident) => {{
            let req = decode(api, version, &mut body)?;
            let b = broker.clone();
            match tokio::task::spawn_blocking(move || api::$module::handle(&b, req, version)).await {
                Ok(resp) => frame(api, version, correlation_id, &resp),
                Err(error) => {
                    tracing::error!(%error, "request handler failed");
                    return Ok(None);
                }
            }
        }};
    }
    // Handlers that only read memory.
    macro_rules! call_sync {
        ($module:ident) => {{
            let req = decode(api, version, &mut body)?;
            let resp = api::$module::handle(broker, req, version);
            frame(api, version, correlation_id, &resp)
        }};
    }
    let result: Result<Option<BytesMut>, CodecError> = async {
        Ok(Some(match api {
            ApiKey::ApiVersions => {
                let resp = api::api_versions::handle(version);
                // A version we do not know is answered in v0 (KIP-511).
                let v = if resp.error_code == 0 { version } else { 0 };
                frame(api, v, correlation_id, &resp)?
            }
            ApiKey::Fetch => call!(fetch)?,
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
            ApiKey::FindCoordinator => call_sync!(find_coordinator)?,
            ApiKey::JoinGroup => {
                let req = decode(api, version, &mut body)?;
                let client_id = header.client_id.as_deref().unwrap_or_default();
                let resp = api::join_group::handle(broker, req, version, client_id).await;
                frame(api, version, correlation_id, &resp)?
            }
            ApiKey::SyncGroup => call!(sync_group)?,
            ApiKey::Heartbeat => call_sync!(heartbeat)?,
            ApiKey::LeaveGroup => call_sync!(leave_group)?,
            ApiKey::OffsetCommit => call!(offset_commit)?,
            ApiKey::OffsetFetch => call_sync!(offset_fetch)?,
            ApiKey::ListGroups => call_sync!(list_groups)?,
            ApiKey::DescribeGroups => call_sync!(describe_groups)?,
            ApiKey::DeleteGroups => call!(delete_groups)?,
            ApiKey::OffsetDelete => call!(offset_delete)?,
            other => {
                tracing::warn!(api_key = ?other, "request for an API that is not served");
                return Ok(None);
            }
        }))
    }
    .await;
    match result {
        Ok(reply) => reply,
        Err(error) => {
            tracing::warn!(%error, "request failed to decode or encode");
            None
        }
    }
}
