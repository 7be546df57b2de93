//! Consumer groups: Kafka's classic group protocol (membership, generations, rebalances,
//! static members) and committed offsets, persisted as records in `__consumer_offsets`
//! and replayed at open (ADR 0004).
//!
//! # Layout
//! - `api`: the requests and responses front ends translate to and from.
//! - `membership`: one group's membership state machine; pure, time is a parameter.
//! - `consumer`: one consumer-protocol (KIP-848) group: server-side assignment handed out
//!   by heartbeat; pure, time is a parameter.
//! - `offsets`: one group's committed offsets and their expiry; pure.
//! - `records`: the byte layout of `__consumer_offsets` records.
//! - `coordinator`: the driver: parked requests, the tick, appends, replay, compaction.
//! - `error`: [`GroupError`], one variant per Kafka error code a client acts on.

pub mod api;
mod consumer;
mod coordinator;
mod error;
mod membership;
mod offsets;
mod records;

pub use consumer::{ConsumerGroupConfig, ASSIGNORS};
pub use coordinator::{
    system_clock, Clock, CoordinatorConfig, GroupCoordinator, TopicSource, MAX_METADATA_BYTES,
};
pub use error::GroupError;
pub use membership::{GroupConfig, GroupState};
pub(crate) use records::partition_for;

use crate::{Broker, BrokerError};

/// The internal topic holding committed offsets and group membership.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of `__consumer_offsets`; fixed once created (a group's partition is a hash).
pub const OFFSETS_PARTITIONS: i32 = 8;

impl Broker {
    /// Creates `__consumer_offsets` if missing and replays it into the coordinator.
    pub(crate) fn open_groups(&self) -> Result<(), BrokerError> {
        let topic = self.internal_topic(OFFSETS_TOPIC, OFFSETS_PARTITIONS, true)?;
        let logs = topic.partitions.iter().map(|p| p.log.clone()).collect();
        self.groups().load(logs)?;
        Ok(())
    }
}
