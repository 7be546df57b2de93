//! Dev-only helpers: start a real `wharf` broker process on a loopback port with a real data
//! directory (restartable, killable with SIGKILL), and librdkafka clients pointed at it.
//!
//! # Layout
//! - `BrokerProcess`: spawn, wait until the port accepts, kill -9, SIGTERM, restart.
//! - `clients`: rdkafka producer/consumer/admin builders with test-friendly settings.
//! - `cluster`: `TestCluster` (nodes 1..=n as child processes) and `FaultProxy` (a TCP proxy
//!   on every node-to-node path that a test cuts and heals).

#![allow(clippy::missing_errors_doc)]

mod clients;
mod cluster;
mod process;

pub use clients::{admin, base_consumer, create_topic, group_consumer, producer, watermarks};
pub use cluster::{metadata, FaultProxy, TestCluster};
pub use process::{free_port, BrokerProcess};
