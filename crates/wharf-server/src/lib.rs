//! The `wharf` binary's library: configuration layering, wiring of storage, broker and the
//! Kafka listener, signals, and the CLI commands that talk to a running broker.
//!
//! # Layout
//! - `settings`: embedded defaults ← TOML file ← `WHARF_*` environment ← flags.
//! - `server`: starts everything, serves until SIGTERM/SIGINT, flushes on the way out.
//! - `admin_http`: the admin HTTP listener: `/health`, `/ready`, `/metrics`, `/v1/` JSON.
//! - `metrics`: the Prometheus recorder and the gauges computed at scrape time.
//! - `lag`: consumer lag from the broker's committed offsets and high watermarks.
//! - `topic_cmd`: `wharf topic create|list|describe|alter|delete`.
//! - `group_cmd`: `wharf group list|describe|delete|reset-offsets`.
//! - `share_cmd`: `wharf share list|describe|reset-offsets`.
//! - `txn_cmd`: `wharf txn list|describe`.
//! - `quota_cmd`: `wharf quota set|remove|describe`.
//! - `amqp_cmd`: `wharf amqp list exchanges|queues|bindings|consumers` and `/v1/amqp/` JSON.
//! - `storage_cmd`: `wharf storage verify`.
//! - `cluster`, `controller`: a node of a cluster (ADR 0012): shard groups, the cluster view,
//!   and the controller group that commits topic metadata.
//! - `cluster_cmd`: `wharf cluster status` and the `/v1/cluster` status JSON.
//! - `membership`: `wharf cluster add-node|remove-node` (ADR 0019), served on any node.

pub mod admin_http;
pub mod amqp_cmd;
pub mod cluster;
pub mod cluster_cmd;
pub mod controller;
pub mod group_cmd;
pub mod lag;
pub mod membership;
pub mod metrics;
pub mod quota_cmd;
pub mod server;
pub mod settings;
pub mod share_cmd;
pub mod storage_cmd;
pub mod topic_cmd;
pub mod txn_cmd;
