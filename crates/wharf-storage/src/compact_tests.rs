//! The cleaner against a model: the latest record per key survives at its original offset,
//! tombstones go after `delete.retention.ms`, other logs of the shard are untouched, and a
//! power cut at any step of a segment swap leaves the old or the new segment.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};

use crate::sim::{PowerCut, SimFs};
use crate::{clock, Durability, FileSystem, LogConfig, RealFs, Storage, StorageConfig, SwapStep};

type Value = Option<Vec<u8>>;
/// offset → (key, value)
type Model = BTreeMap<i64, (Vec<u8>, Value)>;

const KEYS: usize = 50;
const RECORDS: usize = 2_000;
const COMPACTED: u64 = 1;
const PLAIN: u64 = 2;

fn config(dir: &Path, fs: Arc<dyn FileSystem>) -> StorageConfig {
    let mut c = StorageConfig::new(dir);
    c.shards = 1;
    c.segment_bytes = 4096;
    c.retention_check_interval = Duration::from_secs(3600);
    c.fs = fs;
    c
}

fn compacted_config() -> LogConfig {
    LogConfig {
        retention_ms: -1,
        delete: false,
        compact: true,
        delete_retention_ms: i64::MAX / 4,
        ..LogConfig::default()
    }
}

fn plain_config() -> LogConfig {
    LogConfig {
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn batch(records: &[(Vec<u8>, Value)], ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(ts);
    for (k, v) in records {
        b.push(Some(k), v.as_deref(), &[], ts);
    }
    Bytes::from(b.build())
}

/// Every record of a log, read from its start: offset → (key, value). Offsets must rise.
fn read_all(storage: &Storage, id: u64) -> Model {
    let log = storage.log(id).unwrap();
    let mut out = Model::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let read = log.read(offset, 1 << 20).unwrap();
        let mut at = 0;
        let mut progressed = false;
        while at < read.records.len() {
            let h = BatchHeader::parse_checked(&read.records[at..]).unwrap();
            for r in RecordIter::new(&h).unwrap() {
                let r = r.unwrap();
                if r.offset >= offset {
                    let key = r.key.unwrap_or_default().to_vec();
                    let prev = out.insert(r.offset, (key, r.value.map(<[u8]>::to_vec)));
                    assert!(prev.is_none(), "offset {} read twice", r.offset);
                }
            }
            offset = offset.max(h.last_offset() + 1);
            progressed = true;
            at += h.len();
        }
        assert!(progressed, "no batch at offset {offset}");
    }
    out
}

/// Writes the story: RECORDS updates over KEYS keys (in batches of 10, each followed by a
/// small batch of the plain log), then tombstones for keys 0..5, then filler for the plain
/// log until the segment rolls, then the compacted log's last batch in the new segment.
async fn write_story(storage: &Storage) -> (Model, Model) {
    let compacted = storage.create_log(COMPACTED, compacted_config());
    let plain = storage.create_log(PLAIN, plain_config());
    let now = clock::now_ms();
    let (mut model, mut plain_model) = (Model::new(), Model::new());
    let mut pending = Vec::new();
    for i in 0..RECORDS {
        pending.push((
            format!("key-{}", i % KEYS).into_bytes(),
            Some(format!("value-{i}").into_bytes()),
        ));
        if pending.len() == 10 {
            let info = compacted
                .append(batch(&pending, now), Durability::Synced)
                .await
                .unwrap();
            for (n, r) in pending.drain(..).enumerate() {
                model.insert(info.base_offset + n as i64, r);
            }
            let r = (b"p".to_vec(), Some(format!("plain-{i}").into_bytes()));
            let info = plain
                .append(batch(std::slice::from_ref(&r), now), Durability::Synced)
                .await
                .unwrap();
            plain_model.insert(info.base_offset, r);
        }
    }
    let tombstones: Vec<_> = (0..5)
        .map(|k| (format!("key-{k}").into_bytes(), None))
        .collect();
    let info = compacted
        .append(batch(&tombstones, now), Durability::Synced)
        .await
        .unwrap();
    for (n, r) in tombstones.into_iter().enumerate() {
        model.insert(info.base_offset + n as i64, r);
    }
    let segments = |s: &Storage| s.segment_ids(0).len();
    let before = segments(storage);
    let mut i = 0;
    while segments(storage) == before {
        let r = (b"f".to_vec(), Some(vec![b'x'; 500]));
        let info = plain
            .append(batch(std::slice::from_ref(&r), now), Durability::Synced)
            .await
            .unwrap();
        plain_model.insert(info.base_offset, r);
        i += 1;
        assert!(i < 100, "the segment never rolled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = vec![(b"end".to_vec(), Some(b"last".to_vec()))];
    let info = compacted
        .append(batch(&last, now), Durability::Synced)
        .await
        .unwrap();
    model.insert(info.base_offset, last[0].clone());
    (model, plain_model)
}

/// The model after compaction: the latest record per key, tombstones only when kept.
fn compacted(model: &Model, keep_tombstones: bool) -> Model {
    let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (offset, (key, _)) in model {
        latest.insert(key.clone(), *offset);
    }
    latest
        .values()
        .map(|o| (*o, model[o].clone()))
        .filter(|(_, (_, v))| keep_tombstones || v.is_some())
        .collect()
}

/// Each record read is the one written at its offset; nothing else.
fn assert_subset(read: &Model, model: &Model, context: &str) {
    for (offset, record) in read {
        assert_eq!(
            model.get(offset),
            Some(record),
            "{context}: offset {offset}"
        );
    }
}

fn shard_bytes(fs: &dyn FileSystem, dir: &Path) -> u64 {
    let shard = dir.join("shards").join("0");
    fs.list_dir(&shard)
        .unwrap()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| fs.open(p, false).unwrap().size().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_latest_record_per_key_then_drops_expired_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn FileSystem> = RealFs::shared();
    let storage = Storage::open(config(dir.path(), fs.clone())).unwrap();
    let (model, plain_model) = write_story(&storage).await;
    let log = storage.log(COMPACTED).unwrap();
    let high_watermark = log.high_watermark();
    assert_eq!(read_all(&storage, COMPACTED), model);

    // min.compaction.lag.ms: nothing old enough yet.
    log.set_config(LogConfig {
        min_compaction_lag_ms: 3_600_000,
        ..compacted_config()
    });
    assert_eq!(storage.run_compaction().segments_rewritten, 0);
    assert_eq!(read_all(&storage, COMPACTED), model);
    log.set_config(compacted_config());

    let bytes_before = shard_bytes(&*fs, dir.path());
    let stats = storage.run_compaction();
    assert!(stats.segments_rewritten > 0, "{stats:?}");
    assert!(stats.bytes_after < stats.bytes_before, "{stats:?}");
    assert!(shard_bytes(&*fs, dir.path()) < bytes_before);
    let expected = compacted(&model, true);
    assert_eq!(read_all(&storage, COMPACTED), expected);
    assert_eq!(expected.len(), KEYS + 1);
    assert_eq!(
        read_all(&storage, PLAIN),
        plain_model,
        "the other log is untouched"
    );
    assert_eq!(log.high_watermark(), high_watermark);

    // Nothing new is dirty: the next pass rewrites nothing.
    assert_eq!(storage.run_compaction().segments_rewritten, 0);

    // delete.retention.ms passed: the tombstones go.
    log.set_config(LogConfig {
        delete_retention_ms: 0,
        ..compacted_config()
    });
    assert!(storage.run_compaction().segments_rewritten > 0);
    let expected = compacted(&model, false);
    assert_eq!(read_all(&storage, COMPACTED), expected);
    assert_eq!(expected.len(), KEYS + 1 - 5);
    storage.shutdown();

    // A restart reads the compacted segments through their new index files.
    let storage = Storage::open(config(dir.path(), fs)).unwrap();
    let log = storage.create_log(COMPACTED, compacted_config());
    storage.create_log(PLAIN, plain_config());
    assert_eq!(read_all(&storage, COMPACTED), expected);
    assert_eq!(read_all(&storage, PLAIN), plain_model);
    assert_eq!(log.high_watermark(), high_watermark);
    assert_eq!(
        log.log_start_offset(),
        0,
        "the first batch keeps the log start"
    );
    let info = log
        .append(
            batch(&[(b"k".to_vec(), Some(b"v".to_vec()))], 1),
            Durability::Synced,
        )
        .await
        .unwrap();
    assert_eq!(info.base_offset, high_watermark, "offsets are never reused");
    storage.shutdown();
}

/// Appends `records` to the log (batches of 10) at `ts`, then unique-key filler until the
/// shard's segment rolls; returns what was written.
async fn append_and_roll(
    storage: &Storage,
    records: &[(Vec<u8>, Value)],
    ts: i64,
    tag: &str,
) -> Model {
    let log = storage.log(COMPACTED).unwrap();
    let mut model = Model::new();
    let mut push = async |chunk: &[(Vec<u8>, Value)]| {
        let info = log
            .append(batch(chunk, ts), Durability::Synced)
            .await
            .unwrap();
        for (n, r) in chunk.iter().enumerate() {
            model.insert(info.base_offset + n as i64, r.clone());
        }
    };
    for chunk in records.chunks(10) {
        push(chunk).await;
    }
    let before = storage.segment_ids(0).len();
    let mut i = 0;
    while storage.segment_ids(0).len() == before {
        let fill = [(
            format!("fill-{tag}-{i}").into_bytes(),
            Some(vec![b'x'; 400]),
        )];
        push(&fill).await;
        i += 1;
        assert!(i < 100, "the segment never rolled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_segments_go_and_max_compaction_lag_forces_a_clean() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn FileSystem> = RealFs::shared();
    let storage = Storage::open(config(dir.path(), fs.clone())).unwrap();
    let log = storage.create_log(COMPACTED, compacted_config());
    let ts = clock::now_ms() - 10_000;
    let updates: Vec<_> = (0..RECORDS)
        .map(|i| {
            let key = format!("key-{}", i % KEYS).into_bytes();
            (key, Some(format!("value-{i}").into_bytes()))
        })
        .collect();
    let mut model = append_and_roll(&storage, &updates, ts, "a").await;
    let segments = storage.segment_ids(0).len();
    assert!(storage.run_compaction().segments_rewritten > 0);
    assert!(
        storage.segment_ids(0).len() < segments,
        "emptied segments are deleted"
    );
    assert_eq!(read_all(&storage, COMPACTED), compacted(&model, true));

    // A little new data: below min.cleanable.dirty.ratio 1.0, nothing is cleaned ...
    let more: Vec<_> = (0..10)
        .map(|i| (b"key-1".to_vec(), Some(format!("again-{i}").into_bytes())))
        .collect();
    model.extend(append_and_roll(&storage, &more, ts, "b").await);
    log.set_config(LogConfig {
        min_cleanable_dirty_ratio: 1.0,
        ..compacted_config()
    });
    assert_eq!(storage.run_compaction().segments_rewritten, 0);
    // ... until a dirty record is older than max.compaction.lag.ms.
    log.set_config(LogConfig {
        min_cleanable_dirty_ratio: 1.0,
        max_compaction_lag_ms: 1_000,
        ..compacted_config()
    });
    assert!(storage.run_compaction().segments_rewritten > 0);
    let expected = compacted(&model, true);
    let read = read_all(&storage, COMPACTED);
    let show = |m: &Model, other: &Model| -> Vec<(i64, String)> {
        m.iter()
            .filter(|(o, _)| !other.contains_key(o))
            .map(|(o, (k, _))| (*o, String::from_utf8_lossy(k).into_owned()))
            .collect()
    };
    assert_eq!(
        read,
        expected,
        "extra {:?}, missing {:?}",
        show(&read, &expected),
        show(&expected, &read)
    );
    storage.shutdown();

    let storage = Storage::open(config(dir.path(), fs)).unwrap();
    assert_eq!(read_all(&storage, COMPACTED), expected);
    assert_eq!(storage.log(COMPACTED).unwrap().log_start_offset(), 0);
    storage.shutdown();
}

/// A power cut right after each step of the swap, in each cut mode: after recovery the log
/// holds every record that must survive, each at its offset, nothing read twice, and a
/// second pass completes the compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_a_swap_keeps_the_old_or_the_new_segment() {
    let dir = Path::new("/sim/data");
    let steps = [SwapStep::Written, SwapStep::IndexRemoved, SwapStep::Renamed];
    let mut round = 0u64;
    for step in steps {
        for mode in [
            PowerCut::LoseUnsynced,
            PowerCut::KeepUnsynced,
            PowerCut::Random { seed: round },
        ] {
            round += 1;
            let context = format!("cut after {step:?} ({mode:?})");
            let fs = SimFs::new(dir);
            let shared: Arc<dyn FileSystem> = Arc::new(fs.clone());
            let storage = Storage::open(config(dir, shared.clone())).unwrap();
            let (model, plain_model) = write_story(&storage).await;
            let high_watermark = storage.log(COMPACTED).unwrap().high_watermark();
            let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                storage.run_compaction_with(&|at| {
                    if at == step {
                        fs.power_cut(mode);
                        panic!("power cut");
                    }
                })
            }));
            assert!(
                crashed.is_err(),
                "{context}: the swap never reached its step"
            );
            storage.shutdown();

            let storage = Storage::open(config(dir, shared.clone())).unwrap();
            storage.create_log(COMPACTED, compacted_config());
            storage.create_log(PLAIN, plain_config());
            let read = read_all(&storage, COMPACTED);
            assert_subset(&read, &model, &context);
            for (offset, record) in compacted(&model, true) {
                assert_eq!(read.get(&offset), Some(&record), "{context}: lost {offset}");
            }
            assert_eq!(read_all(&storage, PLAIN), plain_model, "{context}");
            let log = storage.log(COMPACTED).unwrap();
            assert_eq!(log.high_watermark(), high_watermark, "{context}");
            storage.run_compaction();
            assert_eq!(
                read_all(&storage, COMPACTED),
                compacted(&model, true),
                "{context}: after a full pass"
            );
            storage.shutdown();
        }
    }
}

/// A read that found its batch before a swap finishes on the old file; a read after the
/// swap finds the same record at its new place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_a_swap_see_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn FileSystem> = RealFs::shared();
    let storage = Storage::open(config(dir.path(), fs)).unwrap();
    let (model, _) = write_story(&storage).await;
    let latest = compacted(&model, true);
    let reads = std::sync::Mutex::new(Vec::new());
    storage.run_compaction_with(&|_| {
        reads.lock().unwrap().push(read_all(&storage, COMPACTED));
    });
    for read in reads.into_inner().unwrap() {
        assert_subset(&read, &model, "during the swap");
        for offset in latest.keys() {
            assert!(read.contains_key(offset), "lost {offset} during the swap");
        }
    }
    storage.shutdown();
}

/// The ADR 0015 measurement (opt-in: `WHARF_COMPACTION_BENCH=1`): space before and after,
/// cleaner throughput, and the slowest acks=all append of another log on the same shard
/// while the cleaner runs against the same without it. Prints figures; asserts only results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::items_after_statements, clippy::cast_precision_loss)] // byte counts ≪ 2^52
async fn measure_compaction() {
    if std::env::var("WHARF_COMPACTION_BENCH").is_err() {
        return;
    }
    let records: usize = std::env::var("WHARF_COMPACTION_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let keys = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn FileSystem> = RealFs::shared();
    let mut cfg = config(dir.path(), fs.clone());
    cfg.segment_bytes = 64 << 20;
    let storage = Storage::open(cfg).unwrap();
    let compacted_log = storage.create_log(COMPACTED, compacted_config());
    let plain = storage.create_log(PLAIN, plain_config());
    let now = clock::now_ms();
    let value = vec![b'v'; 100];
    let mut model: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for chunk in 0..records / 100 {
        let batch_records: Vec<_> = (0..100)
            .map(|n| {
                let i = chunk * 100 + n;
                (
                    format!("key-{}", i % keys).into_bytes(),
                    Some(value.clone()),
                )
            })
            .collect();
        let info = compacted_log
            .append(batch(&batch_records, now), Durability::Written)
            .await
            .unwrap();
        for (n, (k, _)) in batch_records.iter().enumerate() {
            model.insert(k.clone(), info.base_offset + n as i64);
        }
        if chunk % 5 == 0 {
            let r = [(b"p".to_vec(), Some(value.clone()))];
            plain
                .append(batch(&r, now), Durability::Written)
                .await
                .unwrap();
        }
    }
    // Seal the data: the compacted log's last batch goes to a fresh segment.
    storage.flush().await.unwrap();
    let before_segments = storage.segment_ids(0).len();
    let filler = [(b"f".to_vec(), Some(vec![b'x'; 1 << 20]))];
    while storage.segment_ids(0).len() == before_segments {
        plain
            .append(batch(&filler, now), Durability::Synced)
            .await
            .unwrap();
    }
    let last = [(b"end".to_vec(), Some(b"last".to_vec()))];
    compacted_log
        .append(batch(&last, now), Durability::Synced)
        .await
        .unwrap();
    let bytes_before = shard_bytes(&*fs, dir.path());
    let log_before = compacted_log.size_bytes();

    // The slowest acks=all append of the plain log over `rounds` appends.
    async fn slowest(log: &crate::Log, rounds: usize) -> Duration {
        let mut worst = Duration::ZERO;
        for _ in 0..rounds {
            let started = std::time::Instant::now();
            let r = [(b"w".to_vec(), Some(vec![b'w'; 100]))];
            log.append(batch(&r, 1), Durability::Synced).await.unwrap();
            worst = worst.max(started.elapsed());
        }
        worst
    }
    let baseline = slowest(&plain, 200).await;
    let cleaner = {
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let stats = storage.run_compaction();
            (stats, started.elapsed())
        })
    };
    let mut during = Duration::ZERO;
    while !cleaner.is_finished() {
        during = during.max(slowest(&plain, 10).await);
    }
    let (stats, took) = cleaner.await.unwrap();
    let bytes_after = shard_bytes(&*fs, dir.path());
    // The ceiling: copying the same segment bytes (read, write, fdatasync) with no parsing.
    let copy_dir = tempfile::tempdir_in(dir.path()).unwrap();
    let started = std::time::Instant::now();
    let mut copied = 0u64;
    for entry in std::fs::read_dir(dir.path().join("shards").join("0")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let to = copy_dir.path().join(path.file_name().unwrap());
            copied += std::fs::copy(&path, &to).unwrap();
            std::fs::File::open(&to).unwrap().sync_data().unwrap();
        }
    }
    let copy_rate = copied as f64 / started.elapsed().as_secs_f64();
    let read = read_all(&storage, COMPACTED);
    assert_eq!(read.len(), keys + 1);
    for offset in model.values() {
        assert!(read.contains_key(offset), "lost {offset}");
    }
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    println!(
        "records {records} over {keys} keys; compacted log {:.1} MiB -> {:.2} MiB; shard bytes {:.1} MiB -> {:.1} MiB; \
         rewritten {:.1} MiB -> {:.1} MiB in {:.2} s ({:.0} MiB/s read); \
         slowest acks=all append of another log: {:.1} ms idle, {:.1} ms while cleaning; \
         plain copy of the segments {:.0} MiB/s (cleaner/copy = {:.2})",
        mib(log_before),
        mib(compacted_log.size_bytes()),
        mib(bytes_before),
        mib(bytes_after),
        mib(stats.bytes_before),
        mib(stats.bytes_after),
        took.as_secs_f64(),
        mib(stats.bytes_before) / took.as_secs_f64(),
        baseline.as_secs_f64() * 1e3,
        during.as_secs_f64() * 1e3,
        copy_rate / f64::from(1u32 << 20),
        (stats.bytes_before as f64 / took.as_secs_f64()) / copy_rate,
    );
    storage.shutdown();
}

/// A log whose last batch is an expired tombstone keeps that batch: recovery takes the next
/// offset from the last batch, so removing it would hand out its offset again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_tombstone_in_the_last_batch_keeps_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn FileSystem> = RealFs::shared();
    let storage = Storage::open(config(dir.path(), fs.clone())).unwrap();
    let expiring = LogConfig {
        delete_retention_ms: 0,
        ..compacted_config()
    };
    let log = storage.create_log(COMPACTED, expiring);
    let plain = storage.create_log(PLAIN, plain_config());
    for value in [Some(b"v".to_vec()), None] {
        log.append(batch(&[(b"k".to_vec(), value)], 1), Durability::Synced)
            .await
            .unwrap();
    }
    let before = storage.segment_ids(0).len();
    while storage.segment_ids(0).len() == before {
        let fill = [(b"f".to_vec(), Some(vec![b'x'; 500]))];
        plain
            .append(batch(&fill, 1), Durability::Synced)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    storage.run_compaction();
    storage.shutdown();
    let storage = Storage::open(config(dir.path(), fs)).unwrap();
    let log = storage.create_log(COMPACTED, expiring);
    assert_eq!(log.high_watermark(), 2);
    let info = log
        .append(
            batch(&[(b"k".to_vec(), Some(b"w".to_vec()))], 1),
            Durability::Synced,
        )
        .await
        .unwrap();
    assert_eq!(info.base_offset, 2, "offsets are never reused");
    storage.shutdown();
}

/// Kafka's cleaner on transactions: an aborted transaction's data goes, a committed one's is
/// compacted like other data, an open one's and every marker stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_data_goes_committed_data_compacts_open_data_stays() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), RealFs::shared())).unwrap();
    let log = storage.create_log(COMPACTED, compacted_config());
    let plain = storage.create_log(PLAIN, plain_config());
    let txn = |records: &[(&str, &str)], seq: i32| {
        let mut b = BatchBuilder::new(1).transactional().producer(7, 0, seq);
        for (k, v) in records {
            b.push(Some(k.as_bytes()), Some(v.as_bytes()), &[], 1);
        }
        Bytes::from(b.build())
    };
    let marker = |commit: bool| {
        let mut b = BatchBuilder::new(1)
            .control()
            .transactional()
            .producer(7, 0, -1);
        b.push(
            Some(&[0, 0, 0, u8::from(commit)]),
            Some(&[0, 0, 0, 0, 0, 0]),
            &[],
            1,
        );
        Bytes::from(b.build())
    };
    let mut offsets = Vec::new();
    for bytes in [
        txn(&[("t1", "aborted-1"), ("t2", "aborted-2")], 0), // 0, 1
        marker(false),                                       // 2
        txn(&[("t1", "committed")], 2),                      // 3
        marker(true),                                        // 4
        batch(&[(b"t1".to_vec(), Some(b"plain".to_vec()))], 1), // 5
        txn(&[("t3", "open")], 3),                           // 6
    ] {
        offsets.push(
            log.append(bytes, Durability::Synced)
                .await
                .unwrap()
                .base_offset,
        );
    }
    assert_eq!(offsets, [0, 2, 3, 4, 5, 6]);
    let before = storage.segment_ids(0).len();
    while storage.segment_ids(0).len() == before {
        let fill = [(b"f".to_vec(), Some(vec![b'x'; 500]))];
        plain
            .append(batch(&fill, 1), Durability::Synced)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let end = [(b"end".to_vec(), Some(b"last".to_vec()))];
    log.append(batch(&end, 1), Durability::Synced)
        .await
        .unwrap();
    assert!(storage.run_compaction().segments_rewritten > 0);
    let read = read_all(&storage, COMPACTED);
    let offsets: Vec<i64> = read.keys().copied().collect();
    // 0, 1 aborted; 3 superseded by 5; markers 2 and 4, plain 5, open 6 and the end stay.
    assert_eq!(offsets, [2, 4, 5, 6, 7], "{read:?}");
    assert_eq!(read[&6].1.as_deref(), Some(&b"open"[..]));
    storage.shutdown();
}
