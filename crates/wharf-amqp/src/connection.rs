//! One AMQP connection: the handshake (protocol header, start/start-ok with PLAIN or
//! AMQPLAIN, tune/tune-ok, open), then methods per channel until close. A reader task turns
//! bytes into frames (bounded by the negotiated `frame_max`), a writer task sends what
//! channels and dispatchers queue, and a completion task settles publishes in order
//! (confirms: basic.ack once the message is durably stored, nack when a queue refused it).
//!
//! A frame error, a wrong header or garbage closes only this connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{
    access, basic, channel as chan, confirm, connection as conn, exchange, queue as q, tx,
    AMQPClass,
};
use amq_protocol::types::{AMQPValue, FieldTable};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use wharf_broker::PendingProduce;

use crate::channel::ChannelLink;
use crate::codec::{self, read_frame, read_protocol_header, PROTOCOL_HEADER};
use crate::error::{reply, AmqpError, CodecError};
use crate::message::{now_ms, Message};
use crate::queue::{ConsumerSlot, Overflow, QueueRuntime};
use crate::{AmqpConfig, Registry};

/// Largest message body accepted (bounded again by the queue topic's max.message.bytes).
const MAX_BODY: u64 = 128 * 1024 * 1024;

enum Completion {
    Publish {
        channel: u16,
        tag: Option<u64>,
        pending: Vec<PendingProduce>,
        queues: Vec<Arc<QueueRuntime>>,
        refused: bool,
    },
    /// Client acks of one queue, settled in the cursor in order.
    Ack(Arc<QueueRuntime>, Vec<i64>),
    Barrier(oneshot::Sender<()>),
}

struct Publishing {
    exchange: String,
    routing_key: String,
    mandatory: bool,
    properties: Option<AMQPProperties>,
    body_size: u64,
    body: Vec<u8>,
}

/// What a transactional channel (tx.select) holds until tx.commit.
#[derive(Default)]
struct TxBuffer {
    publishes: Vec<(Message, bool)>,
    /// Taken deliveries with how they are settled: `None` ack, `Some(requeue)` nack/reject.
    settles: Vec<(Vec<crate::channel::Unacked>, Option<bool>)>,
}

struct Channel {
    link: Arc<ChannelLink>,
    confirm: bool,
    tx: Option<TxBuffer>,
    next_publish: u64,
    prefetch: u16,
    consumers: HashMap<String, Arc<QueueRuntime>>,
    publishing: Option<Publishing>,
    /// The server sent channel.close and waits for close-ok.
    closing: bool,
}

struct Connection {
    id: u64,
    registry: Arc<Registry>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    completions: mpsc::UnboundedSender<Completion>,
    channels: HashMap<u16, Channel>,
    frame_max: usize,
    channel_max: u16,
    next_consumer: u64,
}

/// Serves one client connection until it closes.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<Registry>,
    config: Arc<AmqpConfig>,
    shutdown: watch::Receiver<bool>,
) {
    let (read_half, write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(write_loop(write_half, out_rx));
    match tokio::time::timeout(Duration::from_secs(10), read_protocol_header(&mut reader)).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(header))) => {
            tracing::warn!(%peer, ?header, "amqp: wrong protocol header; answered with 0-9-1 and closed");
            let _ = out_tx.send(PROTOCOL_HEADER.to_vec());
            let _ = out_tx.send(Vec::new());
            let _ = writer.await;
            return;
        }
        Ok(Err(_)) | Err(_) => {
            let _ = out_tx.send(Vec::new());
            let _ = writer.await;
            return;
        }
    }
    let id = registry.connection_id();
    let mut c = Connection {
        id,
        registry: registry.clone(),
        out: out_tx.clone(),
        completions: spawn_completions(out_tx.clone(), registry.clone()),
        channels: HashMap::new(),
        frame_max: config.frame_max as usize,
        channel_max: config.channel_max,
        next_consumer: 0,
    };
    let frame_max = Arc::new(AtomicUsize::new(config.frame_max as usize));
    let (frames_tx, mut frames) = mpsc::channel::<Result<AMQPFrame, CodecError>>(64);
    let reading = tokio::spawn(read_loop(reader, frame_max.clone(), frames_tx));
    let outcome = match c.handshake(&mut frames, &config, peer, &frame_max).await {
        Ok(heartbeat) => c.serve(&mut frames, heartbeat, shutdown).await,
        Err(e) => Err(e),
    };
    if let Err(error) = outcome {
        tracing::warn!(%peer, connection = id, code = error.code, text = %error.text, "amqp connection closed with an error");
        c.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
                reply_code: error.code,
                reply_text: error.text.chars().take(250).collect::<String>().into(),
                class_id: 0,
                method_id: 0,
            })),
        );
        // Wait briefly for close-ok, ignoring anything else.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(frame)) = frames.recv().await {
                if matches!(
                    frame,
                    AMQPFrame::Method(0, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)))
                ) {
                    break;
                }
            }
        })
        .await;
    }
    c.teardown().await;
    reading.abort();
    let _ = out_tx.send(Vec::new());
    drop(out_tx);
    let _ = writer.await;
    tracing::debug!(%peer, connection = id, "amqp connection ended");
}

async fn write_loop(mut write: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if bytes.is_empty() {
            break;
        }
        if write.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
}

async fn read_loop(
    mut reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    frame_max: Arc<AtomicUsize>,
    tx: mpsc::Sender<Result<AMQPFrame, CodecError>>,
) {
    loop {
        let frame = read_frame(&mut reader, frame_max.load(Ordering::Acquire)).await;
        let stop = frame.is_err();
        if tx.send(frame).await.is_err() || stop {
            return;
        }
    }
}

/// Once a publish to a `drop-head` queue with a length limit is stored: dead-letters the
/// oldest messages beyond the limit (the append must be visible to count it).
fn drop_head(registry: &Arc<Registry>, queue: &Arc<QueueRuntime>) {
    if (queue.args.max_length.is_some() || queue.args.max_length_bytes.is_some())
        && queue.args.overflow == Overflow::DropHead
    {
        let (registry, queue) = (registry.clone(), queue.clone());
        tokio::spawn(async move { registry.enforce_max_length(&queue).await });
    }
}

fn spawn_completions(
    out: mpsc::UnboundedSender<Vec<u8>>,
    registry: Arc<Registry>,
) -> mpsc::UnboundedSender<Completion> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
    tokio::spawn(async move {
        while let Some(done) = rx.recv().await {
            match done {
                Completion::Publish {
                    channel,
                    tag,
                    pending,
                    queues,
                    refused,
                } => {
                    let mut stored = true;
                    for p in pending {
                        if let Err(error) = p.wait().await {
                            tracing::error!(%error, "amqp publish not stored");
                            stored = false;
                        }
                    }
                    for q in &queues {
                        q.wake();
                        drop_head(&registry, q);
                    }
                    if let Some(delivery_tag) = tag {
                        let method = if stored && !refused {
                            basic::AMQPMethod::Ack(basic::Ack {
                                delivery_tag,
                                multiple: false,
                            })
                        } else {
                            basic::AMQPMethod::Nack(basic::Nack {
                                delivery_tag,
                                multiple: false,
                                requeue: false,
                            })
                        };
                        let mut frames = Vec::new();
                        codec::method(channel, AMQPClass::Basic(method), &mut frames);
                        let _ = out.send(frames);
                    }
                }
                Completion::Ack(queue, offsets) => registry.ack(&queue, &offsets).await,
                Completion::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
    tx
}

fn short(s: &str) -> amq_protocol::types::ShortString {
    s.chars().take(255).collect::<String>().into()
}

fn server_properties() -> FieldTable {
    let mut capabilities = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "authentication_failure_close",
    ] {
        capabilities.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("product".into(), AMQPValue::LongString("Wharf".into()));
    props.insert(
        "version".into(),
        AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()),
    );
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    props
}

/// User and password of a PLAIN or AMQPLAIN response.
fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            Some((
                String::from_utf8_lossy(user).into_owned(),
                String::from_utf8_lossy(pass).into_owned(),
            ))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut table = (response.len() as u32).to_be_bytes().to_vec();
            table.extend_from_slice(response);
            let (_, t) = amq_protocol::types::parsing::parse_field_table(table.as_slice()).ok()?;
            let text = crate::message::table_text(&t);
            Some((text.get("LOGIN")?.clone(), text.get("PASSWORD")?.clone()))
        }
        _ => None,
    }
}

impl Connection {
    fn send_method(&self, channel: u16, class: AMQPClass) {
        let mut frames = Vec::new();
        codec::method(channel, class, &mut frames);
        let _ = self.out.send(frames);
    }

    async fn next_frame(
        frames: &mut mpsc::Receiver<Result<AMQPFrame, CodecError>>,
    ) -> Result<AMQPFrame, AmqpError> {
        match tokio::time::timeout(Duration::from_secs(30), frames.recv()).await {
            Ok(Some(Ok(frame))) => Ok(frame),
            Ok(Some(Err(e))) => Err(codec_error(&e)),
            Ok(None) => Err(AmqpError::connection(reply::CONNECTION_FORCED, "closed")),
            Err(_) => Err(AmqpError::connection(
                reply::CONNECTION_FORCED,
                "handshake timed out",
            )),
        }
    }

    /// Start, tune, open; returns the negotiated heartbeat in seconds.
    async fn handshake(
        &mut self,
        frames: &mut mpsc::Receiver<Result<AMQPFrame, CodecError>>,
        config: &AmqpConfig,
        peer: SocketAddr,
        frame_max: &AtomicUsize,
    ) -> Result<u16, AmqpError> {
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Start(conn::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: server_properties(),
                mechanisms: "PLAIN AMQPLAIN".into(),
                locales: "en_US".into(),
            })),
        );
        let AMQPFrame::Method(0, AMQPClass::Connection(conn::AMQPMethod::StartOk(start_ok))) =
            Self::next_frame(frames).await?
        else {
            return Err(AmqpError::connection(
                reply::COMMAND_INVALID,
                "COMMAND_INVALID - expected connection.start-ok",
            ));
        };
        let mechanism = start_ok.mechanism.as_str().to_string();
        let Some((user, pass)) = credentials(&mechanism, start_ok.response.as_bytes()) else {
            return Err(AmqpError::connection(
                reply::ACCESS_REFUSED,
                format!("ACCESS_REFUSED - unsupported or malformed {mechanism} response"),
            ));
        };
        if !config.authenticates(&user, &pass, peer.ip()) {
            tracing::warn!(%peer, user = %user, "amqp login refused");
            return Err(AmqpError::connection(
                reply::ACCESS_REFUSED,
                format!(
                    "ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}"
                ),
            ));
        }
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Tune(conn::Tune {
                channel_max: config.channel_max,
                frame_max: config.frame_max,
                heartbeat: config.heartbeat,
            })),
        );
        let AMQPFrame::Method(0, AMQPClass::Connection(conn::AMQPMethod::TuneOk(tune))) =
            Self::next_frame(frames).await?
        else {
            return Err(AmqpError::connection(
                reply::COMMAND_INVALID,
                "COMMAND_INVALID - expected connection.tune-ok",
            ));
        };
        if tune.frame_max > config.frame_max || (tune.frame_max != 0 && tune.frame_max < 4096) {
            return Err(AmqpError::connection(
                reply::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - frame_max {} is outside 4096..={}",
                    tune.frame_max, config.frame_max
                ),
            ));
        }
        if tune.channel_max > config.channel_max {
            return Err(AmqpError::connection(
                reply::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - channel_max {} is above {}",
                    tune.channel_max, config.channel_max
                ),
            ));
        }
        if tune.frame_max != 0 {
            self.frame_max = tune.frame_max as usize;
        }
        if tune.channel_max != 0 {
            self.channel_max = tune.channel_max;
        }
        frame_max.store(self.frame_max, Ordering::Release);
        let AMQPFrame::Method(0, AMQPClass::Connection(conn::AMQPMethod::Open(open))) =
            Self::next_frame(frames).await?
        else {
            return Err(AmqpError::connection(
                reply::COMMAND_INVALID,
                "COMMAND_INVALID - expected connection.open",
            ));
        };
        if open.virtual_host.as_str() != "/" {
            return Err(AmqpError::connection(
                reply::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - vhost '{}' not found (Wharf serves vhost '/' only)",
                    open.virtual_host.as_str()
                ),
            ));
        }
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::OpenOk(conn::OpenOk {})),
        );
        tracing::info!(%peer, connection = self.id, user = %user, "amqp connection opened");
        Ok(tune.heartbeat)
    }

    async fn serve(
        &mut self,
        frames: &mut mpsc::Receiver<Result<AMQPFrame, CodecError>>,
        heartbeat: u16,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), AmqpError> {
        let beat = Duration::from_secs(u64::from(heartbeat.max(1))) / 2;
        let mut ticker = tokio::time::interval(beat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_read = Instant::now();
        loop {
            let frame = tokio::select! {
                f = frames.recv() => f,
                _ = ticker.tick() => {
                    if heartbeat > 0 {
                        if last_read.elapsed() > Duration::from_secs(u64::from(heartbeat) * 2) {
                            return Err(AmqpError::connection(reply::CONNECTION_FORCED, "missed heartbeats"));
                        }
                        let mut bytes = Vec::new();
                        codec::encode(&AMQPFrame::Heartbeat, &mut bytes);
                        let _ = self.out.send(bytes);
                    }
                    continue;
                }
                _ = shutdown.changed() => {
                    return Err(AmqpError::connection(reply::CONNECTION_FORCED, "CONNECTION_FORCED - broker shutdown"));
                }
            };
            last_read = Instant::now();
            let frame = match frame {
                None | Some(Err(CodecError::Io(_))) => return Ok(()),
                Some(Err(e)) => return Err(codec_error(&e)),
                Some(Ok(frame)) => frame,
            };
            match self.on_frame(frame).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.hard => return Err(e),
                Err(e) => return Err(AmqpError::internal(e)),
            }
        }
    }

    /// Handles one frame; `true` when the connection closed cleanly.
    async fn on_frame(&mut self, frame: AMQPFrame) -> Result<bool, AmqpError> {
        match frame {
            AMQPFrame::Heartbeat => Ok(false),
            AMQPFrame::ProtocolHeader(_) | AMQPFrame::InvalidHeartbeat(_) => Err(
                AmqpError::connection(reply::FRAME_ERROR, "FRAME_ERROR - unexpected frame"),
            ),
            AMQPFrame::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(close))) => {
                tracing::debug!(
                    connection = self.id,
                    code = close.reply_code,
                    "client closed the connection"
                );
                // Acks of the closing connection are recorded before close-ok.
                self.teardown().await;
                self.send_method(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                );
                Ok(true)
            }
            AMQPFrame::Method(0, class) => self.on_connection_method(class),
            AMQPFrame::Method(id, class) => {
                if id > self.channel_max {
                    return Err(AmqpError::connection(
                        reply::CHANNEL_ERROR,
                        format!(
                            "CHANNEL_ERROR - channel {id} is above channel_max {}",
                            self.channel_max
                        ),
                    ));
                }
                let (class_id, method_id) = (class.get_amqp_class_id(), class.get_amqp_method_id());
                match self.on_channel_method(id, class).await {
                    Err(e) if !e.hard => {
                        self.channel_error(id, &e, class_id, method_id).await;
                        Ok(false)
                    }
                    other => other.map(|()| false),
                }
            }
            AMQPFrame::Header(id, header) => {
                let ch = self.open_channel(id)?;
                match ch.publishing.as_mut() {
                    Some(p) if p.properties.is_none() => {
                        if header.body_size > MAX_BODY {
                            return Err(AmqpError::connection(
                                reply::FRAME_ERROR,
                                format!("FRAME_ERROR - body of {} bytes is too large", header.body_size),
                            ));
                        }
                        p.properties = Some(header.properties);
                        p.body_size = header.body_size;
                    }
                    _ => {
                        return Err(AmqpError::connection(
                            reply::UNEXPECTED_FRAME,
                            format!("UNEXPECTED_FRAME - content header on channel {id} without basic.publish"),
                        ))
                    }
                }
                self.publish_or_close(id).await
            }
            AMQPFrame::Body(id, bytes) => {
                let ch = self.open_channel(id)?;
                match ch.publishing.as_mut() {
                    Some(p)
                        if p.properties.is_some()
                            && (p.body.len() + bytes.len()) as u64 <= p.body_size =>
                    {
                        p.body.extend_from_slice(&bytes);
                    }
                    _ => {
                        return Err(AmqpError::connection(
                            reply::UNEXPECTED_FRAME,
                            format!("UNEXPECTED_FRAME - content body on channel {id} out of place"),
                        ))
                    }
                }
                self.publish_or_close(id).await
            }
        }
    }

    /// Publishes a complete message; a soft error (no such exchange) closes the channel.
    async fn publish_or_close(&mut self, id: u16) -> Result<bool, AmqpError> {
        match self.maybe_publish(id) {
            Ok(()) => Ok(false),
            Err(e) if e.hard => Err(e),
            Err(e) => {
                self.channel_error(id, &e, 60, 40).await;
                Ok(false)
            }
        }
    }

    fn open_channel(&mut self, id: u16) -> Result<&mut Channel, AmqpError> {
        self.channels.get_mut(&id).ok_or_else(|| {
            AmqpError::connection(
                reply::CHANNEL_ERROR,
                format!("CHANNEL_ERROR - channel {id} is not open"),
            )
        })
    }

    fn on_connection_method(&mut self, class: AMQPClass) -> Result<bool, AmqpError> {
        match class {
            AMQPClass::Connection(conn::AMQPMethod::Close(close)) => {
                tracing::debug!(
                    connection = self.id,
                    code = close.reply_code,
                    "client closed the connection"
                );
                self.send_method(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                );
                Ok(true)
            }
            AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)) => Ok(true),
            AMQPClass::Connection(
                conn::AMQPMethod::Blocked(_) | conn::AMQPMethod::Unblocked(_),
            ) => Ok(false),
            other => Err(AmqpError::connection(
                reply::COMMAND_INVALID,
                format!(
                    "COMMAND_INVALID - method {}.{} on channel 0",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                ),
            )),
        }
    }

    async fn channel_error(&mut self, id: u16, e: &AmqpError, class_id: u16, method_id: u16) {
        tracing::debug!(connection = self.id, channel = id, code = e.code, text = %e.text, "amqp channel error");
        self.cleanup_channel(id).await;
        if let Some(ch) = self.channels.get_mut(&id) {
            ch.closing = true;
        }
        self.send_method(
            id,
            AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                reply_code: e.code,
                reply_text: short(&e.text),
                class_id,
                method_id,
            })),
        );
    }

    /// Cancels the channel's consumers and requeues its unacked deliveries.
    async fn cleanup_channel(&mut self, id: u16) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        let consumers: Vec<(String, Arc<QueueRuntime>)> = ch.consumers.drain().collect();
        ch.publishing = None;
        let link = ch.link.clone();
        for (tag, queue) in consumers {
            let left = queue.remove_consumer(&link, &tag);
            self.registry.consumer_gone(&queue, left);
        }
        self.barrier().await;
        for unacked in link.close() {
            self.registry
                .requeue(&unacked.queue, unacked.acquired)
                .await;
        }
    }

    async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.completions.send(Completion::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Releases everything of a connection that ends.
    async fn teardown(&mut self) {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            self.cleanup_channel(id).await;
        }
        self.channels.clear();
        self.barrier().await;
        self.registry.connection_closed(self.id);
    }

    fn maybe_publish(&mut self, id: u16) -> Result<(), AmqpError> {
        let ch = self.open_channel(id)?;
        let complete = ch
            .publishing
            .as_ref()
            .is_some_and(|p| p.properties.is_some() && p.body.len() as u64 == p.body_size);
        if !complete {
            return Ok(());
        }
        let Some(p) = ch.publishing.take() else {
            return Ok(());
        };
        let message = Message {
            exchange: p.exchange,
            routing_key: p.routing_key,
            properties: p.properties.unwrap_or_default(),
            body: p.body,
            timestamp: now_ms(),
        };
        if let Some(tx) = ch.tx.as_mut() {
            tx.publishes.push((message, p.mandatory));
            return Ok(());
        }
        let confirm = ch.confirm;
        let tag = confirm.then(|| {
            ch.next_publish += 1;
            ch.next_publish
        });
        let published = self.registry.publish(&message, confirm, true)?;
        if !published.routed && p.mandatory {
            self.send_return(id, &message);
        }
        let _ = self.completions.send(Completion::Publish {
            channel: id,
            tag,
            pending: published.pending,
            queues: published.queues,
            refused: published.refused,
        });
        Ok(())
    }

    /// basic.return of an unroutable mandatory message.
    fn send_return(&self, id: u16, message: &Message) {
        let mut frames = Vec::new();
        codec::content(
            id,
            AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: reply::NO_ROUTE,
                reply_text: "NO_ROUTE".into(),
                exchange: short(&message.exchange),
                routing_key: short(&message.routing_key),
            })),
            &message.properties,
            &message.body,
            self.frame_max,
            &mut frames,
        );
        let _ = self.out.send(frames);
    }

    /// tx.commit: stores the buffered publishes durably, then settles the buffered acks.
    async fn commit(&mut self, id: u16) -> Result<(), AmqpError> {
        let Some(tx) = self.open_channel(id)?.tx.replace(TxBuffer::default()) else {
            return Err(AmqpError::precondition("channel is not transactional"));
        };
        let mut pending = Vec::new();
        let mut queues = Vec::new();
        for (message, mandatory) in &tx.publishes {
            let published = self.registry.publish(message, true, true)?;
            if !published.routed && *mandatory {
                self.send_return(id, message);
            }
            pending.extend(published.pending);
            queues.extend(published.queues);
        }
        for p in pending {
            p.wait().await?;
        }
        for q in &queues {
            q.wake();
            drop_head(&self.registry, q);
        }
        for (taken, how) in tx.settles {
            match how {
                None => self.settle_all(taken),
                Some(requeue) => self.reject(taken, requeue).await,
            }
        }
        self.barrier().await;
        Ok(())
    }

    fn settle_all(&self, taken: Vec<crate::channel::Unacked>) {
        let mut by_queue: HashMap<String, (Arc<QueueRuntime>, Vec<i64>)> = HashMap::new();
        for u in taken {
            by_queue
                .entry(u.queue.name.clone())
                .or_insert_with(|| (u.queue.clone(), Vec::new()))
                .1
                .push(u.acquired.offset);
        }
        for (queue, offsets) in by_queue.into_values() {
            let _ = self.completions.send(Completion::Ack(queue, offsets));
        }
    }

    #[allow(clippy::too_many_lines)]
    async fn on_channel_method(&mut self, id: u16, class: AMQPClass) -> Result<(), AmqpError> {
        if let AMQPClass::Channel(chan::AMQPMethod::Open(_)) = class {
            if self.channels.contains_key(&id) {
                return Err(AmqpError::connection(
                    reply::CHANNEL_ERROR,
                    format!("CHANNEL_ERROR - channel {id} is already open"),
                ));
            }
            self.channels.insert(
                id,
                Channel {
                    link: Arc::new(ChannelLink::new(id, self.out.clone(), self.frame_max)),
                    confirm: false,
                    tx: None,
                    next_publish: 0,
                    prefetch: 0,
                    consumers: HashMap::new(),
                    publishing: None,
                    closing: false,
                },
            );
            self.send_method(
                id,
                AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
            );
            return Ok(());
        }
        let ch = self.open_channel(id)?;
        if ch.closing {
            // After the server's channel.close only close-ok (or close) counts.
            match class {
                AMQPClass::Channel(chan::AMQPMethod::CloseOk(_)) => {
                    self.channels.remove(&id);
                }
                AMQPClass::Channel(chan::AMQPMethod::Close(_)) => {
                    self.channels.remove(&id);
                    self.send_method(
                        id,
                        AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                    );
                }
                _ => {}
            }
            return Ok(());
        }
        if ch.publishing.is_some() {
            return Err(AmqpError::connection(
                reply::UNEXPECTED_FRAME,
                format!("UNEXPECTED_FRAME - method on channel {id} while content was expected"),
            ));
        }
        let registry = self.registry.clone();
        match class {
            AMQPClass::Channel(chan::AMQPMethod::Close(_)) => {
                self.cleanup_channel(id).await;
                self.barrier().await;
                self.channels.remove(&id);
                self.send_method(
                    id,
                    AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                );
            }
            AMQPClass::Channel(chan::AMQPMethod::CloseOk(_)) => {}
            AMQPClass::Channel(chan::AMQPMethod::Flow(flow)) => self.send_method(
                id,
                AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk {
                    active: flow.active,
                })),
            ),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => self.send_method(
                id,
                AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
            ),
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) => {
                registry.declare_exchange(
                    d.exchange.as_str(),
                    d.kind.as_str(),
                    d.passive,
                    d.durable,
                    d.auto_delete,
                    d.internal,
                )?;
                if !d.nowait {
                    self.send_method(
                        id,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(
                            exchange::DeclareOk {},
                        )),
                    );
                }
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(d)) => {
                registry.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.send_method(
                        id,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
            }
            AMQPClass::Exchange(
                exchange::AMQPMethod::Bind(_) | exchange::AMQPMethod::Unbind(_),
            ) => {
                return Err(AmqpError::connection(
                    reply::NOT_IMPLEMENTED,
                    "NOT_IMPLEMENTED - exchange-to-exchange bindings are not supported",
                ))
            }
            AMQPClass::Queue(q::AMQPMethod::Declare(d)) => {
                // Counts include this connection's earlier publishes and acks.
                self.barrier().await;
                let (name, messages, consumers) = registry.declare_queue(
                    d.queue.as_str(),
                    d.passive,
                    d.durable,
                    d.exclusive,
                    d.auto_delete,
                    &d.arguments,
                    self.id,
                )?;
                if !d.nowait {
                    self.send_method(
                        id,
                        AMQPClass::Queue(q::AMQPMethod::DeclareOk(q::DeclareOk {
                            queue: name.into(),
                            message_count: messages.min(u64::from(u32::MAX)) as u32,
                            consumer_count: consumers as u32,
                        })),
                    );
                }
            }
            AMQPClass::Queue(q::AMQPMethod::Bind(b)) => {
                registry.bind(
                    b.queue.as_str(),
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                    false,
                )?;
                if !b.nowait {
                    self.send_method(id, AMQPClass::Queue(q::AMQPMethod::BindOk(q::BindOk {})));
                }
            }
            AMQPClass::Queue(q::AMQPMethod::Unbind(b)) => {
                registry.bind(
                    b.queue.as_str(),
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                    true,
                )?;
                self.send_method(
                    id,
                    AMQPClass::Queue(q::AMQPMethod::UnbindOk(q::UnbindOk {})),
                );
            }
            AMQPClass::Queue(q::AMQPMethod::Purge(p)) => {
                // Earlier publishes are purged, earlier acks settled first.
                self.barrier().await;
                let queue = registry.queue(p.queue.as_str())?;
                let purged = registry.purge(&queue).await?;
                if !p.nowait {
                    self.send_method(
                        id,
                        AMQPClass::Queue(q::AMQPMethod::PurgeOk(q::PurgeOk {
                            message_count: purged.min(u64::from(u32::MAX)) as u32,
                        })),
                    );
                }
            }
            AMQPClass::Queue(q::AMQPMethod::Delete(d)) => {
                self.barrier().await;
                let count = registry.delete_queue(d.queue.as_str(), d.if_unused, d.if_empty)?;
                if !d.nowait {
                    self.send_method(
                        id,
                        AMQPClass::Queue(q::AMQPMethod::DeleteOk(q::DeleteOk {
                            message_count: count.min(u64::from(u32::MAX)) as u32,
                        })),
                    );
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Qos(qos)) => {
                self.open_channel(id)?.prefetch = qos.prefetch_count;
                self.send_method(
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => {
                let queue = registry.queue(c.queue.as_str())?;
                if queue.is_kafka() {
                    return Err(AmqpError::precondition(format!(
                        "queue '{}' is Kafka topic '{}': read it with a Kafka consumer",
                        queue.name, queue.topic
                    )));
                }
                if queue.exclusive_owner.is_some_and(|o| o != self.id) {
                    return Err(AmqpError::channel(
                        reply::RESOURCE_LOCKED,
                        format!(
                            "RESOURCE_LOCKED - queue '{}' is exclusive to another connection",
                            queue.name
                        ),
                    ));
                }
                let tag = if c.consumer_tag.as_str().is_empty() {
                    self.next_consumer += 1;
                    format!("amq.ctag-{}-{}", self.id, self.next_consumer)
                } else {
                    c.consumer_tag.as_str().to_string()
                };
                let ch = self.open_channel(id)?;
                if ch.consumers.contains_key(&tag) {
                    return Err(AmqpError::connection(
                        reply::NOT_ALLOWED,
                        format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'"),
                    ));
                }
                let slot = Arc::new(ConsumerSlot {
                    tag: tag.clone(),
                    no_ack: c.no_ack,
                    prefetch: u32::from(ch.prefetch),
                    in_flight: std::sync::atomic::AtomicU32::new(0),
                    active: std::sync::atomic::AtomicBool::new(true),
                    link: ch.link.clone(),
                });
                ch.consumers.insert(tag.clone(), queue.clone());
                if !c.nowait {
                    self.send_method(
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                            consumer_tag: tag.into(),
                        })),
                    );
                }
                queue.add_consumer(slot);
            }
            AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => {
                let ch = self.open_channel(id)?;
                let link = ch.link.clone();
                if let Some(queue) = ch.consumers.remove(c.consumer_tag.as_str()) {
                    let left = queue.remove_consumer(&link, c.consumer_tag.as_str());
                    registry.consumer_gone(&queue, left);
                }
                if !c.nowait {
                    self.send_method(
                        id,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                self.open_channel(id)?.publishing = Some(Publishing {
                    exchange: p.exchange.as_str().to_string(),
                    routing_key: p.routing_key.as_str().to_string(),
                    mandatory: p.mandatory,
                    properties: None,
                    body_size: 0,
                    body: Vec::new(),
                });
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => {
                let link = self.open_channel(id)?.link.clone();
                let queue = registry.queue(g.queue.as_str())?;
                if queue.is_kafka() {
                    return Err(AmqpError::precondition(format!(
                        "queue '{}' is a Kafka topic",
                        queue.name
                    )));
                }
                loop {
                    let got = queue.acquire(registry.broker(), 1).await;
                    let Some((acquired, message)) = got.into_iter().next() else {
                        self.send_method(
                            id,
                            AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                        );
                        break;
                    };
                    let Some(message) = message else {
                        registry.ack(&queue, &[acquired.offset]).await;
                        continue;
                    };
                    if queue.expires_at(&message).is_some_and(|t| t <= now_ms()) {
                        registry
                            .dead_letter(&queue, acquired, Some(message), "expired")
                            .await;
                        continue;
                    }
                    queue.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    if acquired.delivery_count > 1 {
                        queue.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                    }
                    link.get_ok(&queue, acquired, &message, g.no_ack);
                    if g.no_ack {
                        let _ = self
                            .completions
                            .send(Completion::Ack(queue.clone(), vec![acquired.offset]));
                    }
                    break;
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                let Some(taken) = self.open_channel(id)?.link.take(a.delivery_tag, a.multiple)
                else {
                    return Err(AmqpError::precondition(format!(
                        "unknown delivery tag {}",
                        a.delivery_tag
                    )));
                };
                match self.open_channel(id)?.tx.as_mut() {
                    Some(tx) => tx.settles.push((taken, None)),
                    None => self.settle_all(taken),
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                let Some(taken) = self.open_channel(id)?.link.take(n.delivery_tag, n.multiple)
                else {
                    return Err(AmqpError::precondition(format!(
                        "unknown delivery tag {}",
                        n.delivery_tag
                    )));
                };
                match self.open_channel(id)?.tx.as_mut() {
                    Some(tx) => tx.settles.push((taken, Some(n.requeue))),
                    None => self.reject(taken, n.requeue).await,
                }
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(r)) => {
                let Some(taken) = self.open_channel(id)?.link.take(r.delivery_tag, false) else {
                    return Err(AmqpError::precondition(format!(
                        "unknown delivery tag {}",
                        r.delivery_tag
                    )));
                };
                match self.open_channel(id)?.tx.as_mut() {
                    Some(tx) => tx.settles.push((taken, Some(r.requeue))),
                    None => self.reject(taken, r.requeue).await,
                }
            }
            AMQPClass::Basic(
                basic::AMQPMethod::Recover(_) | basic::AMQPMethod::RecoverAsync(_),
            ) => {
                // Wharf always requeues (RabbitMQ refuses requeue=false too).
                let taken = self
                    .open_channel(id)?
                    .link
                    .take(0, true)
                    .unwrap_or_default();
                self.reject(taken, true).await;
                self.send_method(
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                let ch = self.open_channel(id)?;
                if ch.tx.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                ch.confirm = true;
                if !s.nowait {
                    self.send_method(
                        id,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            AMQPClass::Tx(tx::AMQPMethod::Select(_)) => {
                let ch = self.open_channel(id)?;
                if ch.confirm {
                    return Err(AmqpError::precondition(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                ch.tx.get_or_insert_with(TxBuffer::default);
                self.send_method(id, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            AMQPClass::Tx(tx::AMQPMethod::Commit(_)) => {
                self.commit(id).await?;
                self.send_method(id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            AMQPClass::Tx(tx::AMQPMethod::Rollback(_)) => {
                let ch = self.open_channel(id)?;
                let Some(buffer) = ch.tx.replace(TxBuffer::default()) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                let link = ch.link.clone();
                for (taken, _) in buffer.settles {
                    link.restore(taken);
                }
                self.send_method(
                    id,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
            }
            other => {
                return Err(AmqpError::connection(
                    reply::COMMAND_INVALID,
                    format!(
                        "COMMAND_INVALID - unexpected method {}.{}",
                        other.get_amqp_class_id(),
                        other.get_amqp_method_id()
                    ),
                ))
            }
        }
        Ok(())
    }

    async fn reject(&self, taken: Vec<crate::channel::Unacked>, requeue: bool) {
        for u in taken {
            if requeue {
                self.registry.requeue(&u.queue, u.acquired).await;
            } else {
                self.registry
                    .dead_letter(&u.queue, u.acquired, None, "rejected")
                    .await;
            }
        }
    }
}

fn codec_error(e: &CodecError) -> AmqpError {
    match e {
        CodecError::Io(_) => AmqpError::connection(reply::CONNECTION_FORCED, "connection lost"),
        CodecError::TooLarge { .. } | CodecError::Malformed(_) => {
            AmqpError::connection(reply::FRAME_ERROR, format!("FRAME_ERROR - {e}"))
        }
    }
}
