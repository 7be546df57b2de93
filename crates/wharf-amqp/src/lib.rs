//! The AMQP 0-9-1 door: RabbitMQ clients publish to exchanges and consume from queues whose
//! messages are records in Wharf's logs. Frames are encoded and decoded by the `amq-protocol`
//! crate; the broker core knows nothing of AMQP (per-message consume state is its
//! `queue` module).
//!
//! # Layout
//! - `listener`: [`serve`], [`AmqpConfig`]: accepts connections, users and limits.
//! - `connection`: handshake, heartbeats, channels and every method.
//! - `channel`: what a channel shares with dispatchers: delivery tags, unacked deliveries.
//! - `registry`: [`Registry`]: exchanges, queues, bindings (durable ones persisted), routing,
//!   publish, dead-lettering.
//! - `queue`: a queue at run time: cursor, consumers, the dispatcher task.
//! - `routing`: exchange types and binding matching (direct, fanout, topic, headers).
//! - `message`: an AMQP message as a Kafka record.
//! - `codec`: frames through amq-protocol, bounded by `frame_max`.
//! - `error`: reply codes, channel and connection errors.

mod channel;
mod codec;
mod connection;
mod error;
mod listener;
mod message;
mod queue;
mod registry;
mod routing;

pub use error::{AmqpError, CodecError};
pub use listener::{serve, AmqpConfig};
pub use queue::{QueueArgs, QueueRuntime};
pub use registry::{BindingDef, ExchangeDef, Registry, QUEUE_TOPIC_PREFIX};
pub use routing::ExchangeKind;
