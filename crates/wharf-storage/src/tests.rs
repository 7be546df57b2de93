//! Storage against an in-memory model: appends across logs and shards, reads, restarts, torn
//! tails, retention and DeleteRecords.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};

use crate::{Durability, LogConfig, Storage, StorageConfig};

fn config(dir: &std::path::Path) -> StorageConfig {
    let mut c = StorageConfig::new(dir);
    c.shards = 2;
    c.retention_check_interval = Duration::from_secs(3600);
    // Preallocation on (ADR 0021), so every test here runs with zeros ahead of the writer.
    c.preallocate_bytes = 8 << 20;
    c
}

fn batch(values: &[&str], timestamp: i64) -> Bytes {
    let mut b = BatchBuilder::new(timestamp);
    for (i, v) in values.iter().enumerate() {
        b.push(Some(b"k"), Some(v.as_bytes()), &[], timestamp + i as i64);
    }
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

fn read_all(storage: &Storage, id: u64) -> Vec<(i64, String)> {
    let log = storage.log(id).unwrap();
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let r = log.read(offset, 1 << 20).unwrap();
        let got: Vec<_> = values_of(&r.records)
            .into_iter()
            .filter(|(o, _)| *o >= offset)
            .collect();
        offset = got.last().unwrap().0 + 1;
        out.extend(got);
    }
    out
}

#[tokio::test]
async fn appends_match_model_across_restart_and_roll() {
    let dir = tempfile::tempdir().unwrap();
    let mut model: BTreeMap<u64, Vec<(i64, String)>> = BTreeMap::new();
    {
        let mut cfg = config(dir.path());
        cfg.segment_bytes = 4096; // many rolls
        let storage = Storage::open(cfg).unwrap();
        for round in 0..60 {
            for id in 1..=5u64 {
                let log = storage.create_log(id, LogConfig::default());
                let values: Vec<String> = (0..3).map(|i| format!("log{id}-r{round}-{i}")).collect();
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let durability = if round % 2 == 0 {
                    Durability::Synced
                } else {
                    Durability::Written
                };
                let info = log
                    .append(batch(&refs, 1000 + round), durability)
                    .await
                    .unwrap();
                let entry = model.entry(id).or_default();
                assert_eq!(info.base_offset, entry.len() as i64);
                for v in values {
                    entry.push((entry.len() as i64, v));
                }
            }
        }
        for (id, expected) in &model {
            assert_eq!(&read_all(&storage, *id), expected);
        }
        storage.shutdown();
    }
    let storage = Storage::open(config(dir.path())).unwrap();
    for (id, expected) in &model {
        assert_eq!(
            storage.log(*id).unwrap().high_watermark(),
            expected.len() as i64
        );
        assert_eq!(&read_all(&storage, *id), expected);
    }
    // Appends continue at the recovered offsets.
    let info = storage
        .log(1)
        .unwrap()
        .append(batch(&["after"], 5), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(info.base_offset, 180);
}

#[tokio::test]
async fn torn_tail_is_truncated_to_last_whole_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    // The file ends where its entries end: the cut below tears the last one.
    cfg.preallocate_bytes = 0;
    // Current timestamps: a segment whose first batch is old would roll at restart.
    let now = crate::clock::now_ms();
    {
        let storage = Storage::open(cfg.clone()).unwrap();
        let log = storage.create_log(9, LogConfig::default());
        for i in 0..10 {
            log.append(batch(&[&format!("v{i}")], now), Durability::Synced)
                .await
                .unwrap();
        }
        storage.shutdown();
    }
    let seg = dir.path().join("shards/0/00000000000000000000.log");
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last entry in half, and append garbage after a flipped byte scenario.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 20).unwrap();
    drop(f);
    let storage = Storage::open(cfg.clone()).unwrap();
    let log = storage.log(9).unwrap();
    assert_eq!(log.high_watermark(), 9);
    assert_eq!(read_all(&storage, 9).last().unwrap().1, "v8");
    let info = log
        .append(batch(&["new"], now), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(info.base_offset, 9);
    storage.shutdown();
    // A flipped byte in the last entry: cut there too.
    let len = std::fs::metadata(&seg).unwrap().len();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[len as usize - 3] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let storage = Storage::open(cfg).unwrap();
    assert_eq!(storage.log(9).unwrap().high_watermark(), 9);
}

#[tokio::test]
async fn delete_records_and_retention_move_log_start_and_free_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    cfg.segment_bytes = 200;
    let storage = Storage::open(cfg.clone()).unwrap();
    let log = storage.create_log(1, LogConfig::default());
    for i in 0..20 {
        log.append(batch(&[&format!("v{i}")], 1_000 + i), Durability::Written)
            .await
            .unwrap();
    }
    storage.flush().await.unwrap();
    assert_eq!(log.delete_records(5).unwrap(), 5);
    assert!(log.read(4, 100).is_err());
    assert_eq!(read_all(&storage, 1).first().unwrap().0, 5);
    let seg_count = || {
        std::fs::read_dir(dir.path().join("shards/0"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count()
    };
    let before = seg_count();
    // Old timestamps (1970) expire under a 1 hour retention: everything goes.
    log.set_config(LogConfig {
        retention_ms: 3_600_000,
        ..LogConfig::default()
    });
    storage.run_retention();
    assert_eq!(log.log_start_offset(), 20);
    assert!(seg_count() < before, "expired sealed segments are deleted");
    storage.shutdown();
    // Offsets survive even though the data is gone.
    let storage = Storage::open(cfg).unwrap();
    let log = storage.log(1).unwrap();
    assert_eq!((log.log_start_offset(), log.high_watermark()), (20, 20));
}

#[tokio::test]
async fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path())).unwrap();
    let log = storage.create_log(3, LogConfig::default());
    log.append(batch(&["a", "b", "c"], 100), Durability::Written)
        .await
        .unwrap(); // ts 100,101,102
    log.append(batch(&["d", "e"], 200), Durability::Written)
        .await
        .unwrap(); // ts 200,201
    let m = log.offset_for_timestamp(101).unwrap().unwrap();
    assert_eq!((m.offset, m.timestamp), (1, 101));
    let m = log.offset_for_timestamp(150).unwrap().unwrap();
    assert_eq!((m.offset, m.timestamp), (3, 200));
    assert!(log.offset_for_timestamp(300).unwrap().is_none());
}

/// A small seeded generator: deterministic damage, reproducible from the seed.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn fill(dir: &std::path::Path, entries: usize) -> Vec<(i64, String)> {
    let mut cfg = config(dir);
    cfg.shards = 1;
    // The file ends where its entries end, so the damage the callers make lands among them.
    cfg.preallocate_bytes = 0;
    let storage = Storage::open(cfg).unwrap();
    let log = storage.create_log(1, LogConfig::default());
    let mut model = Vec::new();
    for i in 0..entries {
        let values: Vec<String> = (0..3).map(|j| format!("e{i}-{j}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        log.append(batch(&refs, 1), Durability::Synced)
            .await
            .unwrap();
        for v in values {
            model.push((model.len() as i64, v));
        }
    }
    storage.shutdown();
    model
}

/// Random truncation is a torn tail: recovery cuts it to a prefix of whole entries. Random
/// flips are torn tails only in the last entry; elsewhere recovery refuses to start, naming a
/// range that holds the first flipped byte, until the operator asks for truncation.
#[tokio::test]
async fn random_truncation_and_flips_recover_to_a_valid_prefix() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut refused = 0;
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let model = fill(dir.path(), 30).await;
        let seg = dir.path().join("shards/0/00000000000000000000.log");
        let mut bytes = std::fs::read(&seg).unwrap();
        let len = bytes.len() as u64;
        let mut first_flip: Option<u64> = None;
        if round % 2 == 0 {
            bytes.truncate(rng.below(len) as usize);
        } else {
            // Flip 1–3 bytes in the last quarter.
            for _ in 0..=rng.below(3) {
                let at = (len * 3 / 4 + rng.below(len / 4)) as usize;
                bytes[at] ^= 1 << rng.below(8);
                first_flip = Some(first_flip.map_or(at as u64, |f| f.min(at as u64)));
            }
        }
        std::fs::write(&seg, &bytes).unwrap();
        let mut cfg = config(dir.path());
        cfg.shards = 1;
        let storage = match Storage::open(cfg.clone()) {
            Ok(storage) => storage,
            Err(crate::StorageError::Damaged {
                path, start, end, ..
            }) => {
                let flip = first_flip.expect("a truncated tail is never refused");
                assert_eq!(path, seg);
                assert!(
                    start <= flip && flip < end,
                    "round {round}: {start}..{end} holds {flip}"
                );
                refused += 1;
                cfg.truncate_damaged = true;
                Storage::open(cfg).unwrap()
            }
            Err(e) => panic!("round {round}: {e}"),
        };
        let hw = storage.log(1).map_or(0, |l| l.high_watermark());
        assert_eq!(hw % 3, 0, "whole entries only");
        assert!(hw <= model.len() as i64);
        if hw > 0 {
            // What survives is exactly a prefix of what was written.
            assert_eq!(
                read_all(&storage, 1),
                model[..hw as usize].to_vec(),
                "round {round}"
            );
        }
        // The log accepts appends again at the truncation point.
        let log = storage.create_log(1, LogConfig::default());
        let info = log
            .append(batch(&["again"], 1), Durability::Synced)
            .await
            .unwrap();
        assert_eq!(info.base_offset, hw);
        storage.shutdown();
    }
    assert!(refused > 0, "some flips land before the last entry");
}

/// Damage with valid entries after it is not a torn tail: acked data would be dropped, so
/// recovery refuses with the file and byte range; verify reports the same range; the explicit
/// flag cuts the segment there.
#[tokio::test]
async fn damage_followed_by_valid_entries_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let model = fill(dir.path(), 30).await;
    let seg = dir.path().join("shards/0/00000000000000000000.log");
    let file = crate::RealFs::open_read_only(&seg).unwrap();
    let size = file.size().unwrap();
    let entries = crate::scan::scan_from(&*file, &seg, size, 0)
        .unwrap()
        .entries;
    // One batch per entry, behind a 16-byte envelope header.
    let (fifth, sixth) = (entries[5].position - 16, entries[6].position - 16);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = (entries[5].position + 40) as usize;
    bytes[at] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    let Err(error) = Storage::open(cfg.clone()) else {
        panic!("recovery accepted damage in the middle of the active segment");
    };
    let crate::StorageError::Damaged {
        path,
        start,
        end,
        valid_at,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(path, &seg);
    assert_eq!((*start, *end, *valid_at), (fifth, sixth, sixth));
    assert!(
        error.to_string().contains("recovery_truncate_damaged"),
        "{error}"
    );
    let report = crate::verify(dir.path()).unwrap();
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(
        (report.damaged[0].start, report.damaged[0].end),
        (*start, *end)
    );
    cfg.truncate_damaged = true;
    let storage = Storage::open(cfg).unwrap();
    assert_eq!(read_all(&storage, 1), model[..15].to_vec());
    storage.shutdown();
}

/// A sealed segment was fully synced before it was sealed: damage there is never a torn tail,
/// even when its index file is gone and it must be rescanned.
#[tokio::test]
async fn damage_in_a_sealed_segment_without_index_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    cfg.segment_bytes = 1024;
    {
        let storage = Storage::open(cfg.clone()).unwrap();
        let log = storage.create_log(1, LogConfig::default());
        for i in 0..40 {
            log.append(batch(&[&format!("value-{i}")], 1), Durability::Synced)
                .await
                .unwrap();
        }
        storage.shutdown();
    }
    let shard = dir.path().join("shards/0");
    std::fs::remove_file(shard.join("00000000000000000000.index")).unwrap();
    let seg = shard.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        Storage::open(cfg),
        Err(crate::StorageError::Damaged { path, .. }) if path == seg
    ));
}

#[tokio::test]
async fn flipped_byte_in_sealed_segment_is_detected_on_read_and_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    cfg.segment_bytes = 1024;
    {
        let storage = Storage::open(cfg.clone()).unwrap();
        let log = storage.create_log(1, LogConfig::default());
        for i in 0..40 {
            log.append(batch(&[&format!("value-{i}")], 1), Durability::Synced)
                .await
                .unwrap();
        }
        storage.shutdown();
    }
    assert!(crate::verify(dir.path()).unwrap().damaged.is_empty());
    let seg = dir.path().join("shards/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    // A byte inside the CRC-covered part of the third batch of the sealed segment.
    let entries =
        crate::segment::read_index(&crate::RealFs, &dir.path().join("shards/0"), 0).unwrap();
    let at = (entries[2].position + 40) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    let report = crate::verify(dir.path()).unwrap();
    assert_eq!(report.damaged.len(), 1);
    let d = &report.damaged[0];
    assert!(
        d.start <= at as u64 && (at as u64) < d.end,
        "{d:?} covers byte {at}"
    );

    // The sealed segment is trusted through its index at start; the read catches the damage.
    let storage = Storage::open(cfg).unwrap();
    let log = storage.log(1).unwrap();
    let mut corrupt = 0;
    let mut good = 0;
    for offset in 0..log.high_watermark() {
        match log.read(offset, 1) {
            Ok(r) => {
                let h = wharf_record::BatchHeader::parse_checked(&r.records).unwrap();
                assert_eq!(h.base_offset(), offset);
                good += 1;
            }
            Err(crate::StorageError::Corrupt { .. }) => corrupt += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(corrupt, 1, "exactly the damaged batch fails");
    assert_eq!(good, 39);
}

/// A segment roll that lands while retention picks its candidates must never make the new
/// active segment (whose offset map is still empty) look expired: its file would be unlinked
/// while acks=all data keeps going into it.
#[tokio::test(flavor = "multi_thread")]
async fn roll_during_retention_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    let storage = Storage::open(cfg.clone()).unwrap();
    let log_config = LogConfig {
        segment_bytes: 1024,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let log = storage.create_log(1, log_config);
    log.append(batch(&["first"], 1), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(storage.segment_ids(0), vec![0]);
    let handle = tokio::runtime::Handle::current();
    let roller = log.clone();
    let probe = storage.clone();
    let storage_for_pass = storage.clone();
    // Retention runs on its own thread; the hook rolls the segment from inside the pass.
    std::thread::spawn(move || {
        storage_for_pass.run_retention_with(&|| {
            let big = "x".repeat(2048);
            handle
                .block_on(roller.append(batch(&[&big], 2), Durability::Synced))
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while probe.segment_ids(0).len() < 2 {
                assert!(std::time::Instant::now() < deadline, "segment never rolled");
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    })
    .join()
    .unwrap();
    let ids = storage.segment_ids(0);
    assert_eq!(ids.len(), 2, "a segment vanished: {ids:?}");
    let active = *ids.last().unwrap();
    assert!(
        dir.path()
            .join(format!("shards/0/{active:020}.log"))
            .exists(),
        "the active segment's file was deleted"
    );
    log.append(batch(&["after"], 3), Durability::Synced)
        .await
        .unwrap();
    storage.shutdown();
    let storage = Storage::open(cfg).unwrap();
    let values: Vec<String> = read_all(&storage, 1).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values.first().map(String::as_str), Some("first"));
    assert_eq!(values.last().map(String::as_str), Some("after"));
    assert_eq!(values.len(), 3);
}

/// `segment.ms` counts from a recovered segment's first batch, not from the restart: old data
/// rolls soon after start instead of waiting another full `segment.ms`.
#[tokio::test(flavor = "multi_thread")]
async fn recovered_segment_age_counts_from_its_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    cfg.segment_ms = 3_600_000;
    let two_hours_ago = crate::clock::now_ms() - 7_200_000;
    {
        let storage = Storage::open(cfg.clone()).unwrap();
        let log = storage.create_log(
            1,
            LogConfig {
                retention_ms: -1,
                ..LogConfig::default()
            },
        );
        log.append(batch(&["old"], two_hours_ago), Durability::Synced)
            .await
            .unwrap();
        storage.shutdown();
    }
    let storage = Storage::open(cfg).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while storage.segment_ids(0).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "a segment whose first batch is two hours old did not roll (segment.ms one hour)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    storage.shutdown();
}

/// The binary searches over the index answer as a scan of every entry would, also after the
/// front was pruned and with timestamps out of order.
#[tokio::test]
async fn timestamp_and_size_searches_match_a_linear_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    let storage = Storage::open(cfg).unwrap();
    let log = storage.create_log(
        1,
        LogConfig {
            retention_ms: -1,
            ..LogConfig::default()
        },
    );
    let mut rng = XorShift(42);
    let mut model: Vec<(i64, i64)> = Vec::new(); // (offset, timestamp), one record per batch
    for i in 0..300 {
        let ts = 1_000 + i * 10 + rng.below(400) as i64 - 200;
        let info = log
            .append(batch(&["v"], ts), Durability::Written)
            .await
            .unwrap();
        model.push((info.base_offset, ts));
    }
    for start in [0, 37, 150] {
        log.delete_records(start).unwrap();
        for probe in (0..40).map(|_| 700 + rng.below(3_600) as i64) {
            let expected = model
                .iter()
                .find(|(o, t)| *o >= start && *t >= probe)
                .map(|(o, _)| *o);
            let got = log.offset_for_timestamp(probe).unwrap().map(|m| m.offset);
            assert_eq!(got, expected, "start {start}, timestamp {probe}");
        }
    }
    // Size retention: the same start offset as dropping the oldest batches one by one.
    let batch_len = log.size_bytes() / (300 - 150);
    log.set_config(LogConfig {
        retention_ms: -1,
        retention_bytes: (batch_len * 40 + 7) as i64,
        ..LogConfig::default()
    });
    storage.run_retention();
    assert_eq!(log.log_start_offset(), 300 - 40);
    storage.shutdown();
}

#[tokio::test]
async fn only_reads_from_the_active_segment_or_the_log_end_count_as_active() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    let storage = Storage::open(cfg.clone()).unwrap();
    let log = storage.create_log(1, LogConfig::default());
    assert!(log.reads_only_active(0), "an empty log: nothing to read");
    for i in 0..3 {
        log.append(batch(&[&format!("v{i}")], 1_000 + i), Durability::Written)
            .await
            .unwrap();
    }
    assert!(
        log.reads_only_active(0),
        "every batch is in the active segment"
    );
    assert!(log.reads_only_active(3), "the log end");
    storage.shutdown();
    drop(storage);
    // Every append rolls the segment: what was written is in sealed segments now.
    cfg.segment_bytes = 200;
    let storage = Storage::open(cfg).unwrap();
    let log = storage.log(1).unwrap();
    for i in 3..6 {
        let value = format!("v{i}{}", "x".repeat(200));
        log.append(batch(&[&value], 1_000 + i), Durability::Written)
            .await
            .unwrap();
    }
    storage.flush().await.unwrap();
    assert!(!log.reads_only_active(0), "offset 0 is in a sealed segment");
    assert!(
        !log.reads_only_active(5),
        "the last batch's segment was rolled too"
    );
    assert!(log.reads_only_active(6), "the log end");
    assert_eq!(read_all(&storage, 1).len(), 6);
}

/// The length of a segment file, and where its entries end.
fn file_and_entries_end(path: &std::path::Path) -> (u64, u64) {
    let file = crate::RealFs::open_read_only(path).unwrap();
    let size = file.size().unwrap();
    let scan = crate::scan::scan_from(&*file, path, size, 0).unwrap();
    let end = scan
        .entries
        .iter()
        .map(|e| e.position + u64::from(e.len))
        .max()
        .unwrap_or(0);
    (size, end)
}

/// Preallocation (ADR 0021): the filler zero-fills the active segment ahead of the writer;
/// a roll trims the sealed segment to its entries; verify and recovery take the zero tail a
/// kill leaves for the clean end, not damage or a torn tail. Fails without each part: no
/// filler (no tail), no trim at the roll, or verify or recovery taking the zeros for damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preallocated_zeros_are_trimmed_at_a_roll_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.shards = 1;
    cfg.segment_bytes = 1 << 20;
    cfg.preallocate_bytes = 512 << 10;
    let now = crate::clock::now_ms();
    let first = dir.path().join("shards/0/00000000000000000000.log");
    let mut model = Vec::new();
    {
        let storage = Storage::open(cfg.clone()).unwrap();
        let log = storage.create_log(1, LogConfig::default());
        let value = "x".repeat(1000);
        for i in 0..40 {
            log.append(batch(&[&format!("{i}-{value}")], now), Durability::Synced)
                .await
                .unwrap();
            model.push((i, format!("{i}-{value}")));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while file_and_entries_end(&first).0 < 512 << 10 {
            assert!(std::time::Instant::now() < deadline, "nothing preallocated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (size, end) = file_and_entries_end(&first);
        assert!(size > end, "zeros ahead of the entries: {size} > {end}");
        // A roll by age (`segment.ms`) seals the segment with zeros past its entries: it
        // is trimmed to them.
        log.set_config(LogConfig {
            segment_ms: 1,
            ..LogConfig::default()
        });
        log.append(batch(&["40-rolls"], now), Durability::Synced)
            .await
            .unwrap();
        model.push((40, "40-rolls".to_string()));
        let second = dir.path().join("shards/0/00000000000000000001.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !second.exists() {
            assert!(std::time::Instant::now() < deadline, "no roll");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (size, end) = file_and_entries_end(&first);
        assert_eq!(size, end, "the sealed segment ends with its entries");
        log.set_config(LogConfig::default());
        for i in 41..1200 {
            log.append(batch(&[&format!("{i}-{value}")], now), Durability::Synced)
                .await
                .unwrap();
            model.push((i, format!("{i}-{value}")));
        }
        assert_eq!(read_all(&storage, 1), model);
        let active = dir.path().join("shards/0/00000000000000000002.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while file_and_entries_end(&active).0 <= file_and_entries_end(&active).1 {
            assert!(std::time::Instant::now() < deadline, "nothing preallocated");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Left as a kill leaves it: zeros past the active segment's entries.
        storage.shutdown();
    }
    let report = crate::verify(dir.path()).unwrap();
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.batches, 1200);
    let storage = Storage::open(cfg).unwrap();
    let stats = storage.recovery_stats();
    assert_eq!(stats.torn_tails, 0, "zeros are not a torn tail");
    assert!(stats.zero_tail_bytes > 0);
    assert_eq!(read_all(&storage, 1), model);
    let log = storage.log(1).unwrap();
    let info = log
        .append(batch(&["after"], now), Durability::Synced)
        .await
        .unwrap();
    assert_eq!(info.base_offset, 1200);
    storage.shutdown();
}

/// The filler never zeroes an entry: many small appends race it across rolls, with a window
/// smaller than a piece and a sleep between its claim of a piece and its write (so writes
/// reach claimed pieces), and every value reads back, before and after a restart. Fails when
/// the writer does not wait for a piece in flight that its write would touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filler_never_zeroes_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 2 << 20;
    cfg.preallocate_bytes = 64 << 10;
    cfg.prealloc_claim_delay = Duration::from_millis(2);
    let storage = Storage::open(cfg.clone()).unwrap();
    let mut tasks = Vec::new();
    for id in 1..=4u64 {
        let log = storage.create_log(id, LogConfig::default());
        tasks.push(tokio::spawn(async move {
            let mut model = Vec::new();
            let mut pending = Vec::new();
            for i in 0..3000u64 {
                let value = format!("{id}-{i}-{}", "v".repeat((i % 7 * 150) as usize));
                let durability = if i % 10 == 0 {
                    Durability::Synced
                } else {
                    Durability::Written
                };
                pending.push(log.submit(batch(&[&value], 1), durability).unwrap());
                model.push((i as i64, value));
                if pending.len() == 16 {
                    for p in pending.drain(..) {
                        p.wait().await.unwrap();
                    }
                }
            }
            for p in pending {
                p.wait().await.unwrap();
            }
            (id, model)
        }));
    }
    let mut models = Vec::new();
    for t in tasks {
        models.push(t.await.unwrap());
    }
    for (id, model) in &models {
        assert_eq!(&read_all(&storage, *id), model, "log {id}");
    }
    storage.shutdown();
    let storage = Storage::open(cfg).unwrap();
    assert_eq!(storage.recovery_stats().torn_tails, 0);
    for (id, model) in &models {
        assert_eq!(&read_all(&storage, *id), model, "log {id} after a restart");
    }
    storage.shutdown();
}
