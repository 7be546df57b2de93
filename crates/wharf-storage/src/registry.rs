//! Every partition log of the storage by id, and the persisted log start offsets.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use crate::checkpoint;
use crate::fs::FileSystem;
use crate::index::{read_lock, write_lock, LogShared};
use crate::{LogId, StorageError};

pub(crate) struct Registry {
    fs: Arc<dyn FileSystem>,
    data_dir: PathBuf,
    logs: RwLock<HashMap<LogId, Arc<LogShared>>>,
    /// Serialises checkpoint writes, so an older snapshot never replaces a newer one.
    checkpoint_lock: Mutex<()>,
}

impl Registry {
    pub fn new(
        fs: Arc<dyn FileSystem>,
        data_dir: PathBuf,
        logs: HashMap<LogId, Arc<LogShared>>,
    ) -> Self {
        Self {
            fs,
            data_dir,
            logs: RwLock::new(logs),
            checkpoint_lock: Mutex::new(()),
        }
    }

    pub fn snapshot(&self) -> Vec<Arc<LogShared>> {
        read_lock(&self.logs).values().cloned().collect()
    }

    pub fn get(&self, id: LogId) -> Option<Arc<LogShared>> {
        read_lock(&self.logs).get(&id).cloned()
    }

    /// The log `id`, created by `make` when missing.
    pub fn get_or_insert(&self, id: LogId, make: impl FnOnce() -> LogShared) -> Arc<LogShared> {
        write_lock(&self.logs)
            .entry(id)
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    pub fn remove(&self, id: LogId) -> Option<Arc<LogShared>> {
        write_lock(&self.logs).remove(&id)
    }

    /// Writes every log's start offset (those above 0) durably.
    pub fn persist_log_starts(&self) -> Result<(), StorageError> {
        let _guard = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let starts: BTreeMap<LogId, i64> = self
            .snapshot()
            .iter()
            .map(|l| (l.id, l.log_start.load(Ordering::Acquire)))
            .filter(|(_, s)| *s > 0)
            .collect();
        checkpoint::write(&*self.fs, &self.data_dir, &starts)
    }
}
