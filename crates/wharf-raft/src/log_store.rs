//! openraft's log storage over one local shard log: raft index `anchor_index + i` is the i-th
//! shard entry from the anchor position. Invariant: `Index::entries` lists, in order, every
//! shard entry from the anchor to the end of the shard, and the state file's term starts cover
//! each of them before it is acknowledged.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, LogState, Membership, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};
use wharf_storage::{
    Durability, LocalShardLog, Log, LogConfig, Position, ShardEntry, ShardLog, Storage,
};

use crate::state_file::{StateFile, StatePath};
use crate::types::{NodeId, Request, TypeConfig};

/// Where one raft entry sits in the shard, and the offsets it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryMeta {
    pub log_id: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub end: Position,
}

pub(crate) struct Index {
    pub state: StateFile,
    pub entries: VecDeque<EntryMeta>,
    /// Per partition log with raft entries since open: the offset after its last committed
    /// record (the high watermark consumers may see). A log not listed has every record
    /// committed, so its storage high watermark is it.
    pub committed_offsets: HashMap<u64, i64>,
}

impl Index {
    pub fn last_index(&self) -> Option<u64> {
        if self.entries.is_empty() {
            self.state.purged.map(|p| p.index)
        } else {
            Some(self.state.anchor_index + self.entries.len() as u64 - 1)
        }
    }

    fn slot(&self, index: u64) -> Option<usize> {
        let slot = usize::try_from(index.checked_sub(self.state.anchor_index)?).ok()?;
        (slot < self.entries.len()).then_some(slot)
    }

    pub fn meta(&self, index: u64) -> Option<EntryMeta> {
        self.slot(index).and_then(|s| self.entries.get(s).copied())
    }

    fn start_of_slot(&self, slot: usize) -> Position {
        match slot.checked_sub(1).and_then(|s| self.entries.get(s)) {
            Some(previous) => previous.end,
            None => self.state.anchor(),
        }
    }

    /// The end of entry `index`: its own end, or the anchor for the last purged entry.
    pub fn end_of(&self, index: u64) -> Option<Position> {
        if index + 1 == self.state.anchor_index {
            return Some(self.state.anchor());
        }
        self.meta(index).map(|m| m.end)
    }

    fn log_id(&self, index: u64) -> Option<LogId<NodeId>> {
        self.state
            .leader_of(index)
            .map(|leader| LogId::new(leader, index))
    }
}

/// What a raft `Blank` or `Membership` entry is stored as: JSON in a one-record batch of the
/// shard's control log.
#[derive(Debug, Serialize, Deserialize)]
enum ControlRecord {
    Blank,
    Membership(Membership<NodeId, openraft::BasicNode>),
}

/// Everything one shard group's log store, state machine and shard-log handle share.
pub(crate) struct Shared {
    pub shard_id: usize,
    pub storage: Storage,
    pub shard: LocalShardLog,
    pub control_log: u64,
    pub state_path: StatePath,
    pub index: Mutex<Index>,
    /// One state-file write at a time, each of the latest state.
    persist_lock: tokio::sync::Mutex<()>,
    pub committed: watch::Sender<Position>,
    /// Writers waiting for the leader's own write only (acks=1), by `Request::local_ack`.
    pub local_acks: Mutex<HashMap<u64, LocalAck>>,
}

/// Completes an acks=1 write once the leader holds the entry.
pub(crate) type LocalAck =
    tokio::sync::oneshot::Sender<Result<wharf_storage::Appended, wharf_storage::StorageError>>;

fn io_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl Shared {
    /// Opens the raft view of a shard: loads the state file, numbers the entries from the anchor.
    pub fn open(
        storage: &Storage,
        shard: LocalShardLog,
        control_log: u64,
        state_path: StatePath,
    ) -> std::io::Result<Self> {
        let state = state_path.load()?.unwrap_or_else(|| {
            let mut state = StateFile::empty();
            state.set_anchor(0, shard.start());
            state
        });
        let mut entries = VecDeque::new();
        let mut at = state.anchor();
        loop {
            let read = shard.read(at, 1 << 20).map_err(std::io::Error::other)?;
            let Some(last) = read.last() else { break };
            at = last.end;
            entries.extend(read.iter().map(|e| EntryMeta {
                log_id: e.log_id,
                base_offset: e.base_offset,
                last_offset: e.last_offset,
                end: e.end,
            }));
        }
        storage.create_log(control_log, LogConfig::default());
        // Entries up to the last snapshot were applied; later ones may not be committed yet.
        let applied = state.snapshot.as_ref().map(|(last, _)| last.index);
        let mut committed_offsets = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.log_id == control_log {
                continue;
            }
            if applied.is_some_and(|a| state.anchor_index + i as u64 <= a) {
                committed_offsets.insert(e.log_id, e.last_offset + 1);
            } else {
                committed_offsets.entry(e.log_id).or_insert(e.base_offset);
            }
        }
        let index = Index {
            state,
            entries,
            committed_offsets,
        };
        let applied_end = index
            .state
            .snapshot
            .as_ref()
            .and_then(|(last, _)| index.end_of(last.index))
            .unwrap_or(index.state.anchor());
        Ok(Self {
            shard_id: shard.shard_id(),
            storage: storage.clone(),
            shard,
            control_log,
            state_path,
            index: Mutex::new(index),
            persist_lock: tokio::sync::Mutex::new(()),
            local_acks: Mutex::default(),
            committed: watch::channel(applied_end).0,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent index (every update is one step).
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the state file with the current state (off the async workers).
    pub async fn persist(self: &Arc<Self>) -> Result<(), StorageError<NodeId>> {
        let _one = self.persist_lock.lock().await;
        let state = self.lock().state.clone();
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.state_path.save(&state))
            .await
            .map_err(io_error)?
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    /// The log a payload goes to, created if this node has not seen it yet (a follower).
    pub fn log(&self, log_id: u64) -> Log {
        self.storage
            .log(log_id)
            .unwrap_or_else(|| self.storage.create_log(log_id, LogConfig::default()))
    }

    /// The shard-log append of one raft entry.
    fn to_append(
        &self,
        payload: &EntryPayload<TypeConfig>,
    ) -> Result<(Log, bytes::Bytes), StorageError<NodeId>> {
        let control = match payload {
            EntryPayload::Normal(request) => {
                return Ok((
                    self.log(request.log_id),
                    bytes::Bytes::from(request.batches.clone()),
                ))
            }
            EntryPayload::Blank => ControlRecord::Blank,
            EntryPayload::Membership(m) => ControlRecord::Membership(m.clone()),
        };
        let value = serde_json::to_vec(&control).map_err(io_error)?;
        let mut builder = BatchBuilder::new(0);
        builder.push(None, Some(&value), &[], 0);
        Ok((
            self.log(self.control_log),
            bytes::Bytes::from(builder.build()),
        ))
    }

    /// A raft entry as read back from the shard.
    fn to_entry(
        &self,
        log_id: LogId<NodeId>,
        entry: &ShardEntry,
    ) -> Result<Entry<TypeConfig>, StorageError<NodeId>> {
        let payload = if entry.log_id == self.control_log {
            let read_error = |e: &dyn std::error::Error| {
                StorageIOError::read_log_at_index(log_id.index, AnyError::error(e.to_string()))
            };
            let header = BatchHeader::parse_checked(&entry.batches).map_err(|e| read_error(&e))?;
            let value = RecordIter::new(&header)
                .map_err(|e| read_error(&e))?
                .next()
                .transpose()
                .map_err(|e| read_error(&e))?
                .and_then(|r| r.value)
                .unwrap_or_default();
            match serde_json::from_slice(value).map_err(|e| read_error(&e))? {
                ControlRecord::Blank => EntryPayload::Blank,
                ControlRecord::Membership(m) => EntryPayload::Membership(m),
            }
        } else {
            EntryPayload::Normal(Request {
                log_id: entry.log_id,
                batches: entry.batches.to_vec(),
                local_ack: 0,
            })
        };
        Ok(Entry { log_id, payload })
    }

    /// Appends entries to the shard (one group commit, fdatasync-ed) and records where they went.
    pub async fn append_entries(
        self: &Arc<Self>,
        entries: Vec<Entry<TypeConfig>>,
    ) -> Result<(), StorageError<NodeId>> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let first_index = first.log_id.index;
        let terms_changed = {
            let mut index = self.lock();
            let mut changed = false;
            for e in &entries {
                changed |= index
                    .state
                    .record_leader(e.log_id.leader_id, e.log_id.index);
                if let EntryPayload::Normal(request) = &e.payload {
                    // Before the write: the log's records so far are all committed.
                    index
                        .committed_offsets
                        .entry(request.log_id)
                        .or_insert_with(|| self.log(request.log_id).high_watermark());
                }
            }
            changed
        };
        if terms_changed {
            self.persist().await?;
        }
        let mut pending = Vec::with_capacity(entries.len());
        for e in &entries {
            let (log, batches) = self.to_append(&e.payload)?;
            let appending = self
                .shard
                .append(&log, batches, Durability::Synced)
                .map_err(io_error)?;
            pending.push((log.id(), appending));
        }
        let mut metas = Vec::with_capacity(pending.len());
        for ((log_id, appending), e) in pending.into_iter().zip(&entries) {
            let appended = appending.wait_appended().await.map_err(io_error)?;
            if let EntryPayload::Normal(Request { local_ack, .. }) = &e.payload {
                if *local_ack != 0 {
                    let waiter = self
                        .local_acks
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(local_ack);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Ok(appended));
                    }
                }
            }
            metas.push(EntryMeta {
                log_id,
                base_offset: appended.info.base_offset,
                last_offset: appended.info.last_offset,
                end: appended.position,
            });
        }
        let mut index = self.lock();
        let expected = index
            .last_index()
            .map_or(index.state.anchor_index, |l| l + 1);
        if first_index != expected {
            tracing::error!(
                shard_id = self.shard_id,
                first_index,
                expected,
                "raft append is not contiguous"
            );
            return Err(StorageIOError::write_logs(AnyError::error(format!(
                "shard {}: append at index {first_index}, expected {expected}",
                self.shard_id
            )))
            .into());
        }
        index.entries.extend(metas);
        Ok(())
    }

    /// Reads raft entries `start..end` (as many as exist).
    pub fn read_entries(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let (from, ids) = {
            let index = self.lock();
            let start = start.max(index.state.anchor_index);
            let end = end.min(index.last_index().map_or(0, |l| l + 1));
            if start >= end {
                return Ok(Vec::new());
            }
            let Some(slot) = index.slot(start) else {
                return Ok(Vec::new());
            };
            let ids: Option<Vec<_>> = (start..end).map(|i| index.log_id(i)).collect();
            if ids.is_none() {
                tracing::error!(shard_id = self.shard_id, start, end, terms = ?index.state.terms, "raft entries without a known term");
            }
            (index.start_of_slot(slot), ids.unwrap_or_default())
        };
        let mut out = Vec::with_capacity(ids.len());
        let mut at = from;
        while out.len() < ids.len() {
            let read = self.shard.read(at, 1 << 20).map_err(io_error)?;
            let Some(last) = read.last() else { break };
            at = last.end;
            for entry in &read {
                let Some(id) = ids.get(out.len()) else { break };
                out.push(self.to_entry(*id, entry)?);
            }
        }
        if out.len() < ids.len() {
            tracing::error!(
                shard_id = self.shard_id,
                start,
                end,
                ?from,
                got = out.len(),
                want = ids.len(),
                "the shard log holds fewer entries than the raft index"
            );
        }
        Ok(out)
    }
}

/// openraft's log storage (and reader) of one shard group.
#[derive(Clone)]
pub(crate) struct LogStore {
    pub shared: Arc<Shared>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.read_entries(start, end))
            .await
            .map_err(io_error)?
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let index = self.shared.lock();
        let last_purged_log_id = index.state.purged;
        let last_log_id = index
            .last_index()
            .and_then(|i| index.log_id(i))
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.shared.lock().state.vote = Some(*vote);
        self.shared.persist().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.shared.lock().state.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let result = self
            .shared
            .append_entries(entries.into_iter().collect())
            .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let cut = {
            let mut index = self.shared.lock();
            let Some(slot) = index.slot(log_id.index) else {
                return Ok(());
            };
            let cut = index.start_of_slot(slot);
            index.entries.truncate(slot);
            index.state.truncate(log_id.index);
            cut
        };
        tracing::info!(
            shard_id = self.shared.shard_id,
            index = log_id.index,
            "raft truncates the log tail"
        );
        self.shared.shard.truncate(cut).await.map_err(io_error)?;
        self.shared.persist().await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut index = self.shared.lock();
            if let Some(slot) = index.slot(log_id.index) {
                let end = index.entries.get(slot).map(|m| m.end).unwrap_or_default();
                index.entries.drain(..=slot);
                index.state.set_anchor(log_id.index + 1, end);
            }
            if index.state.purged.is_none_or(|p| p.index < log_id.index) {
                index.state.purge(log_id);
            }
        }
        self.shared.persist().await
    }
}
