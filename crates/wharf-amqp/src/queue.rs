//! A queue at run time: its log (a topic partition), its consume cursor, its consumers and
//! the dispatcher task that hands ready messages to consumers round-robin within their
//! prefetch.
//!
//! ```text
//!  publish ─► log append ─► wake ─► dispatcher: pick consumer with room ─► cursor.acquire
//!     ─► read record ─► expired? dead-letter : deliver on the consumer's channel
//!  basic.ack ─► channel takes tags ─► cursor.settle + __wharf_queue_acks
//!  nack/reject requeue, channel close ─► cursor.release (over x-delivery-limit: dead-letter)
//! ```

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use wharf_broker::queue::{Acquired, LocalCursor, MessageCursor};
use wharf_broker::Log;
use wharf_record::{BatchHeader, RecordIter};

use crate::channel::ChannelLink;
use crate::message::{now_ms, Message};

/// RabbitMQ 4's default `x-delivery-limit` of quorum queues.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

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
    fn has_room(&self) -> bool {
        self.active.load(Ordering::Acquire)
            && (self.no_ack
                || self.prefetch == 0
                || self.in_flight.load(Ordering::Acquire) < self.prefetch)
    }
}

struct Inner {
    cursor: LocalCursor,
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
    inner: Mutex<Inner>,
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the dispatcher does with a message it acquired.
pub enum Handoff {
    Deliver(Arc<ConsumerSlot>, Acquired, Message),
    Expired(Acquired),
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
        settled: &BTreeSet<i64>,
    ) -> Self {
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
            inner: Mutex::new(Inner {
                cursor: LocalCursor::restore(start, settled.iter().copied()),
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

    fn end(&self) -> i64 {
        self.log.as_ref().map_or(0, Log::high_watermark)
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ready messages.
    pub fn ready(&self) -> u64 {
        let end = self.end();
        lock(&self.inner).cursor.ready(end)
    }

    /// Delivered, unacked messages.
    pub fn unacked(&self) -> u64 {
        lock(&self.inner).cursor.in_flight()
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

    /// Settles `offset` (ack, dead-letter, expiry); false if it was not pending.
    pub fn settle(&self, offset: i64) -> bool {
        let settled = lock(&self.inner).cursor.settle(offset);
        self.wake();
        settled
    }

    /// Puts a delivered message back; its delivery count so far.
    pub fn release(&self, offset: i64) -> Option<u32> {
        let count = lock(&self.inner).cursor.release(offset);
        self.wake();
        count
    }

    /// Settles every ready message; returns them.
    pub fn purge(&self) -> Vec<i64> {
        let end = self.end();
        lock(&self.inner).cursor.purge(end)
    }

    /// Acquires the next ready message for basic.get.
    pub fn acquire_one(&self) -> Option<Acquired> {
        let end = self.end();
        let mut inner = lock(&self.inner);
        if inner.deleted {
            return None;
        }
        inner.cursor.acquire(end)
    }

    /// The oldest ready message, when the queue holds more than `x-max-length`.
    pub fn over_max_length(&self) -> Option<i64> {
        let max = self.args.max_length?;
        let end = self.end();
        let mut inner = lock(&self.inner);
        let total = inner.cursor.ready(end) + inner.cursor.in_flight();
        (total > max).then(|| inner.cursor.peek(end)).flatten()
    }

    /// Whether a publish to this queue is refused (`x-overflow=reject-publish`, full).
    pub fn refuses_publish(&self) -> bool {
        match (self.args.max_length, self.args.overflow) {
            (Some(max), Overflow::RejectPublish) => self.ready() + self.unacked() >= max,
            _ => false,
        }
    }

    /// Reads the message at `offset`. Blocking: file reads.
    pub fn read(&self, offset: i64) -> Option<Message> {
        let log = self.log.as_ref()?;
        let read = log.read(offset, 1).ok()?;
        let mut at = 0usize;
        while let Some(batch) = read
            .records
            .get(at..)
            .and_then(|b| BatchHeader::parse(b).ok())
        {
            at += batch.len();
            if batch.last_offset() < offset {
                continue;
            }
            for record in RecordIter::new(&batch).ok()?.flatten() {
                if record.offset == offset {
                    return Some(Message::from_record(&record));
                }
            }
            return None;
        }
        None
    }

    /// The message's time-to-live: the smaller of the queue's and its own.
    fn expires_at(&self, message: &Message) -> Option<i64> {
        let ttl = match (self.args.message_ttl, message.expiration_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(message.timestamp.saturating_add(ttl))
    }

    /// Picks a consumer with room and acquires a message for it.
    fn next_handoff(&self) -> Option<(Arc<ConsumerSlot>, Acquired)> {
        let end = self.end();
        let mut inner = lock(&self.inner);
        if inner.deleted || inner.consumers.is_empty() {
            return None;
        }
        let n = inner.consumers.len();
        let pick = (0..n)
            .map(|i| (inner.next_consumer + i) % n)
            .find(|&i| inner.consumers[i].has_room())?;
        let acquired = inner.cursor.acquire(end)?;
        inner.next_consumer = (pick + 1) % n;
        let slot = inner.consumers[pick].clone();
        if !slot.no_ack {
            slot.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        Some((slot, acquired))
    }

    /// The head message if it has expired (settled by the caller after dead-lettering).
    fn expired_head(&self) -> Option<Acquired> {
        let end = self.end();
        let head = lock(&self.inner).cursor.peek(end)?;
        let message = self.read(head)?;
        let expires = self.expires_at(&message)?;
        if expires > now_ms() {
            return None;
        }
        let mut inner = lock(&self.inner);
        (inner.cursor.peek(end) == Some(head)).then_some(Acquired {
            offset: head,
            delivery_count: 0,
        })
    }

    /// One step of the dispatcher. Blocking: file reads.
    pub fn step(&self) -> Option<Handoff> {
        if let Some(expired) = self.expired_head() {
            return Some(Handoff::Expired(expired));
        }
        let (slot, acquired) = self.next_handoff()?;
        let Some(message) = self.read(acquired.offset) else {
            // Gone from the log (retention): nothing to deliver.
            lock(&self.inner).cursor.settle(acquired.offset);
            if !slot.no_ack {
                slot.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            return self.step();
        };
        if self.expires_at(&message).is_some_and(|t| t <= now_ms()) {
            if !slot.no_ack {
                slot.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            return Some(Handoff::Expired(acquired));
        }
        Some(Handoff::Deliver(slot, acquired, message))
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
            let q = queue.clone();
            let step = tokio::task::spawn_blocking(move || q.step())
                .await
                .ok()
                .flatten();
            match step {
                None => queue.idle().await,
                Some(Handoff::Expired(acquired)) => {
                    registry
                        .dead_letter(&queue, acquired.offset, "expired")
                        .await;
                }
                Some(Handoff::Deliver(slot, acquired, message)) => {
                    registry.deliver(&queue, &slot, acquired, &message);
                }
            }
        }
    });
}
