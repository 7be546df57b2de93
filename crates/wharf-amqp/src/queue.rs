//! A queue at run time: its log (a topic partition), its consumers and the dispatcher task
//! that hands ready messages to consumers round-robin within their prefetch. Per-message
//! state (ready, unacked, delivery counts) is the broker's shared cursor (ARCHITECTURE
//! decision 8), keyed `amqp:<queue>` over the queue's topic, partition 0.
//!
//! ```text
//!  publish ─► log append ─► wake ─► dispatcher: pick consumer with room ─► cursor_acquire
//!     ─► expired? dead-letter + accept : deliver on the consumer's channel
//!  basic.ack ─► channel takes tags ─► cursor_ack(accept)
//!  nack/reject requeue, channel close ─► cursor_ack(release) (over x-delivery-limit:
//!     dead-letter + accept);  nack/reject without requeue ─► dead-letter + accept
//! ```
//!
//! Every AMQP delivery is locked to the one cursor consumer [`CURSOR_CONSUMER`]: delivery
//! tags already tie an ack to its channel.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use wharf_broker::cursor::{AckType, AcquiredRange, CursorConfig, CursorKey, StartFrom};
use wharf_broker::{Broker, Log};
use wharf_record::{BatchHeader, RecordIter};

use crate::channel::ChannelLink;
use crate::message::{now_ms, Message};

/// RabbitMQ 4's default `x-delivery-limit` of quorum queues.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;
/// The cursor consumer every AMQP delivery is locked to.
pub const CURSOR_CONSUMER: &str = "amqp";
/// A delivery stays locked to its channel until ack, nack/reject or the channel's close
/// (RabbitMQ has no lock timeout): the cursor lock never expires.
pub const LOCK_MS: i64 = i64::MAX;
/// Deliveries acquired at once for one consumer.
const MAX_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    #[default]
    DropHead,
    RejectPublish,
}

/// The queue arguments Wharf honours (RabbitMQ's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct QueueArgs {
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub message_ttl: Option<i64>,
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: the most body bytes of ready messages.
    #[serde(default)]
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub delivery_limit: Option<u32>,
    /// `x-queue-type=kafka`: the queue is this Kafka topic; publishes routed to it land
    /// there for Kafka consumers and it cannot be consumed over AMQP.
    pub kafka_topic: Option<String>,
}

/// Per-queue counters (the metrics and admin views read them).
#[derive(Debug, Default)]
pub struct QueueCounters {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub redelivered: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// A consumer (basic.consume) on one channel.
pub struct ConsumerSlot {
    pub tag: String,
    pub no_ack: bool,
    /// basic.qos prefetch at consume time; 0: unlimited.
    pub prefetch: u32,
    pub in_flight: AtomicU32,
    pub active: AtomicBool,
    pub link: Arc<ChannelLink>,
}

impl ConsumerSlot {
    /// Deliveries this consumer may take now.
    fn room(&self) -> usize {
        if !self.active.load(Ordering::Acquire) {
            return 0;
        }
        if self.no_ack || self.prefetch == 0 {
            return MAX_BATCH;
        }
        (self
            .prefetch
            .saturating_sub(self.in_flight.load(Ordering::Acquire)) as usize)
            .min(MAX_BATCH)
    }
}

/// One acquired message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub offset: i64,
    /// Deliveries so far, this one included.
    pub delivery_count: u16,
}

struct BodySizes {
    /// The first offset not read yet.
    read_to: i64,
    sizes: BTreeMap<i64, u64>,
}

struct Inner {
    consumers: Vec<Arc<ConsumerSlot>>,
    next_consumer: usize,
    deleted: bool,
}

pub struct QueueRuntime {
    pub name: String,
    /// The log topic (partition 0).
    pub topic: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub args: QueueArgs,
    pub log: Option<Log>,
    pub counters: QueueCounters,
    pub key: CursorKey,
    pub cursor_config: CursorConfig,
    /// The cursor as last seen: its next offset, offsets in its window available again
    /// (released or requeued; settled ones are not counted), offsets acquired.
    next: AtomicI64,
    window_free: AtomicU64,
    acquired: AtomicU64,
    /// For `x-max-length-bytes`: the available offsets in the cursor window as last seen,
    /// and the body sizes of the records read so far (from the cursor start).
    available: Mutex<Vec<i64>>,
    window_start: AtomicI64,
    sizes: Mutex<BodySizes>,
    /// Held while dropping the head beyond a length limit (one at a time, or two could
    /// both drop for the same excess).
    pub dropping: tokio::sync::Mutex<()>,
    inner: Mutex<Inner>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The message at `offset` among stored `records` (whole batches).
pub fn find_in(records: &[u8], offset: i64) -> Option<Message> {
    let mut at = 0usize;
    while let Some(batch) = records.get(at..).and_then(|b| BatchHeader::parse(b).ok()) {
        at += batch.len();
        if batch.last_offset() < offset || batch.base_offset() > offset {
            continue;
        }
        for record in RecordIter::new(&batch).ok()?.flatten() {
            if record.offset == offset {
                return Some(Message::from_record(&record));
            }
        }
    }
    None
}

impl QueueRuntime {
    pub fn new(
        name: String,
        topic: String,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: Option<u64>,
        args: QueueArgs,
        log: Option<Log>,
    ) -> Self {
        let limit = args.delivery_limit.unwrap_or(DEFAULT_DELIVERY_LIMIT);
        let cursor_config = CursorConfig {
            lock_ms: LOCK_MS,
            // The cursor archives at this count; Wharf dead-letters before it would.
            delivery_limit: u16::try_from(limit.saturating_add(1)).unwrap_or(u16::MAX),
            retry_backoff_ms: Vec::new(),
            max_in_flight: 100_000,
            start: StartFrom::Earliest,
            read_committed: false,
        };
        let key = CursorKey::new(&format!("amqp:{name}"), &topic, 0);
        let start = log.as_ref().map_or(0, Log::log_start_offset);
        Self {
            name,
            topic,
            durable,
            auto_delete,
            exclusive_owner,
            args,
            log,
            counters: QueueCounters::default(),
            key,
            cursor_config,
            next: AtomicI64::new(start),
            window_free: AtomicU64::new(0),
            acquired: AtomicU64::new(0),
            available: Mutex::new(Vec::new()),
            window_start: AtomicI64::new(start),
            sizes: Mutex::new(BodySizes {
                read_to: start,
                sizes: BTreeMap::new(),
            }),
            dropping: tokio::sync::Mutex::new(()),
            inner: Mutex::new(Inner {
                consumers: Vec::new(),
                next_consumer: 0,
                deleted: false,
            }),
            wake: Notify::new(),
        }
    }

    pub fn is_kafka(&self) -> bool {
        self.args.kafka_topic.is_some()
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Refreshes the counts from the cursor.
    pub async fn refresh(&self, broker: &Broker) {
        if let Some(view) = broker.cursors().view(&self.key).await {
            self.next.store(view.next, Ordering::Release);
            self.window_free
                .store(view.available as u64, Ordering::Release);
            self.acquired.store(view.acquired as u64, Ordering::Release);
            if self.args.max_length_bytes.is_some() {
                let available = broker.cursors().available_offsets(&self.key).await;
                *lock(&self.available) = available;
                self.window_start.store(view.start, Ordering::Release);
            }
        }
    }

    /// Body bytes of the ready messages (`x-max-length-bytes`): reads the records not read
    /// yet once, then sums the sizes of those never delivered and those available again.
    pub fn ready_bytes(&self) -> u64 {
        let Some(log) = &self.log else { return 0 };
        let next = self.next.load(Ordering::Acquire);
        let available = lock(&self.available).clone();
        let mut sizes = lock(&self.sizes);
        // Offsets below the cursor start are settled; acquired ones above it may come back.
        let start = self.window_start.load(Ordering::Acquire).min(next);
        sizes.sizes = sizes.sizes.split_off(&start);
        sizes.read_to = sizes.read_to.max(start).max(log.log_start_offset());
        let end = log.high_watermark();
        while sizes.read_to < end {
            let Ok(read) = log.read(sizes.read_to, 1 << 20) else {
                break;
            };
            let before = sizes.read_to;
            let mut at = 0usize;
            while let Some(batch) = read
                .records
                .get(at..)
                .and_then(|b| BatchHeader::parse(b).ok())
            {
                at += batch.len();
                if let Ok(records) = RecordIter::new(&batch) {
                    for record in records.flatten() {
                        if record.offset >= sizes.read_to {
                            let len = record.value.map_or(0, <[u8]>::len) as u64;
                            sizes.sizes.insert(record.offset, len);
                        }
                    }
                }
                sizes.read_to = sizes.read_to.max(batch.last_offset() + 1);
            }
            if sizes.read_to == before {
                break;
            }
        }
        let fresh: u64 = sizes.sizes.range(next..).map(|(_, n)| *n).sum();
        let again: u64 = available.iter().filter_map(|o| sizes.sizes.get(o)).sum();
        fresh + again
    }

    /// Whether the ready messages hold more than `x-max-length-bytes` (drop-head).
    pub fn over_max_length_bytes(&self) -> bool {
        self.args
            .max_length_bytes
            .is_some_and(|max| self.ready_bytes() > max)
    }

    /// Ready messages: those never delivered (from the cursor's next offset to the high
    /// watermark) and those requeued in its window.
    pub fn ready(&self) -> u64 {
        let end = self.log.as_ref().map_or(0, Log::high_watermark);
        let fresh = (end - self.next.load(Ordering::Acquire)).max(0) as u64;
        fresh + self.window_free.load(Ordering::Acquire)
    }

    /// Delivered, unacked messages.
    pub fn unacked(&self) -> u64 {
        self.acquired.load(Ordering::Acquire)
    }

    pub fn consumer_count(&self) -> usize {
        lock(&self.inner).consumers.len()
    }

    pub fn consumer_tags(&self) -> Vec<(String, u16, bool, u32)> {
        lock(&self.inner)
            .consumers
            .iter()
            .map(|c| (c.tag.clone(), c.link.id, !c.no_ack, c.prefetch))
            .collect()
    }

    pub fn is_deleted(&self) -> bool {
        lock(&self.inner).deleted
    }

    pub fn add_consumer(&self, slot: Arc<ConsumerSlot>) {
        lock(&self.inner).consumers.push(slot);
        self.wake();
    }

    /// Removes the consumer `tag` of `link`; returns how many consumers are left.
    pub fn remove_consumer(&self, link: &ChannelLink, tag: &str) -> usize {
        let mut inner = lock(&self.inner);
        inner.consumers.retain(|c| {
            let gone = std::ptr::eq(Arc::as_ptr(&c.link), link) && c.tag == tag;
            if gone {
                c.active.store(false, Ordering::Release);
            }
            !gone
        });
        inner.consumers.len()
    }

    /// Marks the queue deleted and hands back its consumers (to be cancelled).
    pub fn mark_deleted(&self) -> Vec<Arc<ConsumerSlot>> {
        let mut inner = lock(&self.inner);
        inner.deleted = true;
        for c in &inner.consumers {
            c.active.store(false, Ordering::Release);
        }
        let consumers = std::mem::take(&mut inner.consumers);
        drop(inner);
        self.wake();
        consumers
    }

    /// Whether a publish to this queue is refused (`x-overflow=reject-publish`, full).
    pub fn refuses_publish(&self) -> bool {
        if self.args.overflow != Overflow::RejectPublish {
            return false;
        }
        self.args.max_length.is_some_and(|max| self.ready() >= max)
            || self
                .args
                .max_length_bytes
                .is_some_and(|max| self.ready_bytes() >= max)
    }

    /// Whether the queue holds more than `x-max-length` ready messages (drop-head; unacked
    /// ones do not count, as in RabbitMQ).
    pub fn over_max_length(&self) -> bool {
        self.args.max_length.is_some_and(|max| self.ready() > max)
    }

    /// The message's expiry time: publish time plus the smaller of the queue's and its own
    /// TTL.
    pub fn expires_at(&self, message: &Message) -> Option<i64> {
        let ttl = match (self.args.message_ttl, message.expiration_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(message.timestamp.saturating_add(ttl))
    }

    /// Acquires up to `max` ready messages, lowest first, with their messages.
    pub async fn acquire(
        &self,
        broker: &Arc<Broker>,
        max: usize,
    ) -> Vec<(Acquired, Option<Message>)> {
        if max == 0 || self.is_deleted() || self.log.is_none() {
            return Vec::new();
        }
        let got = broker
            .cursor_acquire(
                &self.key,
                &self.cursor_config,
                CURSOR_CONSUMER,
                max,
                1 << 20,
            )
            .await;
        let acquisition = match got {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(queue = %self.name, %error, "cursor acquire failed");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for AcquiredRange {
            first,
            last,
            delivery_count,
        } in acquisition.ranges
        {
            for offset in first..=last {
                out.push((
                    Acquired {
                        offset,
                        delivery_count,
                    },
                    find_in(&acquisition.records, offset),
                ));
            }
        }
        self.refresh(broker).await;
        out
    }

    /// Settles acquired offsets: accept (acked, dead-lettered) or release (requeue).
    pub async fn settle(&self, broker: &Arc<Broker>, offsets: &[i64], kind: AckType) {
        if offsets.is_empty() || self.is_deleted() {
            return;
        }
        let acks: Vec<(i64, i64, AckType)> = offsets.iter().map(|o| (*o, *o, kind)).collect();
        match broker
            .cursor_ack(&self.key, &self.cursor_config, CURSOR_CONSUMER, &acks)
            .await
        {
            Ok(results) => {
                for (result, offset) in results.iter().zip(offsets) {
                    if let Err(error) = result {
                        // An offset no longer in flight (its queue was redeclared or reset).
                        tracing::debug!(queue = %self.name, offset, %error, "ack of an offset not in flight");
                    }
                }
            }
            Err(error) => {
                tracing::error!(queue = %self.name, %error, "cursor ack failed");
            }
        }
        self.refresh(broker).await;
        self.wake();
    }

    /// The next message of a queue without consumers when it expired (never acquired yet,
    /// so reading it does not count a delivery).
    pub fn expired_head(&self) -> bool {
        let Some(log) = &self.log else { return false };
        let next = self.next.load(Ordering::Acquire);
        if self.window_free.load(Ordering::Acquire) > 0
            || self.acquired.load(Ordering::Acquire) > 0
            || next >= log.high_watermark()
        {
            return false;
        }
        let Ok(read) = log.read(next, 1) else {
            return false;
        };
        find_in(&read.records, next)
            .and_then(|m| self.expires_at(&m))
            .is_some_and(|t| t <= now_ms())
    }

    /// Picks a consumer with room, round-robin.
    fn pick(&self) -> Option<(Arc<ConsumerSlot>, usize)> {
        let mut inner = lock(&self.inner);
        if inner.deleted || inner.consumers.is_empty() {
            return None;
        }
        let n = inner.consumers.len();
        let (at, room) = (0..n)
            .map(|i| (inner.next_consumer + i) % n)
            .map(|i| (i, inner.consumers[i].room()))
            .find(|(_, room)| *room > 0)?;
        inner.next_consumer = (at + 1) % n;
        Some((inner.consumers[at].clone(), room))
    }

    /// Waits for a wake-up or the expiry tick.
    pub async fn idle(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.wake.notified()).await;
    }
}

/// Keeps the dispatcher of `queue` running until the queue is deleted.
pub fn spawn_dispatcher(queue: &Arc<QueueRuntime>, registry: Weak<crate::Registry>) {
    let weak = Arc::downgrade(queue);
    tokio::spawn(async move {
        loop {
            let Some(queue) = weak.upgrade() else { return };
            if queue.is_deleted() {
                return;
            }
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let broker = registry.broker().clone();
            let picked = queue.pick();
            let want = if let Some((_, room)) = &picked {
                *room
            } else {
                let q = queue.clone();
                let expired = tokio::task::spawn_blocking(move || q.expired_head())
                    .await
                    .unwrap_or(false);
                usize::from(expired)
            };
            let acquired = queue.acquire(&broker, want).await;
            if acquired.is_empty() {
                queue.idle().await;
                continue;
            }
            for (acquired, message) in acquired {
                let Some(message) = message else {
                    // Unreadable (deleted by retention): nothing to deliver.
                    queue
                        .settle(&broker, &[acquired.offset], AckType::Accept)
                        .await;
                    continue;
                };
                if queue.expires_at(&message).is_some_and(|t| t <= now_ms()) {
                    registry
                        .dead_letter(&queue, acquired, Some(message), "expired")
                        .await;
                    continue;
                }
                match &picked {
                    Some((slot, _)) => registry.deliver(&queue, slot, acquired, &message).await,
                    // Acquired for an expiry check that raced with its expiry: back.
                    None => {
                        queue
                            .settle(&broker, &[acquired.offset], AckType::Release)
                            .await;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use wharf_broker::cursor::{BatchKind, Cursor, SlotState};

    use super::*;

    #[test]
    fn a_delivery_stays_with_its_channel_however_long_it_is_unacked() {
        let q = QueueRuntime::new(
            "q".into(),
            "amqp.queue.1".into(),
            false,
            false,
            None,
            QueueArgs::default(),
            None,
        );
        let config = &q.cursor_config;
        let mut cursor = Cursor::new(0);
        cursor.acquire_new(0, 0, BatchKind::Data, CURSOR_CONSUMER, 0, config);
        // A day, then the far future: the lock holds (RabbitMQ has no lock timeout).
        for now in [86_400_000, i64::MAX - 1] {
            assert!(cursor.expire(now, config).is_empty());
            assert_eq!(cursor.acquired_count(), 1, "lock expired at {now}");
            assert_eq!(cursor.available(now, 10), Vec::<i64>::new());
        }
        let held = cursor.slots().next().map(|(_, s)| s.state.clone());
        assert!(matches!(held, Some(SlotState::Acquired { .. })), "{held:?}");
        cursor
            .ack(CURSOR_CONSUMER, 0, 0, AckType::Accept, i64::MAX - 1, config)
            .unwrap();
        assert_eq!(cursor.start(), 1);
    }
}
