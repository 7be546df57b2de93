//! The broker core: topics, partitions, produce and fetch semantics, high watermarks. It knows
//! no wire protocol; front ends (`wharf-kafka`) translate requests into calls here.
//!
//! # Layout
//! - `broker`: [`Broker`], the entry point: open (recover), topic lifecycle, produce, offsets.
//! - `cluster`: [`cluster::ClusterView`], the nodes and each shard's leader, replicas, ISR.
//! - `forward`: [`forward::NodeCall`], what one node's broker asks of another's.
//! - `topic_config`: Kafka topic configs Wharf honours, their defaults and validation.
//! - `metadata`: the persisted topic registry (`meta.json`).
//! - `metadata_log`: cluster metadata through the controller: requests, committed records,
//!   applying them ([`metadata_log::MetadataLog`]).
//! - `topic`: a topic and its partitions in memory.
//! - `produce`: batch validation and the append path.
//! - `fetch`: partition reads within a fetch's byte budget (KIP-74), the read_committed cut.
//! - `group`: consumer groups and committed offsets, persisted in `__consumer_offsets`.
//! - `producer`: idempotent producers: producer ids, per-partition sequence state, snapshots.
//! - `scheduled`: delayed and half messages of typed topics, waiting in `__wharf_scheduled`.
//! - `share`: share groups (KIP-932) on cursors: membership, sessions, configs, dead letters.
//! - `txn`: transactions: the pure coordinator, `__transaction_state` records, markers, LSO.
//! - `cursor`: cursors over logs: per-record locks, acks, redelivery, dead-lettering
//!   (queue semantics for share groups and AMQP queues), persisted in `__wharf_cursors`.
//! - `error`: [`BrokerError`], one variant per distinct client-visible failure.

mod broker;
pub mod cluster;
pub mod cursor;
mod error;
mod fetch;
pub mod forward;
pub mod group;
mod internal_log;
mod leadership;
mod metadata;
pub mod metadata_log;
mod produce;
pub mod producer;
pub mod quota;
pub mod scheduled;
pub mod share;
mod topic;
mod topic_config;
pub mod txn;
pub mod work;

pub use broker::{
    Broker, BrokerConfig, ConfigOp, ShardLogFactory, TopicSpec, FIRST_RESERVED_LOG_ID,
};
pub use error::BrokerError;
pub use fetch::{FetchBudget, FetchError, FetchSpec, FetchTarget, PartitionRead};
pub use produce::{Acks, PendingProduce, ProduceOutcome};
pub use producer::ProducerError;
pub use topic::{Partition, Topic};
pub use topic_config::{ConfigEntry, ConfigSource, MessageType, TopicConfig, TOPIC_CONFIG_KEYS};
pub use wharf_storage::stage;
pub use wharf_storage::{
    Durability, Log, ReadResult, StorageConfig, StorageError, TimestampMatch, WakeWritersLater,
};
