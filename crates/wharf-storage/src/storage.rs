//! The storage entry point: recovery on open, the log registry, housekeeping, shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crate::log::{write_lock, IndexEntry, LogShared};
use crate::shard::{self, Limits, ShardHandle, ShardState};
use crate::{checkpoint, recovery, retention, Log, LogConfig, LogId, StorageConfig, StorageError};

pub(crate) struct StorageInner {
    pub config: StorageConfig,
    pub shards: Vec<ShardHandle>,
    logs: RwLock<HashMap<LogId, Arc<LogShared>>>,
    checkpoint_lock: Mutex<()>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    housekeeping_stop: Mutex<Option<Sender<()>>>,
}

/// The shard logs of one data directory.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<StorageInner>,
}

/// What recovery found, for the log line at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecoveryStats {
    pub shards: usize,
    pub segments: usize,
    pub logs: usize,
    pub batches: usize,
}

impl StorageInner {
    pub fn logs_snapshot(&self) -> Vec<Arc<LogShared>> {
        self.logs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    pub fn log_shared(&self, id: LogId) -> Option<Arc<LogShared>> {
        self.logs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    pub fn persist_log_starts(&self) -> Result<(), StorageError> {
        let _guard = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let starts: BTreeMap<LogId, i64> = self
            .logs_snapshot()
            .iter()
            .map(|l| (l.id, l.log_start.load(Ordering::Acquire)))
            .filter(|(_, s)| *s > 0)
            .collect();
        checkpoint::write(&self.config.data_dir, &starts)
    }
}

impl Storage {
    /// Opens (and recovers) the storage in `config.data_dir`.
    pub fn open(config: StorageConfig) -> Result<Self, StorageError> {
        let shards_dir = config.data_dir.join("shards");
        std::fs::create_dir_all(&shards_dir).map_err(|e| StorageError::io(&shards_dir, e))?;
        let existing = std::fs::read_dir(&shards_dir)
            .map_err(|e| StorageError::io(&shards_dir, e))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1);
        let shard_count = config.shards.max(existing).max(1);
        let starts = checkpoint::read(&config.data_dir)?;
        let mut logs: HashMap<LogId, Arc<LogShared>> = HashMap::new();
        let mut shards = Vec::with_capacity(shard_count);
        let mut threads = Vec::with_capacity(shard_count + 1);
        let mut stats = RecoveryStats {
            shards: shard_count,
            ..RecoveryStats::default()
        };
        for shard_id in 0..shard_count {
            let dir = shards_dir.join(shard_id.to_string());
            let recovered = recovery::recover_shard(&dir, shard_id)?;
            stats.segments += recovered.segments.len();
            stats.batches += recovered.entries.len();
            for (entry, segment) in recovered.entries {
                let log = logs.entry(entry.log_id).or_insert_with(|| {
                    Arc::new(LogShared::new(entry.log_id, shard_id, LogConfig::default()))
                });
                if log.shard != shard_id {
                    tracing::warn!(
                        log_id = entry.log_id,
                        shard = shard_id,
                        "log found in two shards; ignoring the later one"
                    );
                    continue;
                }
                log.bytes.fetch_add(u64::from(entry.len), Ordering::Relaxed);
                log.next_offset
                    .store(entry.last_offset + 1, Ordering::Relaxed);
                write_lock(&log.index).push_back(IndexEntry {
                    base_offset: entry.base_offset,
                    last_offset: entry.last_offset,
                    max_timestamp: entry.max_timestamp,
                    segment,
                    position: entry.position,
                    len: entry.len,
                });
            }
            let state = Arc::new(ShardState {
                id: shard_id,
                dir,
                segments: RwLock::new(recovered.segments),
                poisoned: false.into(),
                group_commits: 0.into(),
                fsyncs: 0.into(),
            });
            let limits = Limits {
                segment_bytes: config.segment_bytes,
                segment_ms: config.segment_ms,
                flush_interval: config.flush_interval,
                max_group_bytes: config.max_group_bytes,
            };
            let (handle, thread) = shard::spawn(state, recovered.active_entries, limits)?;
            shards.push(handle);
            threads.push(thread);
        }
        for log in logs.values() {
            let first = log
                .index
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .front()
                .map_or(0, |e| e.base_offset);
            let start = starts.get(&log.id).copied().unwrap_or(first).max(first);
            log.log_start.store(start, Ordering::Relaxed);
            log.next_offset.fetch_max(start, Ordering::Relaxed);
            log.prune_index();
        }
        for (&id, &start) in &starts {
            logs.entry(id).or_insert_with(|| {
                let log =
                    LogShared::new(id, (id % shard_count as u64) as usize, LogConfig::default());
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
            "storage recovered"
        );
        let inner = Arc::new(StorageInner {
            config,
            shards,
            logs: RwLock::new(logs),
            checkpoint_lock: Mutex::new(()),
            threads: Mutex::new(threads),
            housekeeping_stop: Mutex::new(None),
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
                retention::run_once(&inner);
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
            storage: Arc::downgrade(&self.inner),
        }
    }

    /// Ids of every log that holds data or a persisted start offset.
    pub fn log_ids(&self) -> Vec<LogId> {
        self.inner.logs_snapshot().iter().map(|l| l.id).collect()
    }

    pub fn log(&self, id: LogId) -> Option<Log> {
        self.inner.log_shared(id).map(|s| self.handle(s))
    }

    /// Returns the log `id`, creating it empty if needed, with `config` applied.
    pub fn create_log(&self, id: LogId, config: LogConfig) -> Log {
        let shared = {
            let mut logs = write_lock(&self.inner.logs);
            logs.entry(id)
                .or_insert_with(|| {
                    Arc::new(LogShared::new(
                        id,
                        (id % self.inner.shards.len() as u64) as usize,
                        config,
                    ))
                })
                .clone()
        };
        *write_lock(&shared.config) = config;
        self.handle(shared)
    }

    /// Forgets a log; its data goes when the segments holding it are deleted.
    pub fn delete_log(&self, id: LogId) -> Result<(), StorageError> {
        let removed = write_lock(&self.inner.logs).remove(&id);
        if let Some(log) = removed {
            log.deleted.store(true, Ordering::Release);
            log.wake();
            self.inner.persist_log_starts()?;
        }
        Ok(())
    }

    /// Runs retention and segment deletion now (it also runs on its interval).
    pub fn run_retention(&self) {
        retention::run_once(&self.inner);
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
