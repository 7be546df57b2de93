//! What a channel shares with queue dispatchers: its outgoing frames, its delivery tags and
//! its unacknowledged deliveries. The connection task owns the rest of the channel state.
//!
//! Lock order: a queue's state, then a channel's; a channel never locks a queue while
//! holding its own lock.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::protocol::{basic, AMQPClass};
use tokio::sync::mpsc;

use crate::codec;
use crate::message::Message;
use crate::queue::{Acquired, ConsumerSlot, QueueRuntime};

/// A delivery the client has not settled yet.
pub struct Unacked {
    pub tag: u64,
    pub queue: Arc<QueueRuntime>,
    pub acquired: Acquired,
    pub consumer: Option<Arc<ConsumerSlot>>,
}

#[derive(Default)]
struct Deliveries {
    next_tag: u64,
    unacked: BTreeMap<u64, Unacked>,
    closed: bool,
}

pub struct ChannelLink {
    pub id: u16,
    out: mpsc::UnboundedSender<Vec<u8>>,
    frame_max: usize,
    deliveries: Mutex<Deliveries>,
}

impl ChannelLink {
    pub fn new(id: u16, out: mpsc::UnboundedSender<Vec<u8>>, frame_max: usize) -> Self {
        Self {
            id,
            out,
            frame_max,
            deliveries: Mutex::new(Deliveries::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Deliveries> {
        self.deliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends a basic.deliver; false if the channel is closed (the caller requeues).
    pub fn deliver(
        &self,
        queue: &Arc<QueueRuntime>,
        slot: &Arc<ConsumerSlot>,
        acquired: Acquired,
        message: &Message,
    ) -> bool {
        let mut deliveries = self.lock();
        if deliveries.closed || !slot.active.load(Ordering::Acquire) {
            return false;
        }
        deliveries.next_tag += 1;
        let tag = deliveries.next_tag;
        if !slot.no_ack {
            deliveries.unacked.insert(
                tag,
                Unacked {
                    tag,
                    queue: queue.clone(),
                    acquired,
                    consumer: Some(slot.clone()),
                },
            );
        }
        let mut frames = Vec::with_capacity(message.body.len() + 256);
        codec::content(
            self.id,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: slot.tag.as_str().into(),
                delivery_tag: tag,
                redelivered: acquired.delivery_count > 1,
                exchange: message.exchange.as_str().into(),
                routing_key: message.routing_key.as_str().into(),
            })),
            &message.properties,
            &message.body,
            self.frame_max,
            &mut frames,
        );
        self.out.send(frames).is_ok()
    }

    /// Sends a basic.get-ok for an acquired message; its delivery tag.
    pub fn get_ok(
        &self,
        queue: &Arc<QueueRuntime>,
        acquired: Acquired,
        message: &Message,
        no_ack: bool,
    ) {
        let mut deliveries = self.lock();
        deliveries.next_tag += 1;
        let tag = deliveries.next_tag;
        if !no_ack {
            deliveries.unacked.insert(
                tag,
                Unacked {
                    tag,
                    queue: queue.clone(),
                    acquired,
                    consumer: None,
                },
            );
        }
        let ready = queue.ready();
        let mut frames = Vec::with_capacity(message.body.len() + 256);
        codec::content(
            self.id,
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered: acquired.delivery_count > 1,
                exchange: message.exchange.as_str().into(),
                routing_key: message.routing_key.as_str().into(),
                message_count: ready.min(u64::from(u32::MAX)) as u32,
            })),
            &message.properties,
            &message.body,
            self.frame_max,
            &mut frames,
        );
        let _ = self.out.send(frames);
    }

    /// Takes the deliveries a basic.ack/nack/reject names (`tag` 0 with `multiple`: all);
    /// `None` when the tag is unknown (a 406 channel error).
    pub fn take(&self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        let mut deliveries = self.lock();
        let taken: Vec<Unacked> = if multiple {
            let keep = deliveries.unacked.split_off(&(tag.saturating_add(1)));
            let taken = std::mem::replace(&mut deliveries.unacked, keep);
            if tag == 0 {
                std::mem::take(&mut deliveries.unacked)
                    .into_values()
                    .chain(taken.into_values())
                    .collect()
            } else {
                taken.into_values().collect()
            }
        } else {
            deliveries.unacked.remove(&tag).into_iter().collect()
        };
        drop(deliveries);
        for u in &taken {
            if let Some(c) = &u.consumer {
                c.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if taken.is_empty() && !(multiple && tag == 0) {
            return None;
        }
        Some(taken)
    }

    /// Puts taken deliveries back (a rolled-back transaction's acks).
    pub fn restore(&self, items: Vec<Unacked>) {
        let mut deliveries = self.lock();
        for u in items {
            if let Some(c) = &u.consumer {
                c.in_flight.fetch_add(1, Ordering::AcqRel);
            }
            deliveries.unacked.insert(u.tag, u);
        }
    }

    /// Closes the channel to deliveries; returns what was unacked (to be requeued).
    pub fn close(&self) -> Vec<Unacked> {
        let mut deliveries = self.lock();
        deliveries.closed = true;
        std::mem::take(&mut deliveries.unacked)
            .into_values()
            .collect()
    }

    /// basic.cancel from the server (the queue was deleted).
    pub fn cancelled_by_server(&self, consumer_tag: &str) {
        let mut frames = Vec::new();
        codec::method(
            self.id,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: consumer_tag.into(),
                nowait: true,
            })),
            &mut frames,
        );
        let _ = self.out.send(frames);
    }
}
