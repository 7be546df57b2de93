//! One file per Kafka API: each turns a decoded request into broker calls and a response.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_client_quotas;
pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod share_acknowledge;
pub mod share_fetch;
pub mod share_group_heartbeat;
pub mod sync_group;
pub mod txn_offset_commit;

use kafka_protocol::protocol::StrBytes;
use wharf_broker::BrokerError;

/// Resource type TOPIC in the config APIs.
pub const RESOURCE_TOPIC: i8 = 2;
/// Resource type BROKER in the config APIs.
pub const RESOURCE_BROKER: i8 = 4;
/// Resource type GROUP in the config APIs (share-group configs).
pub const RESOURCE_GROUP: i8 = 32;

/// Error code and message for a failed broker call.
pub fn error_parts(error: &BrokerError) -> (i16, Option<StrBytes>) {
    (
        crate::errors::code(error),
        Some(StrBytes::from_string(error.to_string())),
    )
}
