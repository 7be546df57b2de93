//! The AMQP state of one broker (vhost `/`): exchanges, queues and bindings, routing,
//! publishing into logs, dead-lettering and settling. Durable definitions are kept in
//! `<data_dir>/amqp-topology.json` (replaced whole on each change, like the topic registry);
//! messages live in topics, per-message state in the broker's cursors (`__wharf_cursors`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use serde::{Deserialize, Serialize};
use wharf_broker::cursor::AckType;
use wharf_broker::{Acks, Broker, BrokerError, PendingProduce, TopicSpec};

use crate::error::{reply, AmqpError};
use crate::message::{now_ms, table_text, value_text, Message};
use crate::queue::{
    spawn_dispatcher, Acquired, ConsumerSlot, Overflow, QueueArgs, QueueRuntime,
    DEFAULT_DELIVERY_LIMIT,
};
use crate::routing::{matches, ExchangeKind, Headers};

/// Topics of AMQP queues are named `amqp.queue.<id>`.
pub const QUEUE_TOPIC_PREFIX: &str = "amqp.queue.";
const TOPOLOGY_FILE: &str = "amqp-topology.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeDef {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingDef {
    pub source: String,
    pub queue: String,
    pub routing_key: String,
    pub arguments: Headers,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct QueueDef {
    name: String,
    topic: String,
    auto_delete: bool,
    args: QueueArgs,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    exchanges: Vec<ExchangeDef>,
    queues: Vec<QueueDef>,
    bindings: Vec<BindingDef>,
    next_queue_id: u64,
}

#[derive(Default)]
struct Topology {
    exchanges: BTreeMap<String, ExchangeDef>,
    queues: BTreeMap<String, Arc<QueueRuntime>>,
    bindings: Vec<BindingDef>,
    next_queue_id: u64,
}

/// What a publish did.
pub struct Published {
    pub pending: Vec<PendingProduce>,
    pub queues: Vec<Arc<QueueRuntime>>,
    /// At least one queue (or Kafka topic) took the message.
    pub routed: bool,
    /// A full `reject-publish` queue refused it: the confirm is a nack.
    pub refused: bool,
}

pub struct Registry {
    broker: Arc<Broker>,
    topology: Mutex<Topology>,
    path: PathBuf,
    next_connection: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn builtin_exchanges() -> Vec<ExchangeDef> {
    [
        ("", ExchangeKind::Direct),
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ]
    .into_iter()
    .map(|(name, kind)| ExchangeDef {
        name: name.to_string(),
        kind,
        durable: true,
        auto_delete: false,
        internal: false,
    })
    .collect()
}

/// Reads the queue arguments Wharf knows; a wrong type is a 406.
pub fn queue_args(arguments: &FieldTable) -> Result<QueueArgs, AmqpError> {
    let text = |name: &str| arguments.inner().get(name).map(value_text);
    let number = |name: &str| -> Result<Option<i64>, AmqpError> {
        match text(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| {
                    AmqpError::precondition(format!("invalid arg '{name}': {v:?} is not a count"))
                }),
        }
    };
    let overflow = match text("x-overflow").as_deref() {
        None | Some("drop-head") => Overflow::DropHead,
        Some("reject-publish") => Overflow::RejectPublish,
        Some(other) => {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'x-overflow': {other:?} (drop-head or reject-publish)"
            )))
        }
    };
    let kafka_topic = match text("x-queue-type").as_deref() {
        Some("kafka") => Some(text("x-wharf-topic").filter(|t| !t.is_empty()).ok_or_else(
            || AmqpError::precondition("x-queue-type=kafka needs x-wharf-topic=<topic>"),
        )?),
        None | Some("classic" | "quorum") => None,
        Some(other) => {
            return Err(AmqpError::precondition(format!(
                "invalid arg 'x-queue-type': {other:?} (classic, quorum or kafka)"
            )))
        }
    };
    Ok(QueueArgs {
        dead_letter_exchange: text("x-dead-letter-exchange"),
        dead_letter_routing_key: text("x-dead-letter-routing-key"),
        message_ttl: number("x-message-ttl")?,
        max_length: number("x-max-length")?.map(|n| n as u64),
        max_length_bytes: number("x-max-length-bytes")?.map(|n| n as u64),
        overflow,
        delivery_limit: number("x-delivery-limit")?.map(|n| n.min(i64::from(u32::MAX)) as u32),
        kafka_topic,
    })
}

/// The properties without `expiration` (a dead-lettered message does not expire again).
fn without_expiration(p: &AMQPProperties) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    macro_rules! copy {
        ($get:ident, $with:ident) => {
            if let Some(v) = p.$get().clone() {
                out = out.$with(v);
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(headers, with_headers);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(user_id, with_user_id);
    copy!(app_id, with_app_id);
    copy!(cluster_id, with_cluster_id);
    out
}

/// Adds this death to the message's `x-death` header (RabbitMQ's layout: newest first, one
/// entry per queue and reason with a count).
fn add_death(message: &mut Message, queue: &str, reason: &str) {
    let mut headers = message.properties.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => {
            let t = table_text(t);
            t.get("queue").map(String::as_str) == Some(queue)
                && t.get("reason").map(String::as_str) == Some(reason)
        }
        _ => false,
    };
    let previous = deaths.iter().position(same).map(|i| deaths.remove(i));
    let count = match &previous {
        Some(AMQPValue::FieldTable(t)) => t
            .inner()
            .get("count")
            .and_then(|c| value_text(c).parse::<i64>().ok())
            .unwrap_or(0),
        _ => 0,
    } + 1;
    let mut entry = FieldTable::default();
    entry.insert("count".into(), AMQPValue::LongLongInt(count));
    entry.insert("reason".into(), AMQPValue::LongString(reason.into()));
    entry.insert("queue".into(), AMQPValue::LongString(queue.into()));
    entry.insert(
        "time".into(),
        AMQPValue::Timestamp((now_ms() / 1000).max(0) as u64),
    );
    entry.insert(
        "exchange".into(),
        AMQPValue::LongString(message.exchange.as_str().into()),
    );
    entry.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
            message.routing_key.as_str().into(),
        )])),
    );
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
    message.properties = without_expiration(&message.properties).with_headers(headers);
}

impl Registry {
    /// Loads durable definitions and settled offsets, drops the logs of queues that did not
    /// survive (non-durable). Blocking: file reads.
    pub fn open(broker: Arc<Broker>) -> Result<Arc<Self>, BrokerError> {
        let path = broker.storage().config().data_dir.join(TOPOLOGY_FILE);
        let fs = broker.storage().config().fs.clone();
        let persisted: Persisted = match wharf_storage::durable::read_optional(&*fs, &path) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::Metadata(format!("{TOPOLOGY_FILE}: {e}")))?,
            Ok(None) => Persisted::default(),
            Err(e) => return Err(BrokerError::Metadata(format!("{TOPOLOGY_FILE}: {e}"))),
        };
        let mut topology = Topology {
            next_queue_id: persisted.next_queue_id,
            ..Topology::default()
        };
        for e in builtin_exchanges().into_iter().chain(persisted.exchanges) {
            topology.exchanges.insert(e.name.clone(), e);
        }
        for q in persisted.queues {
            let log = if q.args.kafka_topic.is_some() {
                None
            } else {
                Some(broker.partition(&q.topic, 0)?.log)
            };
            let runtime = QueueRuntime::new(
                q.name.clone(),
                q.topic,
                true,
                q.auto_delete,
                None,
                q.args,
                log,
            );
            topology.queues.insert(q.name, Arc::new(runtime));
        }
        topology.bindings = persisted.bindings;
        let kept: std::collections::HashSet<String> =
            topology.queues.values().map(|q| q.topic.clone()).collect();
        for t in broker.topics() {
            if t.name.starts_with(QUEUE_TOPIC_PREFIX) && !kept.contains(&t.name) {
                broker.delete_topic(&t.name)?;
            }
        }
        tracing::info!(
            queues = topology.queues.len(),
            exchanges = topology.exchanges.len(),
            "amqp topology loaded"
        );
        Ok(Arc::new(Self {
            broker,
            topology: Mutex::new(topology),
            path,
            next_connection: AtomicU64::new(1),
        }))
    }

    /// Starts the dispatchers of the loaded queues (inside the runtime) after deleting the
    /// cursors of queues that are gone. Deliveries unacked when a previous process died come
    /// back redelivered: the cursor stores a lock as available (ADR 0013).
    pub fn start(self: &Arc<Self>) {
        let queues: Vec<Arc<QueueRuntime>> = lock(&self.topology)
            .queues
            .values()
            .filter(|q| !q.is_kafka())
            .cloned()
            .collect();
        let registry = self.clone();
        tokio::spawn(async move {
            let broker = registry.broker.clone();
            let live: std::collections::HashSet<_> = queues.iter().map(|q| q.key.clone()).collect();
            for key in broker.cursors().keys() {
                if key.owner.starts_with("amqp:") && !live.contains(&key) {
                    if let Err(error) = broker.cursor_delete(&key).await {
                        tracing::warn!(cursor = %key, %error, "deleting the cursor of a gone queue failed");
                    }
                }
            }
            for q in queues {
                q.refresh(&broker).await;
                spawn_dispatcher(&q, Arc::downgrade(&registry));
            }
        });
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    pub fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    fn persist(&self, topology: &Topology) -> Result<(), AmqpError> {
        let persisted = Persisted {
            exchanges: topology
                .exchanges
                .values()
                .filter(|e| e.durable && !e.name.is_empty() && !e.name.starts_with("amq."))
                .cloned()
                .collect(),
            queues: topology
                .queues
                .values()
                .filter(|q| q.durable)
                .map(|q| QueueDef {
                    name: q.name.clone(),
                    topic: q.topic.clone(),
                    auto_delete: q.auto_delete,
                    args: q.args.clone(),
                })
                .collect(),
            bindings: topology
                .bindings
                .iter()
                .filter(|b| {
                    topology.queues.get(&b.queue).is_some_and(|q| q.durable)
                        && topology.exchanges.get(&b.source).is_some_and(|e| e.durable)
                })
                .cloned()
                .collect(),
            next_queue_id: topology.next_queue_id,
        };
        let bytes = serde_json::to_vec_pretty(&persisted).map_err(AmqpError::internal)?;
        let fs = self.broker.storage().config().fs.clone();
        wharf_storage::durable::replace(&*fs, &self.path, &bytes).map_err(AmqpError::internal)
    }

    #[allow(clippy::fn_params_excessive_bools)]
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
    ) -> Result<(), AmqpError> {
        let mut topology = lock(&self.topology);
        if passive {
            return match topology.exchanges.get(name) {
                Some(_) => Ok(()),
                None => Err(AmqpError::not_found(format!(
                    "no exchange '{name}' in vhost '/'"
                ))),
            };
        }
        let kind = ExchangeKind::parse(kind).ok_or_else(|| {
            AmqpError::connection(
                reply::COMMAND_INVALID,
                format!("COMMAND_INVALID - unknown exchange type '{kind}'"),
            )
        })?;
        if let Some(existing) = topology.exchanges.get(name) {
            if existing.kind != kind || existing.durable != durable {
                return Err(AmqpError::precondition(format!(
                    "inequivalent arg 'type' or 'durable' for exchange '{name}' in vhost '/': \
                     received '{}', current is '{}'",
                    kind.as_str(),
                    existing.kind.as_str()
                )));
            }
            return Ok(());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::channel(
                reply::ACCESS_REFUSED,
                format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        topology.exchanges.insert(
            name.to_string(),
            ExchangeDef {
                name: name.to_string(),
                kind,
                durable,
                auto_delete,
                internal,
            },
        );
        if durable {
            self.persist(&topology)?;
        }
        Ok(())
    }

    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        let mut topology = lock(&self.topology);
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::channel(
                reply::ACCESS_REFUSED,
                format!("ACCESS_REFUSED - cannot delete exchange '{name}'"),
            ));
        }
        if !topology.exchanges.contains_key(name) {
            return Err(AmqpError::not_found(format!(
                "no exchange '{name}' in vhost '/'"
            )));
        }
        if if_unused && topology.bindings.iter().any(|b| b.source == name) {
            return Err(AmqpError::precondition(format!("exchange '{name}' in use")));
        }
        topology.exchanges.remove(name);
        topology.bindings.retain(|b| b.source != name);
        self.persist(&topology)
    }

    /// queue.declare: returns the name (server-named when empty), ready and consumer counts.
    #[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
    pub fn declare_queue(
        self: &Arc<Self>,
        name: &str,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: &FieldTable,
        connection: u64,
    ) -> Result<(String, u64, usize), AmqpError> {
        let mut topology = lock(&self.topology);
        if let Some(q) = topology.queues.get(name) {
            if q.exclusive_owner.is_some_and(|o| o != connection) {
                return Err(AmqpError::channel(
                    reply::RESOURCE_LOCKED,
                    format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'"),
                ));
            }
            if !passive && q.durable != durable {
                return Err(AmqpError::precondition(format!(
                    "inequivalent arg 'durable' for queue '{name}' in vhost '/': received '{durable}' but current is '{}'",
                    q.durable
                )));
            }
            if !passive && queue_args(arguments)? != q.args {
                return Err(AmqpError::precondition(format!(
                    "inequivalent arguments for queue '{name}' in vhost '/'"
                )));
            }
            return Ok((name.to_string(), q.ready(), q.consumer_count()));
        }
        if passive {
            return Err(AmqpError::not_found(format!(
                "no queue '{name}' in vhost '/'"
            )));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::channel(
                reply::ACCESS_REFUSED,
                format!("ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        let args = queue_args(arguments)?;
        topology.next_queue_id += 1;
        let id = topology.next_queue_id;
        let name = if name.is_empty() {
            format!("amq.gen-{id}-{:x}", now_ms())
        } else {
            name.to_string()
        };
        let (topic, log) = if let Some(topic) = &args.kafka_topic {
            {
                if self.broker.topic(topic).is_none() {
                    match self.broker.auto_create(topic) {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(AmqpError::precondition(e)),
                        None => {
                            return Err(AmqpError::not_found(format!(
                                "no Kafka topic '{topic}' (auto-create is off)"
                            )))
                        }
                    }
                }
                (topic.clone(), None)
            }
        } else {
            {
                let topic = format!("{QUEUE_TOPIC_PREFIX}{id}");
                let spec = TopicSpec {
                    name: topic.clone(),
                    partitions: 1,
                    replication_factor: -1,
                    configs: [("retention.ms", "-1"), ("retention.bytes", "-1")]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                };
                let t = self.broker.create_topic(&spec, false)?;
                let log = t.partitions.first().map(|p| p.log.clone());
                (topic, log)
            }
        };
        let runtime = Arc::new(QueueRuntime::new(
            name.clone(),
            topic,
            durable && !exclusive,
            auto_delete,
            exclusive.then_some(connection),
            args,
            log,
        ));
        if !runtime.is_kafka() {
            spawn_dispatcher(&runtime, Arc::downgrade(self));
        }
        topology.queues.insert(name.clone(), runtime.clone());
        if runtime.durable {
            self.persist(&topology)?;
        }
        tracing::info!(queue = %name, topic = %runtime.topic, durable = runtime.durable, "amqp queue declared");
        Ok((name, 0, 0))
    }

    pub fn queue(&self, name: &str) -> Result<Arc<QueueRuntime>, AmqpError> {
        lock(&self.topology)
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| AmqpError::not_found(format!("no queue '{name}' in vhost '/'")))
    }

    pub fn bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
        unbind: bool,
    ) -> Result<(), AmqpError> {
        let mut topology = lock(&self.topology);
        if !topology.queues.contains_key(queue) {
            return Err(AmqpError::not_found(format!(
                "no queue '{queue}' in vhost '/'"
            )));
        }
        if !topology.exchanges.contains_key(exchange) {
            return Err(AmqpError::not_found(format!(
                "no exchange '{exchange}' in vhost '/'"
            )));
        }
        if exchange.is_empty() {
            return Err(AmqpError::channel(
                reply::ACCESS_REFUSED,
                "ACCESS_REFUSED - operation not permitted on the default exchange",
            ));
        }
        let binding = BindingDef {
            source: exchange.to_string(),
            queue: queue.to_string(),
            routing_key: routing_key.to_string(),
            arguments: table_text(arguments),
        };
        let exists = topology.bindings.contains(&binding);
        if unbind {
            topology.bindings.retain(|b| *b != binding);
            let source_auto_delete = topology
                .exchanges
                .get(exchange)
                .is_some_and(|e| e.auto_delete);
            if source_auto_delete && !topology.bindings.iter().any(|b| b.source == exchange) {
                topology.exchanges.remove(exchange);
            }
        } else if !exists {
            topology.bindings.push(binding);
        }
        self.persist(&topology)
    }

    /// Deletes a queue; returns the ready messages it held. Consumers are cancelled.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u64, AmqpError> {
        let mut topology = lock(&self.topology);
        let q = topology
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| AmqpError::not_found(format!("no queue '{name}' in vhost '/'")))?;
        if if_unused && q.consumer_count() > 0 {
            return Err(AmqpError::precondition(format!("queue '{name}' in use")));
        }
        let ready = q.ready();
        if if_empty && ready + q.unacked() > 0 {
            return Err(AmqpError::precondition(format!("queue '{name}' not empty")));
        }
        topology.queues.remove(name);
        topology.bindings.retain(|b| b.queue != name);
        self.persist(&topology)?;
        drop(topology);
        for consumer in q.mark_deleted() {
            consumer.link.cancelled_by_server(&consumer.tag);
        }
        if !q.is_kafka() {
            self.broker.delete_topic(&q.topic)?;
            let (broker, key) = (self.broker.clone(), q.key.clone());
            tokio::spawn(async move {
                if let Err(error) = broker.cursor_delete(&key).await {
                    tracing::warn!(cursor = %key, %error, "deleting a queue's cursor failed");
                }
            });
        }
        tracing::info!(queue = %name, "amqp queue deleted");
        Ok(ready)
    }

    /// Deletes the exclusive queues of a closed connection.
    pub fn connection_closed(&self, connection: u64) {
        let owned: Vec<String> = lock(&self.topology)
            .queues
            .values()
            .filter(|q| q.exclusive_owner == Some(connection))
            .map(|q| q.name.clone())
            .collect();
        for name in owned {
            if let Err(error) = self.delete_queue(&name, false, false) {
                tracing::warn!(queue = %name, %error, "deleting an exclusive queue failed");
            }
        }
    }

    /// An auto-delete queue goes when its last consumer does.
    pub fn consumer_gone(&self, queue: &QueueRuntime, left: usize) {
        if left == 0 && queue.auto_delete {
            if let Err(error) = self.delete_queue(&queue.name, false, false) {
                tracing::debug!(queue = %queue.name, %error, "auto-delete");
            }
        }
    }

    /// The queues a message routes to from `exchange`.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: &Headers,
        from_client: bool,
    ) -> Result<Vec<Arc<QueueRuntime>>, AmqpError> {
        let topology = lock(&self.topology);
        let Some(ex) = topology.exchanges.get(exchange) else {
            return Err(AmqpError::not_found(format!(
                "no exchange '{exchange}' in vhost '/'"
            )));
        };
        if from_client && ex.internal {
            return Err(AmqpError::channel(
                reply::ACCESS_REFUSED,
                format!("ACCESS_REFUSED - cannot publish to internal exchange '{exchange}'"),
            ));
        }
        if exchange.is_empty() {
            return Ok(topology
                .queues
                .get(routing_key)
                .cloned()
                .into_iter()
                .collect());
        }
        let mut names: Vec<&str> = topology
            .bindings
            .iter()
            .filter(|b| {
                b.source == exchange
                    && matches(ex.kind, &b.routing_key, &b.arguments, routing_key, headers)
            })
            .map(|b| b.queue.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        Ok(names
            .into_iter()
            .filter_map(|n| topology.queues.get(n).cloned())
            .collect())
    }

    /// Stores `message` in every queue it routes to (Kafka-type queues: their topic).
    pub fn publish(
        &self,
        message: &Message,
        durable_confirm: bool,
        from_client: bool,
    ) -> Result<Published, AmqpError> {
        let queues = self.route(
            &message.exchange,
            &message.routing_key,
            &message.headers(),
            from_client,
        )?;
        let mut published = Published {
            pending: Vec::new(),
            queues: Vec::new(),
            routed: !queues.is_empty(),
            refused: false,
        };
        let acks = if durable_confirm {
            Acks::All
        } else {
            Acks::Leader
        };
        let batch = message.to_batch();
        for q in queues {
            if q.refuses_publish() {
                published.refused = true;
                continue;
            }
            let partition = match &q.args.kafka_topic {
                Some(topic) => self.kafka_partition(topic, &message.routing_key),
                None => 0,
            };
            let pending = self
                .broker
                .submit_produce(&q.topic, partition, batch.clone(), acks)?;
            q.counters.published.fetch_add(1, Ordering::Relaxed);
            published.pending.push(pending);
            published.queues.push(q);
        }
        Ok(published)
    }

    /// The partition of a Kafka topic for a routing key: Kafka's default partitioner
    /// (murmur2 of the key), so AMQP and Kafka producers of one key share a partition.
    fn kafka_partition(&self, topic: &str, key: &str) -> i32 {
        let partitions = self
            .broker
            .topic(topic)
            .map_or(1, |t| t.partitions.len().max(1)) as u32;
        ((murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions) as i32
    }

    /// Hands a message to a consumer; a consumer that went away puts it back.
    pub async fn deliver(
        &self,
        queue: &Arc<QueueRuntime>,
        slot: &Arc<ConsumerSlot>,
        acquired: Acquired,
        message: &Message,
    ) {
        if !slot.no_ack {
            slot.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        if slot.link.deliver(queue, slot, acquired, message) {
            queue.counters.delivered.fetch_add(1, Ordering::Relaxed);
            if acquired.delivery_count > 1 {
                queue.counters.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            if slot.no_ack {
                queue
                    .settle(&self.broker, &[acquired.offset], AckType::Accept)
                    .await;
            }
        } else {
            if !slot.no_ack {
                slot.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            queue
                .settle(&self.broker, &[acquired.offset], AckType::Release)
                .await;
        }
    }

    /// Acks of a client: settled for good.
    pub async fn ack(&self, queue: &QueueRuntime, offsets: &[i64]) {
        queue
            .counters
            .acked
            .fetch_add(offsets.len() as u64, Ordering::Relaxed);
        queue.settle(&self.broker, offsets, AckType::Accept).await;
    }

    /// A delivered message returned to the queue (nack/reject with requeue, channel closed);
    /// past `x-delivery-limit` it is dead-lettered instead.
    pub async fn requeue(&self, queue: &Arc<QueueRuntime>, acquired: Acquired) {
        let limit = queue.args.delivery_limit.unwrap_or(DEFAULT_DELIVERY_LIMIT);
        if u32::from(acquired.delivery_count) > limit {
            self.dead_letter(queue, acquired, None, "delivery_limit")
                .await;
        } else {
            queue
                .settle(&self.broker, &[acquired.offset], AckType::Release)
                .await;
        }
    }

    /// Moves an acquired message to the queue's dead-letter exchange (or drops it without
    /// one), then settles it. The copy is stored durably before the original is settled.
    pub async fn dead_letter(
        &self,
        queue: &Arc<QueueRuntime>,
        acquired: Acquired,
        message: Option<Message>,
        reason: &str,
    ) {
        let offset = acquired.offset;
        if let Some(dlx) = queue.args.dead_letter_exchange.clone() {
            let message = if message.is_some() {
                message
            } else {
                let log = queue.log.clone();
                tokio::task::spawn_blocking(move || {
                    let log = log?;
                    let read = log.read(offset, 1).ok()?;
                    crate::queue::find_in(&read.records, offset)
                })
                .await
                .ok()
                .flatten()
            };
            if let Some(mut message) = message {
                add_death(&mut message, &queue.name, reason);
                if let Some(key) = &queue.args.dead_letter_routing_key {
                    message.routing_key.clone_from(key);
                }
                message.exchange = dlx;
                message.timestamp = now_ms();
                match self.publish(&message, true, false) {
                    Ok(published) => {
                        for pending in published.pending {
                            if let Err(error) = pending.wait().await {
                                tracing::error!(queue = %queue.name, %error, "dead-lettering failed; the message goes back");
                                queue
                                    .settle(&self.broker, &[offset], AckType::Release)
                                    .await;
                                return;
                            }
                        }
                        for q in published.queues {
                            q.wake();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(queue = %queue.name, %error, "dead-letter exchange refused the message; dropped");
                    }
                }
            }
        }
        queue.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        queue.settle(&self.broker, &[offset], AckType::Accept).await;
    }

    /// After a publish to a `drop-head` queue: dead-letters the oldest beyond `x-max-length`
    /// or `x-max-length-bytes`.
    pub async fn enforce_max_length(&self, queue: &Arc<QueueRuntime>) {
        let _one_at_a_time = queue.dropping.lock().await;
        queue.refresh(&self.broker).await;
        while queue.over_max_length() || queue.over_max_length_bytes() {
            let got = queue.acquire(&self.broker, 1).await;
            let Some((acquired, message)) = got.into_iter().next() else {
                return;
            };
            self.dead_letter(queue, acquired, message, "maxlen").await;
        }
    }

    /// queue.purge: forgets every ready message, keeping unacked deliveries with their
    /// channels; returns how many it forgot.
    pub async fn purge(&self, queue: &QueueRuntime) -> Result<u64, AmqpError> {
        let (start, end) = queue
            .log
            .as_ref()
            .map_or((0, 0), |log| (log.log_start_offset(), log.high_watermark()));
        let purged = self
            .broker
            .cursor_purge_available(&queue.key, start, end)
            .await?;
        queue.refresh(&self.broker).await;
        Ok(purged)
    }

    /// Views for the CLI and admin JSON.
    pub fn list_exchanges(&self) -> Vec<ExchangeDef> {
        lock(&self.topology).exchanges.values().cloned().collect()
    }

    pub fn list_bindings(&self) -> Vec<BindingDef> {
        lock(&self.topology).bindings.clone()
    }

    pub fn list_queues(&self) -> Vec<Arc<QueueRuntime>> {
        lock(&self.topology).queues.values().cloned().collect()
    }
}

/// Kafka's murmur2 (the Java client's default partitioner hash).
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(first) = rest.first() {
        h ^= u32::from(*first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }
}
