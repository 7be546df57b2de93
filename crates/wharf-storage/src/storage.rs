//! The storage entry point: recovery on open, the log registry, housekeeping, shutdown.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::compact::{Cleaner, CompactionStats, SwapStep};
use crate::index::LogShared;
use crate::paging::Pager;
use crate::registry::Registry;
use crate::segment::{Segment, SegmentEntry};
use crate::shard::{self, Limits, ShardHandle, ShardState};
use crate::{
    checkpoint, clock, durable, recovery, retention, Log, LogConfig, LogId, StorageConfig,
    StorageError,
};

struct StorageInner {
    config: StorageConfig,
    shards: Vec<ShardHandle>,
    registry: Arc<Registry>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    housekeeping_stop: Mutex<Option<Sender<()>>>,
    cleaner: Cleaner,
    pager: Arc<Pager>,
    recovered: RecoveryStats,
}

/// The shard logs of one data directory.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<StorageInner>,
}

/// What recovery found: the log line at start, and [`Storage::recovery_stats`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RecoveryStats {
    pub shards: usize,
    pub segments: usize,
    pub logs: usize,
    pub batches: usize,
    /// Torn tails cut (damage running to the end of an active segment).
    pub torn_tails: usize,
    /// Zero bytes past the entries (filled ahead of the writer, ADR 0021) trimmed.
    pub zero_tail_bytes: u64,
}

impl StorageInner {
    fn run_retention(&self, between: &dyn Fn()) {
        if let Err(error) = retention::run_once(
            &self.registry,
            &self.shards,
            &self.pager,
            clock::now_ms(),
            between,
        ) {
            tracing::error!(%error, "cannot persist log start offsets; segment deletion skipped");
        }
    }

    /// One compaction pass; the configured test hook crashes the process at its swap step.
    fn run_compaction(&self, step: &dyn Fn(SwapStep)) -> CompactionStats {
        let abort_at = self.config.cleaner_abort_at;
        let step = |at: SwapStep| {
            if abort_at == Some(at) {
                tracing::error!(step = ?at, "cleaner_abort_at: aborting the process (test hook)");
                std::process::abort();
            }
            step(at);
        };
        match self.cleaner.run_once(
            &self.registry,
            &self.shards,
            &self.pager,
            clock::now_ms(),
            &step,
        ) {
            Ok(stats) => stats,
            Err(error) => {
                tracing::error!(%error, "compaction pass failed; the old segments stay");
                CompactionStats::default()
            }
        }
    }
}

impl Storage {
    /// Opens (and recovers) the storage in `config.data_dir`.
    pub fn open(config: StorageConfig) -> Result<Self, StorageError> {
        let fs = config.fs.clone();
        let shards_dir = config.data_dir.join("shards");
        // Every directory's entry is made durable before anything acked can live in it.
        durable::ensure_dir(&*fs, &shards_dir).map_err(|e| StorageError::io(&shards_dir, e))?;
        let existing = fs
            .list_dir(&shards_dir)
            .map_err(|e| StorageError::io(&shards_dir, e))?
            .iter()
            .filter_map(|p| p.file_name()?.to_str()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1);
        let shard_count = config.shards.max(existing).max(1);
        let starts = checkpoint::read(&*fs, &config.data_dir)?;
        let mut logs: HashMap<LogId, Arc<LogShared>> = HashMap::new();
        let mut states = Vec::with_capacity(shard_count);
        let mut stats = RecoveryStats {
            shards: shard_count,
            ..RecoveryStats::default()
        };
        let pager = Arc::new(Pager::new(fs.clone(), config.sealed_index_cache_bytes));
        for shard_id in 0..shard_count {
            let dir = shards_dir.join(shard_id.to_string());
            let mut by_log: HashMap<LogId, Vec<SegmentEntry>> = HashMap::new();
            let mut each = |segment: &Arc<Segment>, entries: &[SegmentEntry], sealed: bool| {
                by_log.clear();
                for e in entries {
                    by_log.entry(e.log_id).or_default().push(*e);
                }
                for (&log_id, entries) in &by_log {
                    let log = logs.entry(log_id).or_insert_with(|| {
                        Arc::new(LogShared::new(
                            log_id,
                            shard_id,
                            LogConfig::default(),
                            pager.clone(),
                        ))
                    });
                    if log.shard != shard_id {
                        tracing::warn!(
                            log_id,
                            shard = shard_id,
                            "log found in two shards; ignoring the later one"
                        );
                        continue;
                    }
                    if let Some(last) = entries.last() {
                        log.next_offset
                            .store(last.last_offset + 1, Ordering::Relaxed);
                    }
                    if sealed {
                        log.push_paged(entries, segment);
                    } else {
                        log.push(entries, segment);
                    }
                }
            };
            let recovered =
                recovery::recover_shard(&*fs, &dir, shard_id, config.truncate_damaged, &mut each)?;
            stats.segments += recovered.segments.len();
            stats.batches += recovered.batches;
            stats.torn_tails += recovered.torn_tails;
            stats.zero_tail_bytes += recovered.zero_tail_bytes;
            let state = Arc::new(ShardState::new(
                shard_id,
                dir,
                fs.clone(),
                recovered.segments,
            ));
            states.push((state, recovered.active_entries));
        }
        for log in logs.values() {
            let first = log.first_offset();
            let start = starts.get(&log.id).copied().unwrap_or(first).max(first);
            log.log_start.store(start, Ordering::Relaxed);
            log.next_offset.fetch_max(start, Ordering::Relaxed);
            log.prune_index();
        }
        for (&id, &start) in &starts {
            logs.entry(id).or_insert_with(|| {
                let log = LogShared::new(
                    id,
                    (id % shard_count as u64) as usize,
                    LogConfig::default(),
                    pager.clone(),
                );
                log.log_start.store(start, Ordering::Relaxed);
                log.next_offset.store(start, Ordering::Relaxed);
                Arc::new(log)
            });
        }
        stats.logs = logs.len();
        tracing::info!(
            shards = stats.shards,
            segments = stats.segments,
            logs = stats.logs,
            batches = stats.batches,
            torn_tails = stats.torn_tails,
            zero_tail_bytes = stats.zero_tail_bytes,
            "storage recovered"
        );
        let registry = Arc::new(Registry::new(fs, config.data_dir.clone(), logs));
        let limits = Limits {
            segment_bytes: config.segment_bytes,
            segment_ms: config.segment_ms,
            flush_interval: config.flush_interval,
            sync_min_interval: config.sync_min_interval,
            max_group_bytes: config.max_group_bytes,
            preallocate_bytes: config.preallocate_bytes,
            prealloc_claim_delay: config.prealloc_claim_delay,
        };
        let mut shards = Vec::with_capacity(shard_count);
        let mut threads = Vec::with_capacity(shard_count + 1);
        for (state, active_entries) in states {
            let (handle, thread) = shard::spawn(state, registry.clone(), active_entries, limits)?;
            shards.push(handle);
            threads.push(thread);
        }
        let inner = Arc::new(StorageInner {
            config,
            shards,
            registry,
            threads: Mutex::new(threads),
            housekeeping_stop: Mutex::new(None),
            cleaner: Cleaner::default(),
            pager,
            recovered: stats,
        });
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let weak = Arc::downgrade(&inner);
        let interval = inner.config.retention_check_interval;
        let housekeeping = std::thread::Builder::new()
            .name("wharf-housekeeping".into())
            .spawn(move || loop {
                match stop_rx.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                inner.run_retention(&|| {});
                inner.run_compaction(&|_| {});
            })
            .map_err(|e| StorageError::io(&inner.config.data_dir, e))?;
        inner
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(housekeeping);
        *inner
            .housekeeping_stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stop_tx);
        Ok(Self { inner })
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    fn handle(&self, shared: Arc<LogShared>) -> Log {
        let shard = self.inner.shards[shared.shard % self.inner.shards.len()].clone();
        Log {
            shared,
            shard,
            registry: self.inner.registry.clone(),
        }
    }

    /// Ids of every log that holds data or a persisted start offset.
    pub fn log_ids(&self) -> Vec<LogId> {
        self.inner
            .registry
            .snapshot()
            .iter()
            .map(|l| l.id)
            .collect()
    }

    pub fn log(&self, id: LogId) -> Option<Log> {
        self.inner.registry.get(id).map(|s| self.handle(s))
    }

    /// Returns the log `id`, creating it empty if needed, with `config` applied.
    pub fn create_log(&self, id: LogId, config: LogConfig) -> Log {
        let shard = (id % self.inner.shards.len() as u64) as usize;
        let shared = self.inner.registry.get_or_insert(id, || {
            LogShared::new(id, shard, config, self.inner.pager.clone())
        });
        let log = self.handle(shared);
        log.set_config(config);
        log
    }

    /// Forgets the logs of `ids`; their data goes when the segments holding it are deleted.
    /// The log starts are then written once (a durable rewrite: one per log, deleting 100
    /// topics of 100 partitions took 25 s).
    pub fn delete_logs(&self, ids: impl IntoIterator<Item = LogId>) -> Result<(), StorageError> {
        let mut removed = false;
        for id in ids {
            if let Some(log) = self.inner.registry.remove(id) {
                log.deleted.store(true, Ordering::Release);
                log.wake();
                removed = true;
            }
        }
        if removed {
            self.inner.registry.persist_log_starts()?;
        }
        Ok(())
    }

    /// Runs retention and segment deletion now (it also runs on its interval).
    pub fn run_retention(&self) {
        self.inner.run_retention(&|| {});
    }

    /// Runs one compaction pass now (it also runs after retention on its interval).
    pub fn run_compaction(&self) -> CompactionStats {
        self.inner.run_compaction(&|_| {})
    }

    /// Runs one compaction pass calling `step` after each step of a segment swap.
    #[cfg(any(test, feature = "sim"))]
    pub fn run_compaction_with(&self, step: &dyn Fn(SwapStep)) -> CompactionStats {
        self.inner.run_compaction(step)
    }

    /// Shards that stopped acknowledging after a failed write or fdatasync (until restart).
    pub fn poisoned_shards(&self) -> Vec<usize> {
        self.inner
            .shards
            .iter()
            .filter(|s| s.state.is_poisoned())
            .map(|s| s.state.id)
            .collect()
    }

    /// The shard-log contract of shard `shard_id` (see [`ShardLog`](crate::ShardLog)).
    /// Sends every later `Log::submit` of shard `shard_id` through `route` (a replicated shard
    /// log), so no writer of the shard bypasses it. Set once; `false` if already set or no
    /// such shard.
    pub fn route_appends(&self, shard_id: usize, route: Arc<dyn crate::ShardLog>) -> bool {
        self.inner
            .shards
            .get(shard_id)
            .is_some_and(|shard| shard.state.route.set(route).is_ok())
    }

    pub fn shard_log(&self, shard_id: usize) -> Option<crate::LocalShardLog> {
        let shard = self.inner.shards.get(shard_id)?.clone();
        Some(crate::LocalShardLog::new(shard))
    }

    #[cfg(test)]
    pub(crate) fn run_retention_with(&self, between: &dyn Fn()) {
        self.inner.run_retention(between);
    }

    #[cfg(test)]
    pub(crate) fn pager(&self) -> &Pager {
        &self.inner.pager
    }

    /// A log's runs, and how many hold their slots in memory.
    #[cfg(test)]
    pub(crate) fn run_counts(&self, id: LogId) -> (usize, usize) {
        self.inner
            .registry
            .get(id)
            .map_or((0, 0), |l| l.run_counts())
    }

    #[cfg(test)]
    pub(crate) fn segment_ids(&self, shard: usize) -> Vec<u64> {
        self.inner.shards[shard]
            .state
            .segments
            .read()
            .unwrap()
            .keys()
            .copied()
            .collect()
    }

    /// fdatasync every shard.
    pub async fn flush(&self) -> Result<(), StorageError> {
        for shard in &self.inner.shards {
            shard.flush().await?;
        }
        Ok(())
    }

    /// Group commits and fdatasyncs so far, summed over shards.
    pub fn commit_stats(&self) -> (u64, u64) {
        self.inner.shards.iter().fold((0, 0), |(g, f), s| {
            (
                g + s.state.group_commits.load(Ordering::Relaxed),
                f + s.state.fsyncs.load(Ordering::Relaxed),
            )
        })
    }

    /// Bytes the shard writers have written since storage opened, summed over shards.
    pub fn written_bytes(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|s| s.state.written_bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// What recovery found when this storage was opened.
    pub fn recovery_stats(&self) -> RecoveryStats {
        self.inner.recovered
    }

    /// Stops the writers after they flush what they hold, and the housekeeping thread.
    pub fn shutdown(&self) {
        if let Some(stop) = self
            .inner
            .housekeeping_stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
        for shard in &self.inner.shards {
            shard.stop();
        }
        let threads = std::mem::take(
            &mut *self
                .inner
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in threads {
            let _ = t.join();
        }
    }
}
