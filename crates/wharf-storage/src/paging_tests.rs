//! Sealed-segment indexes paged out of memory (ADR 0018): reads into evicted and damaged
//! indexes, and the opt-in memory measurement (`WHARF_INDEX_RSS`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};

use crate::{Durability, LogConfig, Position, ShardLog, Storage, StorageConfig, StorageError};

fn small_segments(dir: &std::path::Path, cache_bytes: u64) -> StorageConfig {
    let mut c = StorageConfig::new(dir);
    c.shards = 1;
    c.segment_bytes = 1024;
    c.retention_check_interval = Duration::from_secs(3600);
    c.sealed_index_cache_bytes = cache_bytes;
    c
}

fn batch(value: &str, timestamp: i64) -> Bytes {
    let mut b = BatchBuilder::new(timestamp);
    b.push(Some(b"k"), Some(value.as_bytes()), &[], timestamp);
    Bytes::from(b.build())
}

fn values_of(bytes: &[u8]) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = BatchHeader::parse_checked(&bytes[at..]).unwrap();
        for r in RecordIter::new(&h).unwrap() {
            let r = r.unwrap();
            out.push((
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
        at += h.len();
    }
    out
}

/// Every record of a log from its start, read `max_bytes` at a time.
fn read_all(
    storage: &Storage,
    id: u64,
    max_bytes: usize,
) -> Result<Vec<(i64, String)>, StorageError> {
    let log = storage.log(id).unwrap();
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let r = log.read(offset, max_bytes)?;
        let got: Vec<_> = values_of(&r.records)
            .into_iter()
            .filter(|(o, _)| *o >= offset)
            .collect();
        offset = got.last().unwrap().0 + 1;
        out.extend(got);
    }
    Ok(out)
}

/// Fills logs 1..=3 of a one-shard storage with small segments: `rounds` one-record batches
/// each, interleaved. Returns the model: log → (offset, value).
async fn fill(storage: &Storage, rounds: usize) -> BTreeMap<u64, Vec<(i64, String)>> {
    let mut model: BTreeMap<u64, Vec<(i64, String)>> = BTreeMap::new();
    for round in 0..rounds {
        for id in 1..=3u64 {
            let log = storage.create_log(id, keep_forever());
            let value = format!("log{id}-{round}");
            let info = log
                .append(batch(&value, 1_000 + round as i64), Durability::Written)
                .await
                .unwrap();
            model.entry(id).or_default().push((info.base_offset, value));
        }
    }
    model
}

/// Reads into sealed segments whose index was never loaded or was evicted (a budget of 0
/// caches nothing; a small one evicts): every record comes back, and a sealed segment's
/// batches are not kept in memory (one resident run per log: the active segment's).
#[tokio::test]
async fn reads_of_paged_out_sealed_segments_match_the_model() {
    for budget in [0, 4096, 64 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(small_segments(dir.path(), budget)).unwrap();
        let model = fill(&storage, 200).await;
        assert!(storage.segment_ids(0).len() > 10, "many sealed segments");
        // The syncer seals rolled segments behind the writer; a flush waits for them.
        storage.flush().await.unwrap();
        storage.run_retention(); // pages out what the writer's pushes left resident
        for id in model.keys() {
            let (runs, resident) = storage.run_counts(*id);
            assert!(runs > 10, "log {id} spans the segments: {runs} runs");
            assert!(resident <= 1, "log {id}: {resident} runs resident");
        }
        for max_bytes in [1, 300, 1 << 20] {
            storage.pager().clear();
            for (id, expected) in &model {
                assert_eq!(
                    &read_all(&storage, *id, max_bytes).unwrap(),
                    expected,
                    "budget {budget}"
                );
            }
            assert!(storage.pager().cached_bytes() <= budget);
        }
        storage.shutdown();
        // After a restart every sealed run starts paged.
        let storage = Storage::open(small_segments(dir.path(), budget)).unwrap();
        for (id, expected) in &model {
            assert!(storage.run_counts(*id).1 <= 1);
            assert_eq!(&read_all(&storage, *id, 1 << 20).unwrap(), expected);
        }
        storage.shutdown();
    }
}

/// Timestamp and size searches answer as a scan of every batch would when the batches are
/// in paged-out sealed segments, also after the start moved into the middle of one.
#[tokio::test]
async fn searches_and_sizes_over_paged_runs_match_a_linear_scan() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(small_segments(dir.path(), 0)).unwrap();
    let log = storage.create_log(1, keep_forever());
    let mut model: Vec<(i64, i64)> = Vec::new(); // (offset, timestamp)
    let mut seed = 7u64;
    let mut batch_len = 0;
    for i in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let ts = 1_000 + i * 10 + (seed % 400) as i64 - 200;
        let b = batch("v", ts);
        batch_len = b.len() as u64;
        let info = log.append(b, Durability::Written).await.unwrap();
        model.push((info.base_offset, ts));
    }
    storage.flush().await.unwrap(); // every rolled segment sealed
    storage.run_retention();
    assert!(storage.run_counts(1).0 > 10);
    assert!(storage.run_counts(1).1 <= 1);
    for start in [0, 37, 150] {
        log.delete_records(start).unwrap();
        assert_eq!(
            log.size_bytes(),
            (300 - start as u64) * batch_len,
            "start {start}"
        );
        for probe in (0..60).map(|i| 700 + i * 60) {
            let expected = model
                .iter()
                .find(|(o, t)| *o >= start && *t >= probe)
                .map(|(o, _)| *o);
            let got = log.offset_for_timestamp(probe).unwrap().map(|m| m.offset);
            assert_eq!(got, expected, "start {start}, timestamp {probe}");
        }
    }
    log.set_config(LogConfig {
        retention_bytes: (batch_len * 40 + 7) as i64,
        ..keep_forever()
    });
    storage.run_retention();
    assert_eq!(log.log_start_offset(), 300 - 40);
    assert_eq!(log.size_bytes(), 40 * batch_len);
    storage.shutdown();
}

/// A sealed segment's index file damaged or removed while the broker runs: the segment is
/// scanned instead and every read is right; with the segment damaged too, reads into it are
/// refused (never a wrong record).
#[tokio::test]
async fn damaged_sealed_index_is_rescanned_and_a_damaged_segment_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(small_segments(dir.path(), 64 << 20)).unwrap();
    let model = fill(&storage, 100).await;
    storage.run_retention();
    let shard = dir.path().join("shards/0");
    let index0 = shard.join("00000000000000000000.index");
    let index1 = shard.join("00000000000000000001.index");
    // A flipped byte in an entry's position field (the CRC no longer matches).
    let mut bytes = std::fs::read(&index0).unwrap();
    bytes[16 + 32] ^= 0x08;
    std::fs::write(&index0, &bytes).unwrap();
    std::fs::remove_file(&index1).unwrap();
    storage.pager().clear();
    for (id, expected) in &model {
        assert_eq!(&read_all(&storage, *id, 1).unwrap(), expected);
    }
    // Now segment 0 itself is damaged: a byte inside its second batch.
    let seg0 = shard.join("00000000000000000000.log");
    let mut seg = std::fs::read(&seg0).unwrap();
    let first_len = u32::from_le_bytes(seg[0..4].try_into().unwrap()) as usize + 4;
    seg[first_len + 30] ^= 0x40;
    std::fs::write(&seg0, &seg).unwrap();
    storage.pager().clear();
    let mut refused = 0;
    for (id, expected) in &model {
        let log = storage.log(*id).unwrap();
        for (offset, value) in expected {
            match log.read(*offset, 1) {
                Ok(r) => assert_eq!(values_of(&r.records)[0], (*offset, value.clone())),
                Err(StorageError::Corrupt { .. }) => refused += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    assert!(refused > 0, "reads into the damaged segment are refused");
    storage.shutdown();
}

/// A replica's truncation into a sealed segment whose run is paged out: the run comes back
/// into memory, offsets move back, appends continue there, and a restart agrees.
#[tokio::test]
async fn truncation_into_a_paged_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(small_segments(dir.path(), 64 << 20)).unwrap();
    let shard = storage.shard_log(0).unwrap();
    let log = storage.create_log(1, keep_forever());
    let mut ends: Vec<(i64, String, Position)> = Vec::new();
    for i in 0..60 {
        let value = format!("v{i}");
        let appended = shard
            .append(&log, batch(&value, 1_000), Durability::Synced)
            .unwrap()
            .wait_appended()
            .await
            .unwrap();
        ends.push((appended.info.base_offset, value, appended.position));
    }
    storage.run_retention();
    let segments = storage.segment_ids(0);
    assert!(segments.len() > 4);
    // Cut after an entry in the middle of an older, sealed segment.
    let cut_at = ends
        .iter()
        .position(|e| e.2.segment == segments[2])
        .unwrap()
        + 1;
    assert_eq!(
        ends[cut_at].2.segment, segments[2],
        "the cut is inside the segment"
    );
    assert_eq!(
        storage.run_counts(1).1,
        1,
        "only the active run is resident"
    );
    shard.truncate(ends[cut_at].2).await.unwrap();
    ends.truncate(cut_at + 1);
    assert_eq!(log.high_watermark(), cut_at as i64 + 1);
    let expected: Vec<(i64, String)> = ends.iter().map(|e| (e.0, e.1.clone())).collect();
    assert_eq!(read_all(&storage, 1, 1).unwrap(), expected);
    let info = log
        .append(batch("after", 1_000), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(info.base_offset, cut_at as i64 + 1);
    let mut expected = expected;
    expected.push((info.base_offset, "after".into()));
    assert_eq!(read_all(&storage, 1, 1 << 20).unwrap(), expected);
    storage.shutdown();
    let storage = Storage::open(small_segments(dir.path(), 64 << 20)).unwrap();
    assert_eq!(read_all(&storage, 1, 1).unwrap(), expected);
    storage.shutdown();
}

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
    c.segment_bytes = env_or("WHARF_INDEX_RSS_SEGMENT_BYTES", c.segment_bytes);
    c.sealed_index_cache_bytes = env_or("WHARF_INDEX_RSS_CACHE_BYTES", c.sealed_index_cache_bytes);
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
///   bytes (1,000), round-robin, through 2 shards with 1 GiB segments
///   (`WHARF_INDEX_RSS_SEGMENT_BYTES`);
/// - `WHARF_INDEX_RSS=open WHARF_INDEX_RSS_DIR=D`: recovery, then one read of each log's
///   first offset (old data, in a sealed segment) twice: cold (index not loaded) and warm,
///   with `WHARF_INDEX_RSS_CACHE_BYTES` (64 MiB) for loaded sealed indexes.
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
