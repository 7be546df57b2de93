//! The admin HTTP listener (`admin_listen`, default 127.0.0.1:9644): liveness, readiness,
//! Prometheus metrics and a read-only JSON view of the broker, plus the two membership routes
//! (ADR 0019). It starts before storage is recovered, so `/health` answers at once and
//! `/ready` tells when clients are served.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /health` | 200 while the process runs |
//! | `GET /ready` | 200 once storage is recovered and the Kafka listener accepts and no shard is poisoned, else 503 |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /v1/cluster`, `/v1/broker` | cluster id, brokers (in a cluster: nodes, shard groups with leader, term, lag per follower); this broker's settings |
//! | `GET /v1/topics`, `/v1/topics/{topic}` | partitions: log start, high watermark, bytes |
//! | `GET /v1/topics/{topic}/configs` | every topic config with its source |
//! | | a delay or transaction topic adds `scheduled`: records waiting, next due time (epoch ms) |
//! | `GET /v1/amqp/{exchanges,queues,bindings,consumers}` | the AMQP door's state (queues: ready, unacked, counters) |
//! | `GET /v1/groups`, `/v1/groups/{group}` | members, assignments, committed offsets, lag |
//! | `POST /v1/cluster/nodes`, `DELETE /v1/cluster/nodes/{id}` | add or remove a cluster node (ADR 0019) |
//!
//! `/v1/` answers 503 until the broker is open.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use wharf_broker::cluster::ClusterView;
use wharf_broker::group::api::GroupListing;
use wharf_broker::{Broker, ConfigSource, MessageType, Topic};
use wharf_kafka::admin::group::decode_assignment;

use crate::cluster::ClusterState;
use crate::{lag, metrics};

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON: &str = "application/json";

/// What the admin routes read. The broker is set once it is open; `ready` flips when the
/// Kafka listener accepts, and back when shutdown starts.
pub struct AdminState {
    metrics: PrometheusHandle,
    broker: OnceLock<Arc<Broker>>,
    ready: AtomicBool,
    /// The Kafka listener's bound address.
    kafka_listener: OnceLock<String>,
    /// The AMQP door, unless `amqp_listen` is off.
    amqp: OnceLock<Arc<wharf_amqp::Registry>>,
    /// The shard groups, when this node runs in a cluster.
    cluster: OnceLock<Arc<ClusterState>>,
    started: Instant,
}

impl AdminState {
    pub fn new(metrics: PrometheusHandle) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            broker: OnceLock::new(),
            ready: AtomicBool::new(false),
            kafka_listener: OnceLock::new(),
            amqp: OnceLock::new(),
            cluster: OnceLock::new(),
            started: Instant::now(),
        })
    }

    pub fn set_broker(&self, broker: Arc<Broker>, kafka_listener: String) {
        let _ = self.broker.set(broker);
        let _ = self.kafka_listener.set(kafka_listener);
    }

    pub fn set_amqp(&self, registry: Arc<wharf_amqp::Registry>) {
        let _ = self.amqp.set(registry);
    }

    pub fn set_cluster(&self, cluster: Arc<ClusterState>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Serves admin HTTP on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    // Membership changes wait for replication: served apart (ADR 0019).
                    if request.uri().path().starts_with("/v1/cluster/nodes") {
                        return Ok::<_, Infallible>(membership_route(&state, request).await);
                    }
                    Ok::<_, Infallible>(route(&state, &request))
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "admin connection failed");
            }
        });
    }
    tracing::info!("admin listener stopped");
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    respond(status, JSON, body)
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

/// Largest `POST /v1/cluster/nodes` body.
const MAX_MEMBERSHIP_BODY: usize = 64 << 10;

/// `POST /v1/cluster/nodes` (`{"id": N, "address": "HOST:PORT"}`) adds a node,
/// `DELETE /v1/cluster/nodes/{id}` removes one (ADR 0019); either answers once every group
/// changed, with each group's voters.
async fn membership_route(
    state: &AdminState,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let Some(cluster) = state.cluster.get().cloned() else {
        return error(StatusCode::NOT_FOUND, "this node is not in a cluster");
    };
    let path = request.uri().path().trim_end_matches('/').to_string();
    let change = match (request.method().clone(), path.as_str()) {
        (Method::POST, "/v1/cluster/nodes") => {
            let body = match http_body_util::Limited::new(request.into_body(), MAX_MEMBERSHIP_BODY)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body: {e}")),
            };
            match serde_json::from_slice::<crate::membership::AddNode>(&body) {
                Ok(add) => crate::membership::Change::Add {
                    id: add.id,
                    address: add.address,
                },
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("expected {{\"id\": N, \"address\": \"HOST:PORT\"}}: {e}"),
                    )
                }
            }
        }
        (Method::DELETE, p) => match p
            .strip_prefix("/v1/cluster/nodes/")
            .and_then(|id| id.parse::<u64>().ok())
        {
            Some(id) => crate::membership::Change::Remove { id },
            None => return error(StatusCode::NOT_FOUND, "expected /v1/cluster/nodes/{id}"),
        },
        _ => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST /v1/cluster/nodes or DELETE /v1/cluster/nodes/{id}",
            )
        }
    };
    if let Err(refused) = crate::membership::check(&cluster, &change) {
        return error(StatusCode::BAD_REQUEST, &refused.to_string());
    }
    if let crate::membership::Change::Add { id, address } = &change {
        if let Err(refused) = crate::membership::check_reachable(&cluster, *id, address).await {
            return error(StatusCode::BAD_REQUEST, &refused.to_string());
        }
    }
    tracing::info!(?change, "membership change asked on the admin listener");
    match crate::membership::apply(&cluster, &change).await {
        Ok(groups) => json_response(
            StatusCode::OK,
            &json!({ "change": change, "groups": groups }),
        ),
        Err(e) => {
            tracing::warn!(?change, error = %e, "membership change failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, &e)
        }
    }
}

fn route<B>(state: &AdminState, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served");
    }
    let path = request.uri().path();
    tracing::debug!(path, "admin request");
    match path {
        "/health" => return json_response(StatusCode::OK, &json!({ "status": "ok" })),
        "/ready" => {
            // A poisoned shard acknowledges nothing until a restart: not ready.
            let poisoned = state
                .broker
                .get()
                .map(|b| b.storage().poisoned_shards())
                .unwrap_or_default();
            let ready = state.is_ready() && poisoned.is_empty();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return json_response(
                status,
                &json!({ "ready": ready, "poisoned_shards": poisoned }),
            );
        }
        "/metrics" => {
            let mut text = metrics::render(&state.metrics, state.broker.get().map(AsRef::as_ref));
            if let Some(registry) = state.amqp.get() {
                text.push_str(&metrics::render_amqp(registry));
            }
            if let (Some(cluster), Some(broker)) = (state.cluster.get(), state.broker.get()) {
                text.push_str(&metrics::render_cluster(broker, cluster));
            }
            return respond(StatusCode::OK, PROMETHEUS_TEXT, text);
        }
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return error(StatusCode::NOT_FOUND, "no such route");
    };
    let Some(broker) = state.broker.get() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage is being recovered",
        );
    };
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let found = match segments.as_slice() {
        ["amqp", what] => match state.amqp.get() {
            Some(registry) => crate::amqp_cmd::view(registry, what),
            None => return error(StatusCode::NOT_FOUND, "the AMQP listener is off"),
        },
        ["cluster"] => Some(cluster(broker, state.cluster.get())),
        ["broker"] => Some(broker_info(state, broker)),
        ["topics"] => Some(Value::Array(
            broker.topics().iter().map(|t| topic_json(t)).collect(),
        )),
        ["topics", name] => broker.topic(&percent_decode(name)).map(|t| {
            let mut value = topic_json(&t);
            value["configs"] = configs_json(&t);
            if t.config.message_type != MessageType::Normal {
                let (waiting, next_due_ms) = broker.scheduler().waiting(&t.name);
                value["scheduled"] = json!({
                    "message_type": t.config.message_type.name(),
                    "waiting": waiting,
                    "next_due_ms": next_due_ms,
                });
            }
            value
        }),
        ["topics", name, "configs"] => broker
            .topic(&percent_decode(name))
            .map(|t| configs_json(&t)),
        ["groups"] => Some(Value::Array(
            broker
                .groups()
                .list_groups(&[])
                .unwrap_or_default()
                .iter()
                .map(|g| group_summary(broker, g))
                .collect(),
        )),
        ["groups", id] => group_json(broker, &percent_decode(id)),
        _ => return error(StatusCode::NOT_FOUND, "no such route"),
    };
    match found {
        Some(value) => json_response(StatusCode::OK, &value),
        None => error(StatusCode::NOT_FOUND, "no such topic or group"),
    }
}

/// The cluster id and brokers; in a cluster also `node_id`, `nodes` and `shards`
/// ([`crate::cluster_cmd::ClusterStatus`]: leader, term, lag per follower of each shard).
fn cluster(broker: &Broker, state: Option<&Arc<ClusterState>>) -> Value {
    let config = broker.config();
    let Some(state) = state else {
        return json!({
            "cluster_id": broker.cluster_id(),
            "controller_id": config.node_id,
            "brokers": [{
                "node_id": config.node_id,
                "host": config.advertised_host,
                "port": config.advertised_port,
            }],
        });
    };
    let brokers: Vec<Value> = state
        .nodes()
        .into_iter()
        .map(|n| json!({ "node_id": n.id, "host": n.host, "port": n.port }))
        .collect();
    let mut value = serde_json::to_value(state.status()).unwrap_or_else(|_| json!({}));
    value["cluster_id"] = json!(broker.cluster_id());
    value["controller_id"] = json!(state.controller());
    value["brokers"] = Value::Array(brokers);
    value
}

fn broker_info(state: &AdminState, broker: &Broker) -> Value {
    let config = broker.config();
    let storage = broker.storage().config();
    json!({
        "node_id": config.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "kafka_listener": state.kafka_listener.get(),
        "advertised_host": config.advertised_host,
        "advertised_port": config.advertised_port,
        "data_dir": storage.data_dir.display().to_string(),
        "shards": storage.shards,
        "ready": state.is_ready(),
        "uptime_seconds": state.started.elapsed().as_secs(),
    })
}

fn topic_json(topic: &Topic) -> Value {
    let partitions: Vec<Value> = topic
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.index,
                "log_start_offset": p.log.log_start_offset(),
                "high_watermark": p.log.high_watermark(),
                "size_bytes": p.log.size_bytes(),
            })
        })
        .collect();
    let size: u64 = topic.partitions.iter().map(|p| p.log.size_bytes()).sum();
    json!({
        "name": topic.name,
        "topic_id": topic.id.to_string(),
        "internal": topic.is_internal(),
        "partitions": partitions,
        "size_bytes": size,
    })
}

fn configs_json(topic: &Topic) -> Value {
    Value::Array(
        topic
            .config
            .describe(&topic.overrides)
            .into_iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "value": e.value,
                    "source": match e.source {
                        ConfigSource::Topic => "topic",
                        ConfigSource::Default => "default",
                    },
                })
            })
            .collect(),
    )
}

fn group_summary(broker: &Broker, group: &GroupListing) -> Value {
    json!({
        "group_id": group.group_id,
        "state": group.state,
        "protocol_type": group.protocol_type,
        "lag": lag::total(&lag::committed_lag(broker, &group.group_id)),
    })
}

fn group_json(broker: &Broker, group_id: &str) -> Option<Value> {
    let description = broker.groups().describe_group(group_id).ok()??;
    let members: Vec<Value> = description
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<Value> = decode_assignment(&m.assignment)
                .into_iter()
                .map(|(topic, partition)| json!({ "topic": topic, "partition": partition }))
                .collect();
            json!({
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "assignment": assignment,
            })
        })
        .collect();
    let lags = lag::committed_lag(broker, group_id);
    let offsets: Vec<Value> = lags
        .iter()
        .map(|l| {
            json!({
                "topic": l.topic,
                "partition": l.partition,
                "committed_offset": l.committed,
                "log_end_offset": l.log_end,
                "lag": l.lag(),
                "metadata": l.metadata,
            })
        })
        .collect();
    Some(json!({
        "group_id": description.group_id,
        "state": description.state,
        "protocol_type": description.protocol_type,
        "protocol": description.protocol,
        "generation_id": description.generation_id,
        "members": members,
        "offsets": offsets,
        "lag": lag::total(&lags),
    }))
}

/// Decodes `%XX` escapes of a path segment (group ids may hold any character); a malformed
/// escape is kept as written.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(decoded) = escaped {
            out.push(decoded);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("my%20group%2Fa"), "my group/a");
        assert_eq!(percent_decode("plain-id.1"), "plain-id.1");
        assert_eq!(percent_decode("bad%zzend%"), "bad%zzend%");
    }
}
