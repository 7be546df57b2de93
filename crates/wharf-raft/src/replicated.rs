//! [`ShardGroup`]: one shard of a `Storage` run as an openraft group, and
//! [`ReplicatedShardLog`], the shard-log contract over it: an append completes once a majority
//! committed it (each replica fdatasync-ed it) and the leader applied it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use openraft::error::{ClientWriteError, InitializeError, RaftError as OpenRaftError};
use openraft::{BasicNode, Raft};
use tokio::sync::{mpsc, oneshot, watch};
use wharf_storage::{
    Appended, Durability, Log, PendingAppend, Position, ShardEntry, ShardLog, Storage,
    StorageError, Truncating,
};

use crate::log_store::{LocalAck, LogStore, Shared};
use crate::network::NetworkFactory;
use crate::state_file::StatePath;
use crate::state_machine::StateMachine;
use crate::types::{NodeId, Part, Request, TypeConfig};
use crate::RaftError;

/// How to run one shard group on this node.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub node_id: NodeId,
    /// The group's id on the wire (the shard id for shard groups).
    pub group: u64,
    /// A log id no partition uses: the shard's raft control entries (Blank, Membership).
    pub control_log: u64,
    /// Directory of the raft state file (vote, anchor, term starts).
    pub state_dir: PathBuf,
    pub raft: openraft::Config,
}

/// One shard replicated as an openraft group.
pub struct ShardGroup {
    raft: Raft<TypeConfig>,
    shared: Arc<Shared>,
    node_id: NodeId,
    submit: Submit,
    next_local_ack: Arc<AtomicU64>,
}

impl ShardGroup {
    pub async fn open(
        storage: &Storage,
        shard_id: usize,
        config: GroupConfig,
        network: NetworkFactory,
    ) -> Result<Self, RaftError> {
        let shard = storage
            .shard_log(shard_id)
            .ok_or(RaftError::UnknownShard { shard_id })?;
        let fs = storage.config().fs.clone();
        wharf_storage::durable::ensure_dir(&*fs, &config.state_dir).map_err(|source| {
            RaftError::StateFile {
                shard_id,
                path: config.state_dir.clone(),
                source,
            }
        })?;
        let state_path = StatePath::new(fs, &config.state_dir, shard_id);
        let path = state_path.path.clone();
        let shared = Arc::new(
            Shared::open(storage, shard, config.control_log, state_path).map_err(|source| {
                RaftError::StateFile {
                    shard_id,
                    path,
                    source,
                }
            })?,
        );
        if let Some(cut) = shared.incomplete_tail {
            // A crash cut the last entry's parts short: it was never acknowledged.
            tracing::warn!(
                shard_id,
                ?cut,
                "dropping an entry whose parts were not all written"
            );
            shared
                .shard
                .truncate(cut)
                .await
                .map_err(|source| RaftError::Truncate { shard_id, source })?;
        }
        let raft_config = Arc::new(
            config
                .raft
                .validate()
                .map_err(|source| RaftError::Config { shard_id, source })?,
        );
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            LogStore {
                shared: shared.clone(),
            },
            StateMachine::new(shared.clone()),
        )
        .await
        .map_err(|source| RaftError::Start { shard_id, source })?;
        let (submit, rx) = mpsc::unbounded_channel();
        tokio::spawn(forward(raft.clone(), shared.clone(), rx));
        Ok(Self {
            raft,
            shared,
            node_id: config.node_id,
            submit,
            next_local_ack: Arc::default(),
        })
    }

    /// Makes `members` the group's voters if the group has never been initialized (every node
    /// may call it with the same members; a node with a log or a vote ignores it).
    pub async fn initialize(&self, members: BTreeMap<NodeId, BasicNode>) -> Result<(), RaftError> {
        match self.raft.initialize(members).await {
            Ok(()) | Err(OpenRaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(OpenRaftError::APIError(InitializeError::NotInMembers(e))) => {
                tracing::warn!(shard_id = self.shared.shard_id, %e, "this node is not in cluster_peers");
                Ok(())
            }
            Err(OpenRaftError::Fatal(source)) => Err(RaftError::Start {
                shard_id: self.shared.shard_id,
                source,
            }),
        }
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn shard_log(&self) -> ReplicatedShardLog {
        ReplicatedShardLog {
            shared: self.shared.clone(),
            submit: self.submit.clone(),
            next_local_ack: self.next_local_ack.clone(),
        }
    }

    /// Stops the group's raft tasks (the storage stays open).
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(shard_id = self.shared.shard_id, %error, "raft shutdown");
        }
    }
}

/// The shard-log contract over a [`ShardGroup`]. Appends go through the leader; `committed`
/// is the majority-committed position applied on this node; `read` serves only committed
/// entries; `truncate` is raft's alone.
#[derive(Clone)]
pub struct ReplicatedShardLog {
    shared: Arc<Shared>,
    submit: Submit,
    /// The last `Request::local_ack` handed out (shared by the group's handles).
    next_local_ack: Arc<AtomicU64>,
}

type Reply = oneshot::Sender<Result<Appended, StorageError>>;

/// One write waiting to go to raft.
struct Write {
    part: Part,
    reply: Reply,
}

type Submit = mpsc::UnboundedSender<Write>;

/// Raft entries a group's leader has in flight (written, not yet committed) before it gathers
/// further writes into the next one. openraft 0.9's core appends and fdatasyncs each entry on
/// its own, so an entry per write made the leader's disk the limit (ADR 0012).
const ENTRIES_IN_FLIGHT: usize = 4;
/// The batches one entry gathers at most (one write larger than this goes alone). A follower
/// must write and fdatasync an AppendEntries (8 entries) within openraft's deadline, the
/// heartbeat interval.
const ENTRY_BYTES: usize = 1 << 20;
/// The writes one entry gathers at most.
const ENTRY_PARTS: usize = 1024;

/// Hands writes to raft in the order they were submitted (one task per group), gathering those
/// that queued while `ENTRIES_IN_FLIGHT` entries were in flight into one entry, then waits for
/// each commit on its own task: writes submitted in order are committed in order.
async fn forward(
    raft: Raft<TypeConfig>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Write>,
) {
    let shard_id = shared.shard_id;
    let slots = Arc::new(tokio::sync::Semaphore::new(ENTRIES_IN_FLIGHT));
    let mut carried: Option<Write> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(write) => write,
            None => match rx.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        let mut bytes = first.part.batches.len();
        let mut writes = vec![first];
        while writes.len() < ENTRY_PARTS {
            let Ok(write) = rx.try_recv() else { break };
            bytes += write.part.batches.len();
            if bytes > ENTRY_BYTES {
                carried = Some(write);
                break;
            }
            writes.push(write);
        }
        let (parts, replies): (Vec<Part>, Vec<Reply>) =
            writes.into_iter().map(|w| (w.part, w.reply)).unzip();
        let local_acks: Vec<u64> = parts.iter().map(|p| p.local_ack).collect();
        let shared = shared.clone();
        match raft.client_write_ff(Request { parts }).await {
            Ok(committed) => {
                tokio::spawn(async move {
                    let _slot = slot;
                    match committed.await {
                        Ok(Ok(written)) => {
                            let mut infos = written.data.parts.into_iter();
                            for (reply, local_ack) in replies.into_iter().zip(local_acks) {
                                match infos.next() {
                                    Some(info) => {
                                        let _ = reply.send(Ok(Appended {
                                            info: info.info(),
                                            position: info.position(),
                                        }));
                                    }
                                    None => {
                                        fail(&shared, &StorageError::ShutDown, reply, local_ack);
                                    }
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            let error = write_error(shard_id, OpenRaftError::APIError(e));
                            for (reply, local_ack) in replies.into_iter().zip(local_acks) {
                                fail(&shared, &error, reply, local_ack);
                            }
                        }
                        Err(_) => {
                            for (reply, local_ack) in replies.into_iter().zip(local_acks) {
                                fail(&shared, &StorageError::ShutDown, reply, local_ack);
                            }
                        }
                    }
                });
            }
            Err(fatal) => {
                let error = write_error(shard_id, OpenRaftError::Fatal(fatal));
                for (reply, local_ack) in replies.into_iter().zip(local_acks) {
                    fail(&shared, &error, reply, local_ack);
                }
            }
        }
    }
}

/// Fails a write, and its acks=1 writer (who waits on the local write instead) too. The errors
/// a write fails with here: not the leader, or stopped.
fn fail(shared: &Shared, error: &StorageError, reply: Reply, local_ack: u64) {
    let copy = || match error {
        StorageError::NotLeader { shard_id, leader } => StorageError::NotLeader {
            shard_id: *shard_id,
            leader: *leader,
        },
        _ => StorageError::ShutDown,
    };
    if local_ack != 0 {
        if let Some(waiter) = lock_acks(shared).remove(&local_ack) {
            let _ = waiter.send(Err(copy()));
        }
    }
    let _ = reply.send(Err(copy()));
}

fn lock_acks(
    shared: &Shared,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, LocalAck>> {
    // Inserts and removes leave the map whole.
    shared
        .local_acks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_error(
    shard_id: usize,
    e: OpenRaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> StorageError {
    match e {
        OpenRaftError::APIError(ClientWriteError::ForwardToLeader(f)) => StorageError::NotLeader {
            shard_id,
            leader: f.leader_id,
        },
        OpenRaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            tracing::error!(shard_id, %error, "unexpected membership error on a write");
            StorageError::ShutDown
        }
        OpenRaftError::Fatal(error) => {
            tracing::error!(shard_id, %error, "raft stopped");
            StorageError::ShutDown
        }
    }
}

impl ShardLog for ReplicatedShardLog {
    /// `Synced` (acks=all) completes at the majority commit; `Written` (acks=1) once the
    /// leader's own log holds the entry, as Kafka's acks=1: such a write may be lost if the
    /// leader fails before a majority holds it (a later leader truncates it). Either way
    /// consumers see the entry only once it is committed.
    fn append(
        &self,
        log: &Log,
        batches: Bytes,
        durability: Durability,
    ) -> Result<PendingAppend, StorageError> {
        let shard_id = self.shared.shard_id;
        if log.shard_id() != shard_id || log.id() == self.shared.control_log {
            return Err(StorageError::UnknownLog { log_id: log.id() });
        }
        let (reply, pending) = PendingAppend::channel();
        let (reply, pending, local_ack) = match durability {
            Durability::Synced => (reply, pending, 0),
            Durability::Written => {
                let local_ack = self.next_local_ack.fetch_add(1, Ordering::Relaxed) + 1;
                let (waiter, local) = PendingAppend::channel();
                lock_acks(&self.shared).insert(local_ack, waiter);
                // The commit's answer goes nowhere: the writer waits on the local write.
                drop(pending);
                (reply, local, local_ack)
            }
        };
        let part = Part {
            log_id: log.id(),
            batches,
            local_ack,
        };
        if self.submit.send(Write { part, reply }).is_err() {
            lock_acks(&self.shared).remove(&local_ack);
            return Err(StorageError::ShutDown);
        }
        Ok(pending)
    }

    fn committed(&self) -> watch::Receiver<Position> {
        self.shared.committed.subscribe()
    }

    fn high_watermark(&self, log: &Log) -> i64 {
        let committed = self.shared.lock().committed_offsets.get(&log.id()).copied();
        committed.unwrap_or_else(|| log.high_watermark())
    }

    fn read(&self, from: Position, max_bytes: usize) -> Result<Vec<ShardEntry>, StorageError> {
        let committed = *self.shared.committed.borrow();
        let mut entries = self.shared.shard.read(from, max_bytes)?;
        entries.retain(|e| e.end <= committed);
        Ok(entries)
    }

    fn truncate(&self, _at: Position) -> Truncating {
        let shard_id = self.shared.shard_id;
        Box::pin(async move { Err(StorageError::TruncateReplicated { shard_id }) })
    }
}

impl ReplicatedShardLog {
    /// The shard entries as stored on this node, committed or not (for tests and verification).
    pub fn read_local(
        &self,
        from: Position,
        max_bytes: usize,
    ) -> Result<Vec<ShardEntry>, StorageError> {
        self.shared.shard.read(from, max_bytes)
    }
}
