//! Sealed-segment indexes paged out of memory (ADR 0018): reads into evicted and damaged
//! indexes, and the opt-in memory measurement (`WHARF_INDEX_RSS`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use wharf_record::BatchBuilder;

use crate::{Durability, LogConfig, Storage, StorageConfig};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn measure_config(dir: &std::path::Path) -> StorageConfig {
    let mut c = StorageConfig::new(dir);
    c.shards = 2;
    c.retention_check_interval = Duration::from_secs(3600);
    c
}

fn keep_forever() -> LogConfig {
    LogConfig {
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// The memory measurement of issue 16, opt-in. Two phases, each its own process so the
/// second one's RSS is not the first one's freed heap:
/// - `WHARF_INDEX_RSS=write WHARF_INDEX_RSS_DIR=D`: `WHARF_INDEX_RSS_LOGS` logs (10,000)
///   receive `WHARF_INDEX_RSS_GB` GB (10) of one-record batches of `WHARF_INDEX_RSS_VALUE`
///   bytes (1,000), round-robin, through 2 shards with 1 GiB segments;
/// - `WHARF_INDEX_RSS=open WHARF_INDEX_RSS_DIR=D`: recovery, then one read of each log's
///   first offset (old data, in a sealed segment) twice: cold (index not loaded) and warm.
///
/// Prints RSS (VmRSS, VmHWM) after each step; asserts only that reads return the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::cast_precision_loss)] // figures ≪ 2^52
async fn measure_index_rss() {
    let Ok(phase) = std::env::var("WHARF_INDEX_RSS") else {
        return;
    };
    let dir = std::path::PathBuf::from(
        std::env::var("WHARF_INDEX_RSS_DIR").expect("WHARF_INDEX_RSS_DIR names the data dir"),
    );
    let logs: u64 = env_or("WHARF_INDEX_RSS_LOGS", 10_000);
    let gb: f64 = env_or("WHARF_INDEX_RSS_GB", 10.0);
    let value_len: usize = env_or("WHARF_INDEX_RSS_VALUE", 1_000);
    let (rss, hwm) = rss_kib();
    println!("index-rss start: rss {rss} KiB hwm {hwm} KiB");
    if phase == "write" {
        let storage = Storage::open(measure_config(&dir)).unwrap();
        let handles: Vec<_> = (0..logs)
            .map(|id| storage.create_log(id, keep_forever()))
            .collect();
        let value = vec![b'v'; value_len];
        let mut b = BatchBuilder::new(crate::clock::now_ms());
        b.push(Some(b"key"), Some(&value), &[], crate::clock::now_ms());
        let batch = Bytes::from(b.build());
        let target = (gb * 1e9) as u64;
        let rounds = (target / (batch.len() as u64 * logs)).max(1);
        let started = Instant::now();
        for round in 0..rounds {
            let pending: Vec<_> = handles
                .iter()
                .map(|log| log.submit(batch.clone(), Durability::Written).unwrap())
                .collect();
            for p in pending {
                p.wait().await.unwrap();
            }
            if round % 50 == 0 {
                let (rss, hwm) = rss_kib();
                println!(
                    "index-rss write: round {round}/{rounds} bytes {} rss {rss} KiB hwm {hwm} KiB",
                    (round + 1) * batch.len() as u64 * logs
                );
            }
        }
        storage.flush().await.unwrap();
        let (rss, hwm) = rss_kib();
        println!(
            "index-rss written: {} batches of {} bytes in {:.1} s; rss {rss} KiB hwm {hwm} KiB",
            rounds * logs,
            batch.len(),
            started.elapsed().as_secs_f64()
        );
        storage.shutdown();
        return;
    }
    let started = Instant::now();
    let storage = Storage::open(measure_config(&dir)).unwrap();
    let (rss, hwm) = rss_kib();
    println!(
        "index-rss opened in {:.1} s: rss {rss} KiB hwm {hwm} KiB",
        started.elapsed().as_secs_f64()
    );
    let mut ids = storage.log_ids();
    ids.sort_unstable();
    for pass in ["cold", "warm"] {
        let started = Instant::now();
        for id in &ids {
            let log = storage.log(*id).unwrap();
            let r = log.read(0, 1).unwrap();
            let h = wharf_record::BatchHeader::parse_checked(&r.records).unwrap();
            assert_eq!(h.base_offset(), 0);
        }
        let per_read = started.elapsed().as_secs_f64() * 1e6 / ids.len().max(1) as f64;
        let (rss, hwm) = rss_kib();
        println!(
            "index-rss {pass} reads of offset 0 of {} logs: {per_read:.1} µs per read; rss {rss} KiB hwm {hwm} KiB",
            ids.len()
        );
    }
    storage.shutdown();
}
