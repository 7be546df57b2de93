//! `wharf-bench disk-e2e`: the load of `e2e-latency` against the disk alone, with no broker
//! (ADR 0023). What a broker that only writes and fdatasyncs would give on this disk, for
//! telling the broker's part of the e2e tail from the disk's.
//!
//! A paced producer (5,000 records/s of 1 KiB, at most `window` requests unanswered, records
//! batched while the window is shut, as the native client does) spreads records over 8
//! partitions on `shards` shards. Each shard is a writer thread (pwrite, then the record is
//! visible) and a syncer thread (one fdatasync for every group handed over meanwhile, then
//! acks), paced as the broker's syncer is (`--interval-us`: while groups were waiting as the
//! last round ended, the next starts no sooner than this after it). e2e is the time from a
//! record's intended send time to its write.
//!
//! ```text
//! producer ──request──▶ shard writers ──▶ (visible: e2e) ──▶ syncers ──fdatasync──▶ acks
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;

const RATE_PER_SEC: u64 = 5000;
const PARTITIONS: u64 = 8;
/// A 1 KiB value with its record and batch framing.
const ENTRY_BYTES: usize = 1085;

/// Options of `disk-e2e`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiskE2eArgs {
    /// Where the shard files are written (the broker's data disk).
    #[arg(long, default_value = "/tmp")]
    pub dir: PathBuf,
    /// Requests unanswered at most (the native client's default).
    #[arg(long, default_value_t = 4)]
    pub window: u64,
    /// Shards (the broker's default on this machine: one per core).
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// The syncer's pacing, as `log_sync_min_interval_us`; 0: none.
    #[arg(long, default_value_t = 0)]
    pub interval_us: u64,
    /// Length of the run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// One run's figures: histograms in µs.
pub struct Outcome {
    pub records: u64,
    pub e2e: Histogram<u64>,
    pub fdatasync: Histogram<u64>,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Requests answered so far, and how many shards each unanswered one still waits for.
#[derive(Default)]
struct Answers {
    waiting: Mutex<HashMap<u64, usize>>,
    answered: AtomicU64,
}

/// What a writer hands its syncer: request ids, and whether the writer is done.
type Handed = (Mutex<(Vec<u64>, bool)>, Condvar);

/// A request's part for one shard: its id and its records' intended send times.
type Part = (u64, Vec<Instant>);

fn syncer(
    file: &File,
    handed: &Handed,
    answers: &Answers,
    fdatasync: &Shared<Histogram<u64>>,
    interval: Duration,
) -> std::io::Result<()> {
    let mut last_round: Option<Instant> = None;
    let mut busy = false;
    loop {
        if let (true, Some(last)) = (busy, last_round) {
            let due = last + interval;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let ids = {
            let mut state = lock(&handed.0);
            while state.0.is_empty() && !state.1 {
                state = handed
                    .1
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if state.0.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut state.0)
        };
        let started = Instant::now();
        last_round = Some(started);
        file.sync_data()?;
        lock(fdatasync).saturating_record(micros(started.elapsed()));
        {
            let mut waiting = lock(&answers.waiting);
            for id in ids {
                if let Some(left) = waiting.get_mut(&id) {
                    *left -= 1;
                    if *left == 0 {
                        waiting.remove(&id);
                        answers.answered.fetch_add(1, Ordering::Release);
                    }
                }
            }
        }
        busy = !lock(&handed.0).0.is_empty();
    }
}

/// One shard: its writer thread (which starts and joins its syncer) and the sender of its
/// requests (ids and their records' intended send times).
fn spawn_shard(
    path: PathBuf,
    answers: Arc<Answers>,
    e2e: Shared<Histogram<u64>>,
    fdatasync: Shared<Histogram<u64>>,
    interval: Duration,
) -> anyhow::Result<(
    mpsc::Sender<Part>,
    std::thread::JoinHandle<anyhow::Result<()>>,
)> {
    let file = Arc::new(
        File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?,
    );
    let (tx, rx) = mpsc::channel::<Part>();
    let writer = std::thread::spawn(move || -> anyhow::Result<()> {
        let handed: Arc<Handed> = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
        let syncer_thread = {
            let (file, handed) = (file.clone(), handed.clone());
            std::thread::spawn(move || syncer(&file, &handed, &answers, &fdatasync, interval))
        };
        let entry = vec![7u8; ENTRY_BYTES];
        let mut end = 0u64;
        for (id, intended) in rx {
            let bytes = entry.repeat(intended.len());
            file.write_all_at(&bytes, end)?;
            end += bytes.len() as u64;
            let now = Instant::now();
            {
                let mut e2e = lock(&e2e);
                for at in intended {
                    e2e.saturating_record(micros(now.saturating_duration_since(at)));
                }
            }
            lock(&handed.0).0.push(id);
            handed.1.notify_one();
        }
        lock(&handed.0).1 = true;
        handed.1.notify_one();
        let synced = syncer_thread
            .join()
            .map_err(|_| anyhow::anyhow!("syncer panicked"))?;
        std::fs::remove_file(&path)?;
        synced.context("fdatasync")
    });
    Ok((tx, writer))
}

pub fn measure(args: &DiskE2eArgs) -> anyhow::Result<Outcome> {
    let shards = args.shards.max(1);
    let interval = Duration::from_micros(args.interval_us);
    let answers = Arc::new(Answers::default());
    let e2e: Shared<Histogram<u64>> =
        Arc::new(Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?));
    let fdatasync: Shared<Histogram<u64>> =
        Arc::new(Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?));
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for shard in 0..shards {
        let path = args
            .dir
            .join(format!("wharf-disk-e2e-{}-{shard}", std::process::id()));
        let (tx, writer) = spawn_shard(
            path,
            answers.clone(),
            e2e.clone(),
            fdatasync.clone(),
            interval,
        )?;
        senders.push(tx);
        writers.push(writer);
    }
    let start = Instant::now();
    let total = RATE_PER_SEC * args.seconds;
    let mut pending: Vec<Vec<Instant>> = vec![Vec::new(); shards];
    let mut sent = 0u64;
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / RATE_PER_SEC);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let shard = usize::try_from(i % PARTITIONS).unwrap_or(0) % shards;
        pending[shard].push(due);
        if sent - answers.answered.load(Ordering::Acquire) < args.window {
            let with_records: Vec<usize> =
                (0..shards).filter(|s| !pending[*s].is_empty()).collect();
            lock(&answers.waiting).insert(sent, with_records.len());
            for s in with_records {
                senders[s]
                    .send((sent, std::mem::take(&mut pending[s])))
                    .context("a shard writer stopped")?;
            }
            sent += 1;
        }
    }
    // What is still pending goes in one last request.
    let with_records: Vec<usize> = (0..shards).filter(|s| !pending[*s].is_empty()).collect();
    lock(&answers.waiting).insert(sent, with_records.len());
    for s in with_records {
        senders[s]
            .send((sent, std::mem::take(&mut pending[s])))
            .context("a shard writer stopped")?;
    }
    drop(senders);
    for writer in writers {
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    let e2e = std::mem::replace(&mut *lock(&e2e), Histogram::new(3)?);
    let fdatasync = std::mem::replace(&mut *lock(&fdatasync), Histogram::new(3)?);
    Ok(Outcome {
        records: e2e.len(),
        e2e,
        fdatasync,
    })
}

/// p50, p99, p99.9 and max, as e2e-latency reports them.
fn quantiles_ms(h: &Histogram<u64>) -> String {
    let [p50, p99, p999, max] = crate::scenarios::latency::quantiles_ms(h);
    format!("p50 {p50:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}")
}

pub fn print(args: &DiskE2eArgs) -> anyhow::Result<()> {
    let outcome = measure(args)?;
    println!(
        "disk-e2e ({} shards, window {}, interval {} us, {} s, {}): {} records",
        args.shards,
        args.window,
        args.interval_us,
        args.seconds,
        args.dir.display(),
        outcome.records
    );
    println!("   e2e (ms):       {}", quantiles_ms(&outcome.e2e));
    println!(
        "   fdatasync (ms): {}  ({} rounds)",
        quantiles_ms(&outcome.fdatasync),
        outcome.fdatasync.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record is written once and timed, and each round of fdatasyncs is counted; with
    /// a long pacing interval the rounds are fewer than the requests.
    #[test]
    fn every_record_is_timed_and_pacing_cuts_the_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let run = |interval_us| {
            measure(&DiskE2eArgs {
                dir: dir.path().to_path_buf(),
                window: 4,
                shards: 2,
                interval_us,
                seconds: 1,
            })
            .unwrap()
        };
        let paced = run(200_000);
        assert_eq!(paced.records, RATE_PER_SEC);
        // At most about 5 rounds a second per shard while busy, plus the quiet ones.
        assert!(
            paced.fdatasync.len() < 100,
            "{} rounds",
            paced.fdatasync.len()
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
