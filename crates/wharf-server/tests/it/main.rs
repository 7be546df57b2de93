//! Integration tests: a real `wharf` process, a real data directory, real clients
//! (librdkafka through rdkafka, kcat, the `wharf` CLI, pika and amqplib for AMQP).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod admin;
mod admin_http;
mod amqp;
mod cli;
mod cluster;
mod cluster_faults;
mod cluster_queues;
mod cluster_status;
mod compaction;
mod consumer_protocol;
mod controller;
mod crash_loop;
mod dedup;
mod delay;
mod durability;
mod fetch_sessions;
mod full_disk;
mod groups;
mod half;
mod hostile;
mod idempotence;
mod kafka_contract;
mod kcat;
mod load;
mod membership;
mod metrics;
mod offsets;
mod quotas;
mod restart;
mod retention;
mod roundtrip;
mod share_groups;
mod transactions;

use std::time::{Duration, Instant};

use tempfile::TempDir;
use wharf_testkit::BrokerProcess;

pub fn wharf_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wharf")
}

/// A broker process on a fresh data directory (kept alive by the returned `TempDir`).
pub fn start_broker(settings: &[(&str, &str)]) -> (TempDir, BrokerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(wharf_bin(), &dir.path().join("data"), settings).unwrap();
    (dir, broker)
}

/// Polls `check` until it is true; panics with `what` after 60 s. For conditions that the
/// broker reaches asynchronously (retention), never to assert on speed.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}
