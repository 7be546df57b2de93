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
use wharf_record::BatchBuilder;
use wharf_storage::{
    Durability, LocalShardLog, Log, LogConfig, Position, ShardEntry, ShardLog, Storage,
};

use crate::state_file::{StateFile, StatePath};
use crate::types::{NodeId, Part, Request, TypeConfig};

/// Where one raft entry ends in the shard (it starts where the previous one ends), and the
/// offsets each of its parts was given (none for a control entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryMeta {
    pub parts: Vec<PartMeta>,
    pub end: Position,
}

/// The offsets one part of a raft entry was given in its partition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartMeta {
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
    /// Raised by every truncation of the tail: a read that started before it may find its
    /// entries gone (a leader's replication task still reading after the node stepped down).
    pub truncations: u64,
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

    pub fn meta(&self, index: u64) -> Option<&EntryMeta> {
        self.slot(index).and_then(|s| self.entries.get(s))
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
/// shard's control log. `Group(n)` starts a normal entry of `n` parts (n > 1): the next `n`
/// shard entries are its parts (an entry of one part is its shard entry alone).
#[derive(Debug, Serialize, Deserialize)]
enum ControlRecord {
    Blank,
    Membership(Membership<NodeId, openraft::BasicNode>),
    Group(u32),
}

fn decode_control(entry: &ShardEntry) -> Result<ControlRecord, String> {
    let value = wharf_record::first_value(&entry.batches)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    serde_json::from_slice(value).map_err(|e| e.to_string())
}

/// One raft entry as read back from the shard.
enum Unit {
    Blank(Position),
    Membership(Membership<NodeId, openraft::BasicNode>, Position),
    /// The parts' shard entries (never empty).
    Normal(Vec<ShardEntry>),
}

impl Unit {
    fn end(&self) -> Position {
        match self {
            Unit::Blank(end) | Unit::Membership(_, end) => *end,
            Unit::Normal(parts) => parts.last().map(|p| p.end).unwrap_or_default(),
        }
    }

    fn meta(&self) -> EntryMeta {
        let parts = match self {
            Unit::Normal(parts) => parts
                .iter()
                .map(|p| PartMeta {
                    log_id: p.log_id,
                    base_offset: p.base_offset,
                    last_offset: p.last_offset,
                    end: p.end,
                })
                .collect(),
            _ => Vec::new(),
        };
        EntryMeta {
            parts,
            end: self.end(),
        }
    }
}

/// Gathers shard entries, in order, into raft entries.
struct Gather {
    control_log: u64,
    /// The parts of a group read so far, and how many it has.
    group: Option<(usize, Vec<ShardEntry>)>,
}

impl Gather {
    fn new(control_log: u64) -> Self {
        Self {
            control_log,
            group: None,
        }
    }

    /// The next shard entry; a raft entry once it is complete.
    fn push(&mut self, entry: ShardEntry) -> Result<Option<Unit>, String> {
        if let Some((n, parts)) = &mut self.group {
            if entry.log_id == self.control_log {
                return Err(format!("a control entry inside a group of {n} parts"));
            }
            parts.push(entry);
            if parts.len() < *n {
                return Ok(None);
            }
            let (_, parts) = self.group.take().unwrap_or_default();
            return Ok(Some(Unit::Normal(parts)));
        }
        if entry.log_id != self.control_log {
            return Ok(Some(Unit::Normal(vec![entry])));
        }
        Ok(match decode_control(&entry)? {
            ControlRecord::Blank => Some(Unit::Blank(entry.end)),
            ControlRecord::Membership(m) => Some(Unit::Membership(m, entry.end)),
            ControlRecord::Group(n) if n > 1 => {
                self.group = Some((n as usize, Vec::with_capacity(n as usize)));
                None
            }
            ControlRecord::Group(n) => return Err(format!("a group of {n} parts")),
        })
    }

    /// Whether a group's parts are still expected.
    fn in_group(&self) -> bool {
        self.group.is_some()
    }
}

/// One shard-log append of a raft entry: the log, its batches, and the part it is (none for a
/// control record).
type ShardAppend = (Log, bytes::Bytes, Option<usize>);

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
    /// Writers waiting for the leader's own write only (acks=1), by `Part::local_ack`.
    pub local_acks: Mutex<HashMap<u64, LocalAck>>,
    /// Where a group cut short by a crash starts (its parts were never all written, so the
    /// entry was never acknowledged): the shard must be truncated there before raft starts.
    pub incomplete_tail: Option<Position>,
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
        let mut entries: VecDeque<EntryMeta> = VecDeque::new();
        let mut at = state.anchor();
        let mut gather = Gather::new(control_log);
        loop {
            let read = shard.read(at, 1 << 20).map_err(std::io::Error::other)?;
            let Some(last) = read.last() else { break };
            at = last.end;
            for e in read {
                if let Some(unit) = gather.push(e).map_err(std::io::Error::other)? {
                    entries.push_back(unit.meta());
                }
            }
        }
        let incomplete_tail = gather
            .in_group()
            .then(|| entries.back().map_or(state.anchor(), |m| m.end));
        storage.create_log(control_log, LogConfig::default());
        // Entries up to the last snapshot were applied; later ones may not be committed yet.
        let applied = state.snapshot.as_ref().map(|(last, _)| last.index);
        let mut committed_offsets = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for p in &e.parts {
                if applied.is_some_and(|a| state.anchor_index + i as u64 <= a) {
                    committed_offsets.insert(p.log_id, p.last_offset + 1);
                } else {
                    committed_offsets.entry(p.log_id).or_insert(p.base_offset);
                }
            }
        }
        let index = Index {
            state,
            entries,
            committed_offsets,
            truncations: 0,
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
            incomplete_tail,
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

    /// The shard-log appends of one raft entry: the control record, or the parts (after a
    /// `Group` record when there are several), each with its part's index.
    fn to_appends(
        &self,
        payload: &EntryPayload<TypeConfig>,
    ) -> Result<Vec<ShardAppend>, StorageError<NodeId>> {
        let mut out = Vec::new();
        let control = match payload {
            EntryPayload::Normal(request) if request.parts.len() == 1 => None,
            EntryPayload::Normal(request) => Some(ControlRecord::Group(
                u32::try_from(request.parts.len()).map_err(io_error)?,
            )),
            EntryPayload::Blank => Some(ControlRecord::Blank),
            EntryPayload::Membership(m) => Some(ControlRecord::Membership(m.clone())),
        };
        if let Some(control) = control {
            let value = serde_json::to_vec(&control).map_err(io_error)?;
            let mut builder = BatchBuilder::new(0);
            builder.push(None, Some(&value), &[], 0);
            out.push((
                self.log(self.control_log),
                bytes::Bytes::from(builder.build()),
                None,
            ));
        }
        if let EntryPayload::Normal(request) = payload {
            for (i, part) in request.parts.iter().enumerate() {
                out.push((self.log(part.log_id), part.batches.clone(), Some(i)));
            }
        }
        Ok(out)
    }

    /// A raft entry as read back from the shard.
    fn to_entry(log_id: LogId<NodeId>, unit: Unit) -> Entry<TypeConfig> {
        let payload = match unit {
            Unit::Blank(_) => EntryPayload::Blank,
            Unit::Membership(m, _) => EntryPayload::Membership(m),
            Unit::Normal(parts) => EntryPayload::Normal(Request {
                parts: parts
                    .into_iter()
                    .map(|p| Part {
                        log_id: p.log_id,
                        batches: p.batches,
                        local_ack: 0,
                    })
                    .collect(),
            }),
        };
        Entry { log_id, payload }
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
                    for part in &request.parts {
                        // Before the write: the log's records so far are all committed.
                        index
                            .committed_offsets
                            .entry(part.log_id)
                            .or_insert_with(|| self.log(part.log_id).high_watermark());
                    }
                }
            }
            changed
        };
        if terms_changed {
            self.persist().await?;
        }
        // Every shard append of every entry is handed to the writer before any is waited
        // for: one group commit, one fdatasync.
        let mut pending = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            for (log, batches, part) in self.to_appends(&e.payload)? {
                let appending = self
                    .shard
                    .append(&log, batches, Durability::Synced)
                    .map_err(io_error)?;
                pending.push((i, part, log.id(), appending));
            }
        }
        let mut metas: Vec<EntryMeta> = entries
            .iter()
            .map(|_| EntryMeta {
                parts: Vec::new(),
                end: Position::default(),
            })
            .collect();
        for (i, part, log_id, appending) in pending {
            let appended = appending.wait_appended().await.map_err(io_error)?;
            let (Some(meta), Some(entry)) = (metas.get_mut(i), entries.get(i)) else {
                continue;
            };
            meta.end = appended.position;
            let Some(part) = part else { continue };
            meta.parts.push(PartMeta {
                log_id,
                base_offset: appended.info.base_offset,
                last_offset: appended.info.last_offset,
                end: appended.position,
            });
            let local_ack = match &entry.payload {
                EntryPayload::Normal(r) => r.parts.get(part).map_or(0, |p| p.local_ack),
                _ => 0,
            };
            if local_ack != 0 {
                let waiter = self
                    .local_acks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&local_ack);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Ok(appended));
                }
            }
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
        match self.plan_read(start, end) {
            Some(plan) => self.read_planned(&plan),
            None => Ok(Vec::new()),
        }
    }

    /// Where entries `start..end` are, as the index has them now (`None`: none exist).
    fn plan_read(&self, start: u64, end: u64) -> Option<ReadPlan> {
        let index = self.lock();
        let start = start.max(index.state.anchor_index);
        let end = end.min(index.last_index().map_or(0, |l| l + 1));
        if start >= end {
            return None;
        }
        let slot = index.slot(start)?;
        let ids: Option<Vec<_>> = (start..end).map(|i| index.log_id(i)).collect();
        if ids.is_none() {
            tracing::error!(shard_id = self.shard_id, start, end, terms = ?index.state.terms, "raft entries without a known term");
        }
        Some(ReadPlan {
            start,
            end,
            from: index.start_of_slot(slot),
            ids: ids.unwrap_or_default(),
            truncations: index.truncations,
        })
    }

    /// Reads what `plan` names from the shard, unless a truncation came in between.
    fn read_planned(
        &self,
        plan: &ReadPlan,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let ReadPlan {
            start,
            end,
            from,
            ref ids,
            truncations,
        } = *plan;
        let read = || -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
            let mut out = Vec::with_capacity(ids.len());
            let mut at = from;
            let mut gather = Gather::new(self.control_log);
            'read: while out.len() < ids.len() {
                let read = self.shard.read(at, 1 << 20).map_err(io_error)?;
                let Some(last) = read.last() else { break };
                at = last.end;
                for entry in read {
                    let Some(&id) = ids.get(out.len()) else {
                        break 'read;
                    };
                    let unit = gather.push(entry).map_err(|e| {
                        StorageIOError::read_log_at_index(id.index, AnyError::error(e))
                    })?;
                    if let Some(unit) = unit {
                        out.push(Self::to_entry(id, unit));
                    }
                }
            }
            Ok(out)
        };
        let read = read();
        if self.lock().truncations != truncations {
            // The tail was cut under this read: positions may be gone or hold other entries,
            // and whoever asked is a replication task of a leadership that ended. Not a
            // storage failure (openraft stops the group on one): nothing is returned.
            tracing::info!(
                shard_id = self.shard_id,
                start,
                end,
                ok = read.is_ok(),
                "raft entries truncated while being read"
            );
            return Ok(Vec::new());
        }
        let out = read?;
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

/// Entries to read: their raft ids, where the first starts, and the truncation count then.
struct ReadPlan {
    start: u64,
    end: u64,
    from: Position,
    ids: Vec<LogId<NodeId>>,
    truncations: u64,
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
            index.truncations += 1;
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

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use wharf_storage::conformance::{batch, value_of};
    use wharf_storage::StorageConfig;

    use super::*;

    const CONTROL: u64 = 1 << 40;

    fn entry(term: u64, index: u64, values: &[&str]) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Request {
                parts: values
                    .iter()
                    .map(|v| Part {
                        log_id: 2,
                        batches: batch(v),
                        local_ack: 0,
                    })
                    .collect(),
            }),
        }
    }

    fn values(entries: &[Entry<TypeConfig>]) -> Vec<(u64, Vec<String>)> {
        entries
            .iter()
            .map(|e| {
                let EntryPayload::Normal(r) = &e.payload else {
                    return (e.log_id.index, Vec::new());
                };
                let values = r
                    .parts
                    .iter()
                    .map(|p| {
                        value_of(&ShardEntry {
                            log_id: p.log_id,
                            base_offset: 0,
                            last_offset: 0,
                            batches: p.batches.clone(),
                            end: Position::default(),
                        })
                    })
                    .collect();
                (e.log_id.index, values)
            })
            .collect()
    }

    /// A leader's replication task that planned a read, then the node stepped down and its
    /// tail was truncated and rewritten: the read returns nothing (not another leader's
    /// entries under the old ids, not an error, which would stop the group).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_planned_before_a_truncation_returns_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StorageConfig::new(dir.path());
        config.shards = 1;
        let storage = Storage::open(config).unwrap();
        storage.create_log(2, LogConfig::default());
        let raft_dir = dir.path().join("raft");
        wharf_storage::durable::ensure_dir(&*storage.config().fs, &raft_dir).unwrap();
        let state_path = StatePath::new(storage.config().fs.clone(), &raft_dir, 0);
        let shared = Arc::new(
            Shared::open(&storage, storage.shard_log(0).unwrap(), CONTROL, state_path).unwrap(),
        );
        shared
            .append_entries(vec![
                entry(1, 0, &["a"]),
                entry(1, 1, &["b"]),
                entry(1, 2, &["c"]),
                entry(1, 3, &["d", "e", "f"]),
            ])
            .await
            .unwrap();
        let plan = shared.plan_read(0, 4).unwrap();
        assert_eq!(
            values(&shared.read_planned(&plan).unwrap()),
            [
                (0, vec!["a".to_string()]),
                (1, vec!["b".into()]),
                (2, vec!["c".into()]),
                (3, vec!["d".into(), "e".into(), "f".into()]),
            ]
        );
        let mut store = LogStore {
            shared: shared.clone(),
        };
        store
            .truncate(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .await
            .unwrap();
        shared
            .append_entries(vec![entry(2, 2, &["x", "y"]), entry(2, 3, &["z"])])
            .await
            .unwrap();
        assert!(
            shared.read_planned(&plan).unwrap().is_empty(),
            "the plan was made before the truncation"
        );
        let entries = shared.read_entries(0, 4).unwrap();
        assert_eq!(
            values(&entries),
            [
                (0, vec!["a".to_string()]),
                (1, vec!["b".into()]),
                (2, vec!["x".into(), "y".into()]),
                (3, vec!["z".into()]),
            ]
        );
        assert_eq!(entries[2].log_id.leader_id.term, 2);
        storage.shutdown();
    }
}
