//! The controller (ADR 0012, KRaft's idea): cluster metadata lives in an openraft group of its
//! own, apart from the shard groups, over a one-shard `Storage` in `<data_dir>/controller`
//! (the same `ShardGroup` adapter). Its entries are JSON metadata records in a reserved log of
//! that storage. The group's leader is the controller: it checks each metadata change against
//! what it applied, allocates log ids and topic ids and commits the record; every node, the
//! leader included, applies committed records in log order to its broker
//! (`Broker::apply_metadata`, idempotent). A node that is not the controller forwards the
//! change over the cluster port (KIP-590's forwarding) and answers its client once it applied
//! the record itself, so a topic created through any node is at once visible on it.
//!
//! ```text
//!  Broker::create_topic ─► MetadataLog::submit ─► leader? lead : forward(Rpc::Forward) ─► lead
//!    lead: ensure_linearizable, wait applied ─► prepare_metadata ─► raft append (majority)
//!    every node: apply loop reads committed entries ─► Broker::apply_metadata(offset, record)
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use wharf_broker::metadata_log::{MetadataLog, MetadataRecord, MetadataRefusal, MetadataRequest};
use wharf_broker::{Broker, BrokerError, FIRST_RESERVED_LOG_ID};
use wharf_raft::{Cuts, GroupConfig, NetworkFactory, ReplicatedShardLog, ShardGroup};
use wharf_record::BatchBuilder;
use wharf_storage::{
    Durability, Log, LogConfig, Position, ShardLog, Storage, StorageConfig, StorageError,
};

use crate::cluster::Cluster;

/// The controller group's id on the cluster port (shard groups use their shard id).
pub const CONTROLLER_GROUP: u64 = 1 << 32;
/// The controller shard's raft control log (Blank and Membership entries).
const CONTROL_LOG: u64 = FIRST_RESERVED_LOG_ID;
/// The log of metadata records in the controller's storage.
const METADATA_LOG: u64 = FIRST_RESERVED_LOG_ID + 1;
/// How long a metadata change may wait for a controller to be elected, to commit it and for
/// this node to apply it.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// One forwarded request to the controller.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "wharf-controller".into(),
        // As the shard groups (`cluster::raft_config`): at 100 ms, AppendEntries and votes
        // timed out on loaded nodes and the controller's leadership churned.
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // The metadata log is small and kept whole: a lagging node catches up by entries.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        ..openraft::Config::default()
    }
}

/// This node's member of the controller group.
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    broker: Arc<Broker>,
    storage: Storage,
    group: ShardGroup,
    log: ReplicatedShardLog,
    metadata: Log,
    /// The members and their cluster listeners (`cluster_peers`, then the membership).
    state: Arc<crate::cluster::ClusterState>,
    /// The offset of the next metadata record to apply here, and the controller shard
    /// position applied through.
    applied: watch::Sender<(i64, Position)>,
    /// The leader prepares and commits one change at a time (log ids are allocated from what
    /// is applied).
    one_at_a_time: tokio::sync::Mutex<()>,
    runtime: tokio::runtime::Handle,
    stopped: AtomicBool,
}

impl Controller {
    /// Opens the controller storage and group, starts applying committed records to `broker`,
    /// serves forwarded changes and hands `broker` its metadata log.
    pub async fn start(cluster: &Cluster, broker: Arc<Broker>) -> anyhow::Result<Self> {
        let (node_id, server, members, state, join) = cluster.controller_parts();
        let data_dir = broker.storage().config().data_dir.join("controller");
        let mut config = StorageConfig::new(&data_dir);
        config.shards = 1;
        config.segment_bytes = 64 << 20;
        config.fs = broker.storage().config().fs.clone();
        let storage = tokio::task::spawn_blocking(move || Storage::open(config))
            .await?
            .with_context(|| format!("opening the controller storage {}", data_dir.display()))?;
        let peers: std::collections::BTreeMap<u64, String> = members
            .iter()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let network =
            NetworkFactory::new(CONTROLLER_GROUP, node_id, Cuts::default()).with_addresses(peers);
        let group = ShardGroup::open(
            &storage,
            0,
            GroupConfig {
                node_id,
                group: CONTROLLER_GROUP,
                control_log: CONTROL_LOG,
                state_dir: data_dir.join("raft"),
                raft: raft_config(),
            },
            network,
        )
        .await
        .context("opening the controller group")?;
        // Metadata is kept whole: no retention on the controller's logs.
        let keep = LogConfig {
            retention_ms: -1,
            retention_bytes: -1,
            delete: false,
            ..LogConfig::default()
        };
        storage.create_log(CONTROL_LOG, keep);
        let metadata = storage.create_log(METADATA_LOG, keep);
        server.register(CONTROLLER_GROUP, group.raft().clone());
        // A joining node (`cluster_join`) is added by the controller's leader (ADR 0019).
        if !join {
            group
                .initialize(members)
                .await
                .context("initializing the controller group")?;
        }
        let start = storage.shard_log(0).map(|s| s.start()).unwrap_or_default();
        let inner = Arc::new(Inner {
            node_id,
            log: group.shard_log(),
            applied: watch::channel((broker.metadata_offset(), start)).0,
            broker: broker.clone(),
            storage,
            group,
            metadata,
            state: state.clone(),
            one_at_a_time: tokio::sync::Mutex::new(()),
            runtime: tokio::runtime::Handle::current(),
            stopped: AtomicBool::new(false),
        });
        state.set_controller(inner.group.raft().clone());
        let serving = inner.clone();
        server.set_forward(Arc::new(move |from, body| {
            let inner = serving.clone();
            Box::pin(async move {
                // A membership probe or change of one group (ADR 0019), or a metadata change.
                if serde_json::from_str::<crate::membership::Probe>(&body).is_ok() {
                    return crate::membership::answer_probe(&inner.state).await;
                }
                match serde_json::from_str::<crate::membership::Forwarded>(&body) {
                    Ok(change) => {
                        tracing::info!(from, ?change, "forwarded membership change");
                        crate::membership::serve_forwarded(&inner.state, change).await
                    }
                    Err(_) => inner.serve_forward(from, &body).await,
                }
            })
        }));
        tokio::spawn(apply_committed(inner.clone()));
        tokio::spawn(commit_cluster_id(inner.clone()));
        broker.set_metadata_log(Arc::new(Submitter(inner.clone())));
        tracing::info!(node_id, "controller group started");
        Ok(Self { inner })
    }

    /// Stops the group and flushes the controller storage (before the broker's).
    pub async fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.group.shutdown().await;
        if let Err(error) = self.inner.storage.flush().await {
            tracing::error!(%error, "flushing the controller storage at shutdown failed");
        }
        self.inner.storage.shutdown();
    }
}

fn not_controller(reason: impl std::fmt::Display) -> BrokerError {
    BrokerError::NotController(reason.to_string())
}

impl Inner {
    fn leader(&self) -> Option<u64> {
        self.group.raft().metrics().borrow().current_leader
    }

    /// A change from any node: through the controller, then applied here.
    async fn submit(&self, request: MetadataRequest) -> Result<(), BrokerError> {
        let deadline = Instant::now() + SUBMIT_TIMEOUT;
        loop {
            let attempt = match self.leader() {
                Some(leader) if leader == self.node_id => self.lead(request.clone()).await,
                Some(leader) => self.forward_to(leader, &request).await,
                None => Err(not_controller("no controller is elected")),
            };
            match attempt {
                Ok(offset) => return self.wait_applied(offset, deadline).await,
                // Nothing was proposed: retry while the controller moves.
                Err(BrokerError::NotController(reason)) if Instant::now() < deadline => {
                    tracing::debug!(%reason, "metadata change waits for a controller");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(BrokerError::TopicAlreadyExists { topic }) => {
                    // The controller has it; this node may not have applied it yet. A short
                    // wait lets the caller (Metadata auto-creation) find it here.
                    let mut applied = self.applied.subscribe();
                    let known = applied.wait_for(|_| self.broker.topic(&topic).is_some());
                    let _ = tokio::time::timeout(Duration::from_secs(5), known).await;
                    return Err(BrokerError::TopicAlreadyExists { topic });
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn forward_to(&self, leader: u64, request: &MetadataRequest) -> Result<i64, BrokerError> {
        let addr = self
            .state
            .member_addr(leader)
            .ok_or_else(|| not_controller(format!("no address known for controller {leader}")))?;
        let addr = addr.as_str();
        let body = serde_json::to_string(request)
            .map_err(|e| BrokerError::Metadata(format!("encoding a metadata request: {e}")))?;
        let reply = wharf_raft::forward(addr, self.node_id, body, FORWARD_TIMEOUT)
            .await
            .map_err(|e| not_controller(format!("controller {leader} at {addr}: {e}")))?;
        let answer: Result<i64, MetadataRefusal> = serde_json::from_str(&reply).map_err(|e| {
            BrokerError::Metadata(format!("controller {leader} answered {reply:?}: {e}"))
        })?;
        answer.map_err(BrokerError::from)
    }

    /// Serves a change forwarded by `from`: the answer is the record's offset or the refusal.
    async fn serve_forward(&self, from: u64, body: &str) -> String {
        let answer = match serde_json::from_str::<MetadataRequest>(body) {
            Ok(request) => {
                tracing::debug!(from, ?request, "forwarded metadata change");
                self.lead(request)
                    .await
                    .map_err(|e| MetadataRefusal::from(&e))
            }
            Err(e) => {
                tracing::warn!(from, error = %e, "forwarded metadata request does not decode");
                Err(MetadataRefusal::InvalidRequest(format!(
                    "metadata request does not decode: {e}"
                )))
            }
        };
        serde_json::to_string(&answer)
            .unwrap_or_else(|e| format!("{{\"Err\":{{\"Other\":\"encoding the answer: {e}\"}}}}"))
    }

    /// The controller's side of a change: commits its record and returns the record's offset
    /// once this node applied it. `NotController` unless this node leads the group.
    async fn lead(&self, request: MetadataRequest) -> Result<i64, BrokerError> {
        if self.leader() != Some(self.node_id) {
            return Err(not_controller(format!(
                "node {} is not the controller (leader: {:?})",
                self.node_id,
                self.leader()
            )));
        }
        let _one = self.one_at_a_time.lock().await;
        // A leader cut off from the others cannot confirm its leadership: bounded.
        tokio::time::timeout(FORWARD_TIMEOUT, self.group.raft().ensure_linearizable())
            .await
            .map_err(|_| not_controller("the controller cannot confirm its leadership"))?
            .map_err(not_controller)?;
        // Everything committed before this change is applied here before it is checked.
        let committed = *self.log.committed().borrow();
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(SUBMIT_TIMEOUT, applied.wait_for(|a| a.1 >= committed))
            .await
            .map_err(|_| not_controller("the controller has not applied its log yet"))?
            .map_err(|_| not_controller("the controller stopped"))?;
        let broker = self.broker.clone();
        let record = tokio::task::spawn_blocking(move || broker.prepare_metadata(&request))
            .await
            .map_err(|e| BrokerError::Metadata(format!("preparing a metadata change: {e}")))??;
        let value = serde_json::to_vec(&record)
            .map_err(|e| BrokerError::Metadata(format!("encoding a metadata record: {e}")))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut batch = BatchBuilder::new(now);
        batch.push(None, Some(&value), &[], now);
        let appending = self
            .log
            .append(
                &self.metadata,
                bytes::Bytes::from(batch.build()),
                Durability::Synced,
            )?
            .wait_appended();
        // Not committed in time (a cut-off leader): the outcome is unknown, as in Kafka.
        let appended = tokio::time::timeout(SUBMIT_TIMEOUT, appending)
            .await
            .map_err(|_| {
                BrokerError::Metadata(
                    "the metadata change was not committed in time; it may still be".into(),
                )
            })?
            .map_err(|e| match e {
                StorageError::NotLeader { .. } => {
                    not_controller("the controller lost its leadership")
                }
                other => BrokerError::Storage(other),
            })?;
        let offset = appended.info.base_offset;
        tracing::info!(offset, ?record, "metadata record committed");
        self.wait_applied(offset, Instant::now() + SUBMIT_TIMEOUT)
            .await?;
        Ok(offset)
    }

    /// Waits until this node applied the record at `offset`.
    async fn wait_applied(&self, offset: i64, deadline: Instant) -> Result<(), BrokerError> {
        let mut applied = self.applied.subscribe();
        let left = deadline.saturating_duration_since(Instant::now());
        let reached = matches!(
            tokio::time::timeout(left, applied.wait_for(|a| a.0 > offset)).await,
            Ok(Ok(_))
        );
        if reached {
            Ok(())
        } else {
            Err(BrokerError::Metadata(format!(
                "metadata record {offset} is committed but not yet applied on this node"
            )))
        }
    }
}

/// The broker's handle: a blocking `submit` over the async controller.
struct Submitter(Arc<Inner>);

impl MetadataLog for Submitter {
    fn submit(&self, request: MetadataRequest) -> Result<(), BrokerError> {
        let inner = self.0.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.0.runtime.spawn(async move {
            let _ = tx.send(inner.submit(request).await);
        });
        let wait = || {
            rx.recv_timeout(SUBMIT_TIMEOUT + FORWARD_TIMEOUT)
                .unwrap_or_else(|_| Err(not_controller("the controller did not answer in time")))
        };
        // Some callers run on an async worker (InitProducerId reserving a block): the worker
        // is handed over while it waits, so the change itself can run.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }
}

/// A metadata record as stored: the JSON value of the entry's one record.
fn decode(batches: &[u8]) -> Result<MetadataRecord, String> {
    let value = wharf_record::first_value(batches)
        .map_err(|e| e.to_string())?
        .ok_or("metadata entry without a record value")?;
    serde_json::from_slice(value).map_err(|e| e.to_string())
}

/// Applies committed metadata records to the broker in log order, from the start of the
/// controller log (records this node applied before are skipped by their offset).
async fn apply_committed(inner: Arc<Inner>) {
    let mut committed = inner.log.committed();
    let start = || {
        inner
            .storage
            .shard_log(0)
            .map(|s| s.start())
            .unwrap_or_default()
    };
    let mut at = start();
    while !inner.stopped.load(Ordering::Acquire) {
        committed.borrow_and_update();
        let entries = match inner.log.read(at, 1 << 20) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%error, "reading the controller log; reading again from its start");
                tokio::time::sleep(Duration::from_secs(1)).await;
                at = start();
                continue;
            }
        };
        if entries.is_empty() {
            tokio::select! {
                changed = committed.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        for entry in entries {
            if entry.log_id == METADATA_LOG {
                match decode(&entry.batches) {
                    Ok(record) => apply_one(&inner, entry.base_offset, record).await,
                    Err(error) => tracing::error!(
                        offset = entry.base_offset,
                        %error,
                        "metadata record does not decode; skipped"
                    ),
                }
                inner
                    .applied
                    .send_modify(|a| a.0 = a.0.max(entry.base_offset + 1));
            }
            at = entry.end;
            inner.applied.send_modify(|a| a.1 = at);
        }
    }
}

/// Makes the first controller's cluster id every node's: each node's `meta.json` starts with
/// an id of its own, and clients warn when nodes of one cluster report different ids.
async fn commit_cluster_id(inner: Arc<Inner>) {
    while !inner.stopped.load(Ordering::Acquire) {
        let broker = inner.broker.clone();
        let committed = tokio::task::spawn_blocking(move || broker.cluster_id_committed())
            .await
            .unwrap_or(false);
        if committed {
            return;
        }
        if inner.leader() == Some(inner.node_id) {
            match inner.lead(MetadataRequest::SetClusterId).await {
                Ok(_) => tracing::info!(
                    cluster_id = %inner.broker.cluster_id(),
                    "cluster id committed for every node"
                ),
                Err(error) => tracing::debug!(%error, "cluster id not committed yet"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies one record, retrying while the broker cannot save it (a full disk): records are
/// applied in order or not at all.
async fn apply_one(inner: &Arc<Inner>, offset: i64, record: MetadataRecord) {
    loop {
        let broker = inner.broker.clone();
        let r = record.clone();
        match tokio::task::spawn_blocking(move || broker.apply_metadata(offset, &r)).await {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => {
                tracing::error!(offset, %error, "applying a metadata record failed; retrying");
            }
            Err(error) => {
                tracing::error!(offset, %error, "applying a metadata record panicked; retrying");
            }
        }
        if inner.stopped.load(Ordering::Acquire) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
