//! [`ShardGroup`]: one shard of a `Storage` run as an openraft group, and
//! [`ReplicatedShardLog`], the shard-log contract over it: an append completes once a majority
//! committed it (each replica fdatasync-ed it) and the leader applied it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use openraft::error::{ClientWriteError, InitializeError, RaftError as OpenRaftError};
use openraft::{BasicNode, Raft};
use tokio::sync::{mpsc, oneshot, watch};
use wharf_storage::{
    Appended, Durability, Log, PendingAppend, Position, ShardEntry, ShardLog, Storage,
    StorageError, Truncating,
};

use crate::log_store::{LogStore, Shared};
use crate::network::NetworkFactory;
use crate::state_file::StatePath;
use crate::state_machine::StateMachine;
use crate::types::{NodeId, Request, TypeConfig};
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
        tokio::spawn(forward(raft.clone(), shard_id, rx));
        Ok(Self {
            raft,
            shared,
            node_id: config.node_id,
            submit,
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
}

type Reply = oneshot::Sender<Result<Appended, StorageError>>;
type Submit = mpsc::UnboundedSender<(Request, Reply)>;

/// Hands writes to raft in the order they were submitted (one task per group), then waits for
/// each commit on its own task: appends submitted in order are committed in order.
async fn forward(
    raft: Raft<TypeConfig>,
    shard_id: usize,
    mut rx: mpsc::UnboundedReceiver<(Request, Reply)>,
) {
    while let Some((request, reply)) = rx.recv().await {
        match raft.client_write_ff(request).await {
            Ok(committed) => {
                tokio::spawn(async move {
                    let result = match committed.await {
                        Ok(Ok(written)) => Ok(Appended {
                            info: written.data.info(),
                            position: written.data.position(),
                        }),
                        Ok(Err(e)) => Err(write_error(shard_id, OpenRaftError::APIError(e))),
                        Err(_) => Err(StorageError::ShutDown),
                    };
                    let _ = reply.send(result);
                });
            }
            Err(fatal) => {
                let _ = reply.send(Err(write_error(shard_id, OpenRaftError::Fatal(fatal))));
            }
        }
    }
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
    /// `durability` is met by the majority commit for both values (acks=1 waits as acks=all
    /// does for now: ADR 0012).
    fn append(
        &self,
        log: &Log,
        batches: Bytes,
        _durability: Durability,
    ) -> Result<PendingAppend, StorageError> {
        let shard_id = self.shared.shard_id;
        if log.shard_id() != shard_id || log.id() == self.shared.control_log {
            return Err(StorageError::UnknownLog { log_id: log.id() });
        }
        let (reply, pending) = PendingAppend::channel();
        let request = Request {
            log_id: log.id(),
            batches: batches.to_vec(),
        };
        self.submit
            .send((request, reply))
            .map_err(|_| StorageError::ShutDown)?;
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
