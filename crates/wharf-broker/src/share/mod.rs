//! Share groups (KIP-932) over cursors: membership by heartbeat with the simple assignor,
//! share sessions with epochs, group configs (Kafka's `share.*`, Wharf's
//! `wharf.share.retry.backoff.ms`, KIP-1191's `errors.deadletterqueue.*`) persisted in
//! `__wharf_share_groups`, and the dead-letter step. Per-record state lives in the cursor of
//! each (group, topic, partition) (`crate::cursor`, owner `share/<group>`). No wire protocol:
//! `wharf-kafka` translates.
//!
//! # Layout
//! - `config`: the group configs, defaults, validation, the cursor config they make.
//! - `membership`: [`ShareGroup`], pure membership and the simple assignor.
//! - `session`: [`ShareSessions`], share sessions and their epochs.
//! - `dead_letter`: the `__dlq.errors.*` headers and the dead-letter step.
//! - `driver`: [`ShareCoordinator`] and the `Broker::share_*` calls.
//! - `error`: [`ShareError`].

pub mod config;
pub mod dead_letter;
mod driver;
mod error;
pub mod membership;
pub mod session;

pub use driver::{
    group_of, ResetTo, ShareCoordinator, ShareFetchAnswer, ShareFetchRequest,
    ShareGroupDescription, SharePartitionAnswer, SharePartitionRequest, SharePartitionState,
    HEARTBEAT_INTERVAL_MS, OWNER_PREFIX, SESSION_TIMEOUT_MS, SHARE_GROUPS_TOPIC,
};
pub use error::ShareError;
pub use membership::{Assignment, Beat, Member, ShareGroup};
pub use session::ShareSessions;
