//! The group coordinator, the driver around the pure [`Group`] state machine: it owns every
//! group and its committed offsets, the parked JoinGroup/SyncGroup requests (oneshot
//! channels), the clock, the background tick and the `__consumer_offsets` logs.
//!
//! ```text
//!  request ─► lock state ─► Group::join/sync/… (pure) ─► outputs ─► answer parked channels
//!                               │ records (offsets, membership)
//!                               ▼ submitted to the group's offsets partition while the lock
//!                                 is held, so log order is memory order; awaited after it
//!  tick (100 ms) ─► Group::tick: sessions, rebalance deadlines; every 5 s: offset expiry;
//!                   offsets partitions past the threshold: snapshot the live state, then
//!                   DeleteRecords below the snapshot
//! ```
//!
//! Invariant: every change to a group's committed offsets or persisted membership is
//! submitted to its offsets partition, in the order it was applied in memory; replaying a
//! partition from its log start rebuilds exactly the state of the groups it holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::oneshot;
use wharf_record::BatchBuilder;
use wharf_storage::{Durability, Log, PendingAppend};

use crate::group::api::{
    CommitPartition, ConsumerGroupDescription, ConsumerHeartbeatRequest, ConsumerHeartbeatResponse,
    FetchedOffset, GroupDescription, GroupListing, HeartbeatRequest, JoinRequest, JoinResponse,
    LeaveMember, OffsetCommitRequest, SyncRequest, SyncResponse,
};
use crate::group::consumer::ConsumerGroup;
use crate::group::membership::{Group, GroupConfig, Output, Reply};
use crate::group::offsets::Offsets;
use crate::group::records::{
    decode_key, decode_value, encode_key, encode_value, partition_for, OffsetValue, RecordKey,
    RecordValue,
};
use crate::group::GroupError;
use crate::internal_log::replay_keyed;

/// Kafka's `offset.metadata.max.bytes`.
pub const MAX_METADATA_BYTES: usize = 4096;
const TICK: Duration = Duration::from_millis(100);
const EXPIRY_EVERY_MS: i64 = 5_000;
/// An empty group without offsets is forgotten after this long (Kafka's cleanup interval).
const EMPTY_GROUP_GRACE_MS: i64 = 600_000;
/// Records per batch when writing a snapshot.
const SNAPSHOT_BATCH: usize = 1_000;

/// Milliseconds since the epoch; a seam so tests can drive time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub group: GroupConfig,
    /// Kafka's `offsets.retention.minutes`, in ms: committed offsets of an empty group live
    /// this long.
    pub offsets_retention_ms: i64,
    /// An offsets partition holding more records than this (and more than twice its live
    /// records) is rewritten as a snapshot and truncated.
    pub compact_after_records: i64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            group: GroupConfig::default(),
            offsets_retention_ms: 10_080 * 60_000,
            compact_after_records: 100_000,
        }
    }
}

struct Entry {
    /// The classic-protocol group (empty when the group uses the consumer protocol).
    group: Group,
    /// The consumer-protocol (KIP-848) group, once a member joined by ConsumerGroupHeartbeat.
    consumer: Option<ConsumerGroup>,
    offsets: Offsets,
}

impl Entry {
    fn new(id: &str, now: i64) -> Self {
        Self {
            group: Group::new(id, now),
            consumer: None,
            offsets: Offsets::default(),
        }
    }

    fn consumer_members(&self) -> bool {
        self.consumer
            .as_ref()
            .is_some_and(ConsumerGroup::has_members)
    }

    fn has_members(&self) -> bool {
        self.group.has_members() || self.consumer_members()
    }

    /// Since when the group has had no members (`None` while it has some).
    fn empty_since(&self) -> Option<i64> {
        match &self.consumer {
            Some(c) if !self.group.has_members() => c.empty_since(),
            _ => self.group.empty_since(),
        }
    }

    fn is_vacant(&self) -> bool {
        self.group.is_vacant() && !self.consumer_members() && self.offsets.is_empty()
    }
}

/// Every topic a consumer-protocol member may subscribe to, with its partition count.
pub type TopicSource = Arc<dyn Fn() -> BTreeMap<String, i32> + Send + Sync>;

#[derive(Default)]
struct State {
    groups: HashMap<String, Entry>,
    joins: HashMap<(String, String), oneshot::Sender<JoinResponse>>,
    syncs: HashMap<(String, String), oneshot::Sender<SyncResponse>>,
    last_expiry: i64,
}

struct Inner {
    config: CoordinatorConfig,
    clock: Clock,
    state: Mutex<State>,
    logs: OnceLock<Vec<Log>>,
    stopped: AtomicBool,
    topics: OnceLock<TopicSource>,
    /// Whether this node coordinates the groups of an offsets partition (by index): in a
    /// cluster, only the leader of the partition's shard does (set once by the broker).
    owns: OnceLock<OwnsPartition>,
}

/// Says whether this node coordinates the groups of offsets partition `index`.
pub type OwnsPartition = Arc<dyn Fn(usize) -> bool + Send + Sync>;

/// Every consumer group of this broker. Cheap to clone.
#[derive(Clone)]
pub struct GroupCoordinator {
    inner: Arc<Inner>,
}

type Records = Vec<(RecordKey, Option<RecordValue>)>;

fn not_loaded() -> GroupError {
    GroupError::CoordinatorLoadInProgress
}

fn check_group_id(group_id: &str) -> Result<(), GroupError> {
    if group_id.is_empty() {
        return Err(GroupError::InvalidGroupId {
            group: group_id.to_string(),
        });
    }
    Ok(())
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                clock,
                state: Mutex::new(State::default()),
                logs: OnceLock::new(),
                stopped: AtomicBool::new(false),
                topics: OnceLock::new(),
                owns: OnceLock::new(),
            }),
        }
    }

    /// Replays the offsets partitions, then serves. Starts the background tick when called
    /// inside a tokio runtime. Blocking: reads the logs.
    pub fn load(&self, logs: Vec<Log>) -> Result<(), GroupError> {
        let now = (self.inner.clock)();
        let (groups, records) = replay_groups(&logs, now, &self.inner.config)?;
        let mut state = self.inner.lock();
        state.groups = groups;
        tracing::info!(
            groups = state.groups.len(),
            records,
            "consumer groups loaded from __consumer_offsets"
        );
        drop(state);
        if self.inner.logs.set(logs).is_err() {
            return Err(GroupError::CoordinatorNotAvailable {
                reason: "loaded twice".into(),
            });
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&self.inner);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(TICK).await;
                    let Some(inner) = weak.upgrade() else { break };
                    if inner.stopped.load(Ordering::Acquire) {
                        break;
                    }
                    inner.tick().await;
                }
            });
        }
        Ok(())
    }

    /// Where consumer-protocol groups learn the topics and their partition counts (set once
    /// by the broker).
    pub fn set_topic_source(&self, source: TopicSource) {
        let _ = self.inner.topics.set(source);
    }

    /// Makes this node coordinate only the offsets partitions `owns` accepts (a cluster: the
    /// partitions whose shard it leads). Set once.
    pub fn set_owner(&self, owns: OwnsPartition) {
        let _ = self.inner.owns.set(owns);
    }

    /// Replaces the groups of offsets partitions `indices` with what their logs hold now: a
    /// node that just became their coordinator (the previous one wrote them). Members and
    /// pending joins of those groups are dropped; their clients rejoin. Blocking.
    pub fn reload(&self, indices: &[usize]) -> Result<(), GroupError> {
        let logs = self.inner.logs.get().ok_or_else(not_loaded)?;
        let partitions = logs.len();
        let chosen: Vec<Log> = indices
            .iter()
            .filter_map(|&i| logs.get(i).cloned())
            .collect();
        let now = (self.inner.clock)();
        let (groups, records) = replay_groups(&chosen, now, &self.inner.config)?;
        let mut state = self.inner.lock();
        let moved = |id: &String| indices.contains(&partition_for(id, partitions));
        state.groups.retain(|id, _| !moved(id));
        state.joins.retain(|(id, _), _| !moved(id));
        state.syncs.retain(|(id, _), _| !moved(id));
        let count = groups.len();
        state.groups.extend(groups);
        tracing::info!(
            partitions = ?indices,
            groups = count,
            records,
            "consumer groups reloaded for the offsets partitions this node now coordinates"
        );
        Ok(())
    }

    /// ConsumerGroupHeartbeat (KIP-848): join, stay, reconcile, leave. A change of membership
    /// is persisted without waiting, as for classic groups (losing it costs a rebalance).
    pub fn consumer_heartbeat(&self, req: &ConsumerHeartbeatRequest) -> ConsumerHeartbeatResponse {
        let error = |error: GroupError| ConsumerHeartbeatResponse {
            error: Some(error),
            member_id: req.member_id.clone(),
            member_epoch: req.member_epoch,
            ..ConsumerHeartbeatResponse::default()
        };
        let topics = self
            .inner
            .topics
            .get()
            .map(|source| source())
            .unwrap_or_default();
        let mut state = self.inner.lock();
        if let Err(e) = self.inner.ready(&req.group_id) {
            return error(e);
        }
        if let Err(e) = check_group_id(&req.group_id) {
            return error(e);
        }
        let now = (self.inner.clock)();
        let entry = state
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Entry::new(&req.group_id, now));
        if entry.group.has_members() {
            let e = GroupError::GroupIdNotFound {
                group: req.group_id.clone(),
            };
            return error(e);
        }
        let consumer = entry
            .consumer
            .get_or_insert_with(|| ConsumerGroup::new(&req.group_id, now));
        let result = consumer.heartbeat(req, &topics, now, &self.inner.config.group.consumer);
        self.inner
            .after_change(&mut state, &req.group_id, Vec::new());
        result.unwrap_or_else(|e| {
            tracing::debug!(group = %req.group_id, member = %req.member_id, error = %e, "consumer group heartbeat refused");
            error(e)
        })
    }

    /// ConsumerGroupDescribe: `None` for a group that does not exist or is not a
    /// consumer-protocol group.
    pub fn describe_consumer_group(
        &self,
        group_id: &str,
    ) -> Result<Option<ConsumerGroupDescription>, GroupError> {
        let state = self.inner.lock();
        self.inner.ready(group_id)?;
        Ok(state
            .groups
            .get(group_id)
            .filter(|e| !e.group.has_members())
            .and_then(|e| e.consumer.as_ref())
            .map(ConsumerGroup::describe))
    }

    /// Stops the background tick (at shutdown).
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
    }

    /// Runs one tick now (tests drive time with their own clock).
    pub async fn tick(&self) {
        self.inner.tick().await;
    }

    pub async fn join_group(&self, req: JoinRequest) -> JoinResponse {
        let rx = {
            let mut state = self.inner.lock();
            if let Err(e) = self.inner.ready(&req.group_id) {
                return JoinResponse::error(e, &req.member_id);
            }
            if let Err(e) = check_group_id(&req.group_id) {
                return JoinResponse::error(e, &req.member_id);
            }
            let now = (self.inner.clock)();
            let prefix = req
                .group_instance_id
                .as_deref()
                .unwrap_or(req.client_id.as_str());
            let fresh = format!("{prefix}-{}", uuid::Uuid::new_v4());
            let entry = state
                .groups
                .entry(req.group_id.clone())
                .or_insert_with(|| Entry::new(&req.group_id, now));
            if entry.consumer_members() {
                return JoinResponse::error(
                    GroupError::InconsistentGroupProtocol {
                        group: req.group_id.clone(),
                    },
                    &req.member_id,
                );
            }
            let (reply, outputs) = entry.group.join(&req, now, fresh, &self.inner.config.group);
            let rx = match reply {
                Reply::Now(resp) => Err(resp),
                Reply::Parked { member_id } => {
                    let (tx, rx) = oneshot::channel();
                    state.joins.insert((req.group_id.clone(), member_id), tx);
                    Ok(rx)
                }
            };
            self.inner.after_change(&mut state, &req.group_id, outputs);
            match rx {
                Err(resp) => return resp,
                Ok(rx) => rx,
            }
        };
        rx.await.unwrap_or_else(|_| {
            JoinResponse::error(
                GroupError::RebalanceInProgress {
                    group: req.group_id.clone(),
                },
                &req.member_id,
            )
        })
    }

    pub async fn sync_group(&self, req: SyncRequest) -> SyncResponse {
        let rx = {
            let mut state = self.inner.lock();
            if let Err(e) = self.inner.ready(&req.group_id) {
                return SyncResponse::error(e);
            }
            let now = (self.inner.clock)();
            let Some(entry) = state.groups.get_mut(&req.group_id) else {
                return SyncResponse::error(GroupError::UnknownMemberId {
                    group: req.group_id.clone(),
                    member: req.member_id.clone(),
                });
            };
            let (reply, outputs) = entry.group.sync(&req, now);
            let rx = match reply {
                Reply::Now(resp) => Err(resp),
                Reply::Parked { member_id } => {
                    let (tx, rx) = oneshot::channel();
                    state.syncs.insert((req.group_id.clone(), member_id), tx);
                    Ok(rx)
                }
            };
            self.inner.after_change(&mut state, &req.group_id, outputs);
            match rx {
                Err(resp) => return resp,
                Ok(rx) => rx,
            }
        };
        rx.await.unwrap_or_else(|_| {
            SyncResponse::error(GroupError::RebalanceInProgress {
                group: req.group_id.clone(),
            })
        })
    }

    pub fn heartbeat(&self, req: &HeartbeatRequest) -> Result<(), GroupError> {
        let mut state = self.inner.lock();
        self.inner.ready(&req.group_id)?;
        let now = (self.inner.clock)();
        let unknown = || GroupError::UnknownMemberId {
            group: req.group_id.clone(),
            member: req.member_id.clone(),
        };
        let entry = state.groups.get_mut(&req.group_id).ok_or_else(unknown)?;
        entry.group.heartbeat(req, now)
    }

    /// LeaveGroup: one result per member.
    pub fn leave_group(
        &self,
        group_id: &str,
        members: &[LeaveMember],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let mut state = self.inner.lock();
        self.inner.ready(group_id)?;
        let now = (self.inner.clock)();
        let Some(entry) = state.groups.get_mut(group_id) else {
            return Ok(members
                .iter()
                .map(|m| {
                    Err(GroupError::UnknownMemberId {
                        group: group_id.to_string(),
                        member: m.member_id.clone(),
                    })
                })
                .collect());
        };
        let (results, outputs) = entry.group.leave(members, now, &self.inner.config.group);
        self.inner.after_change(&mut state, group_id, outputs);
        Ok(results)
    }

    /// OffsetCommit: returns once the offsets are durable (fdatasync-ed). `exists` says
    /// whether a topic partition exists. One result per partition, in request order.
    pub async fn commit_offsets(
        &self,
        req: &OffsetCommitRequest,
        exists: impl Fn(&str, i32) -> bool,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.commit(req, exists, true).await
    }

    /// The offsets of a committed transaction (TxnOffsetCommit) become the group's
    /// committed offsets: no member or generation check, the transaction coordinator
    /// checked the producer when the offsets were sent.
    pub async fn commit_transactional_offsets(
        &self,
        group_id: &str,
        partitions: Vec<CommitPartition>,
    ) -> Result<(), GroupError> {
        let req = OffsetCommitRequest {
            group_id: group_id.to_string(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions,
        };
        self.commit(&req, |_, _| true, false).await.map(|_| ())
    }

    async fn commit(
        &self,
        req: &OffsetCommitRequest,
        exists: impl Fn(&str, i32) -> bool,
        validate: bool,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let (results, pending) = {
            let mut state = self.inner.lock();
            self.inner.ready(&req.group_id)?;
            check_group_id(&req.group_id)?;
            let now = (self.inner.clock)();
            let entry = state
                .groups
                .entry(req.group_id.clone())
                .or_insert_with(|| Entry::new(&req.group_id, now));
            tracing::debug!(
                group = %req.group_id,
                member_id = %req.member_id,
                generation = req.generation_id,
                partitions = ?req.partitions.iter().map(|p| (p.partition, p.offset)).collect::<Vec<_>>(),
                "offset commit"
            );
            let checked = match &entry.consumer {
                Some(c) if !entry.group.has_members() => {
                    c.validate_commit(req.generation_id, &req.member_id)
                }
                _ => entry.group.validate_commit(
                    req.generation_id,
                    &req.member_id,
                    req.group_instance_id.as_ref(),
                    now,
                ),
            };
            if let Err(e) = checked.or_else(|e| if validate { Err(e) } else { Ok(()) }) {
                tracing::debug!(group = %req.group_id, error = %e, "offset commit refused");
                forget_if_vacant(&mut state, &req.group_id);
                return Err(e);
            }
            let mut results = Vec::with_capacity(req.partitions.len());
            let mut records: Records = Vec::new();
            for p in &req.partitions {
                let size = p.metadata.as_ref().map_or(0, String::len);
                let result = if !exists(&p.topic, p.partition) {
                    Err(GroupError::UnknownTopicOrPartition {
                        topic: p.topic.clone(),
                        partition: p.partition,
                    })
                } else if size > MAX_METADATA_BYTES {
                    Err(GroupError::OffsetMetadataTooLarge {
                        size,
                        max: MAX_METADATA_BYTES,
                    })
                } else if p.offset < 0 {
                    Err(GroupError::InvalidCommitOffset {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        offset: p.offset,
                    })
                } else {
                    let value = OffsetValue {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata: p.metadata.clone(),
                        commit_ms: now,
                    };
                    entry.offsets.commit(&p.topic, p.partition, value.clone());
                    records.push((
                        RecordKey::Offset {
                            group: req.group_id.clone(),
                            topic: p.topic.clone(),
                            partition: p.partition,
                        },
                        Some(RecordValue::Offset(value)),
                    ));
                    Ok(())
                };
                results.push(result);
            }
            if records.is_empty() {
                forget_if_vacant(&mut state, &req.group_id);
                return Ok(results);
            }
            let pending = self
                .inner
                .submit(&req.group_id, &records, Durability::Synced, now);
            (results, pending)
        };
        wait_durable(pending).await?;
        Ok(results)
    }

    /// OffsetFetch: the requested partitions (-1 where nothing is committed), or every
    /// committed offset of the group when `topics` is `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<FetchedOffset>, GroupError> {
        let state = self.inner.lock();
        self.inner.ready(group_id)?;
        let offsets = state.groups.get(group_id).map(|e| &e.offsets);
        tracing::debug!(group = group_id, topics = ?topics, "offset fetch");
        let fetched = |topic: &str, partition: i32, v: Option<&OffsetValue>| FetchedOffset {
            topic: topic.to_string(),
            partition,
            offset: v.map_or(-1, |v| v.offset),
            leader_epoch: v.map_or(-1, |v| v.leader_epoch),
            metadata: v.and_then(|v| v.metadata.clone()),
        };
        Ok(match topics {
            Some(topics) => topics
                .iter()
                .flat_map(|(topic, partitions)| {
                    partitions
                        .iter()
                        .map(move |p| fetched(topic, *p, offsets.and_then(|o| o.get(topic, *p))))
                })
                .collect(),
            None => offsets
                .map(|o| o.iter().map(|(t, p, v)| fetched(t, p, Some(v))).collect())
                .unwrap_or_default(),
        })
    }

    /// ListGroups, optionally only those in `states` (Kafka's names, any case).
    pub fn list_groups(&self, states: &[String]) -> Result<Vec<GroupListing>, GroupError> {
        let state = self.inner.lock();
        let Some(logs) = self.inner.logs.get() else {
            return Err(not_loaded());
        };
        // A node lists the groups it coordinates (Kafka's ListGroups is per broker).
        let mut out: Vec<GroupListing> = state
            .groups
            .iter()
            .filter(|(id, _)| self.inner.owns(partition_for(id, logs.len())))
            .map(|(_, e)| match &e.consumer {
                Some(c) if !e.group.has_members() => c.listing(),
                _ => e.group.listing(),
            })
            .filter(|l| states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(l.state)))
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// KIP-447's check of a TxnOffsetCommit's member and generation (see
    /// `Group::validate_txn_commit`). A group that does not exist has no generation to match.
    pub fn validate_txn_member(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance: Option<&String>,
    ) -> Result<(), GroupError> {
        let state = self.inner.lock();
        self.inner.ready(group_id)?;
        match state.groups.get(group_id) {
            Some(entry) => entry
                .group
                .validate_txn_commit(generation_id, member_id, instance),
            None if generation_id < 0 => Ok(()),
            None => Err(GroupError::IllegalGeneration {
                group: group_id.to_string(),
                generation: generation_id,
                current: -1,
            }),
        }
    }

    /// DescribeGroups: `None` for a group that does not exist.
    pub fn describe_group(&self, group_id: &str) -> Result<Option<GroupDescription>, GroupError> {
        let state = self.inner.lock();
        self.inner.ready(group_id)?;
        Ok(state.groups.get(group_id).map(|e| match &e.consumer {
            Some(c) if !e.group.has_members() => c.describe_classic(),
            _ => e.group.describe(),
        }))
    }

    /// DeleteGroups: only groups without members; their offsets go too. Durable on return.
    pub async fn delete_groups(&self, group_ids: &[String]) -> Vec<Result<(), GroupError>> {
        let mut results = Vec::with_capacity(group_ids.len());
        let mut pendings = Vec::new();
        {
            let mut state = self.inner.lock();
            if self.inner.logs.get().is_none() {
                return group_ids.iter().map(|_| Err(not_loaded())).collect();
            }
            let now = (self.inner.clock)();
            for id in group_ids {
                let result = match state.groups.get(id) {
                    _ if self.inner.ready(id).is_err() => self.inner.ready(id),
                    None => Err(GroupError::GroupIdNotFound { group: id.clone() }),
                    Some(e) if e.has_members() => {
                        Err(GroupError::NonEmptyGroup { group: id.clone() })
                    }
                    Some(_) => {
                        if let Some(entry) = state.groups.remove(id) {
                            let records = tombstones(id, &entry.offsets, true);
                            pendings.push((
                                results.len(),
                                self.inner.submit(id, &records, Durability::Synced, now),
                            ));
                        }
                        Ok(())
                    }
                };
                results.push(result);
            }
        }
        for (i, pending) in pendings {
            if let Err(e) = wait_durable(pending).await {
                if let Some(r) = results.get_mut(i) {
                    *r = Err(e);
                }
            }
        }
        results
    }

    /// OffsetDelete: removes committed offsets of topics the group is not subscribed to
    /// (`subscribed`: the topics its members subscribe to). One result per partition.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed: &HashSet<String>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let (results, pending) = {
            let mut state = self.inner.lock();
            self.inner.ready(group_id)?;
            let now = (self.inner.clock)();
            let Some(entry) = state.groups.get_mut(group_id) else {
                return Err(GroupError::GroupIdNotFound {
                    group: group_id.to_string(),
                });
            };
            let active = entry.has_members();
            let mut subscribed = subscribed.clone();
            if let Some(c) = &entry.consumer {
                subscribed.extend(c.subscribed_topics());
            }
            let mut records: Records = Vec::new();
            let results: Vec<_> = partitions
                .iter()
                .map(|(topic, partition)| {
                    if active && subscribed.contains(topic) {
                        return Err(GroupError::GroupSubscribedToTopic {
                            group: group_id.to_string(),
                            topic: topic.clone(),
                        });
                    }
                    if entry.offsets.remove(topic, *partition).is_some() {
                        records.push((
                            RecordKey::Offset {
                                group: group_id.to_string(),
                                topic: topic.clone(),
                                partition: *partition,
                            },
                            None,
                        ));
                    }
                    Ok(())
                })
                .collect();
            let pending = (!records.is_empty()).then(|| {
                self.inner
                    .submit(group_id, &records, Durability::Synced, now)
            });
            (results, pending)
        };
        if let Some(pending) = pending {
            wait_durable(pending).await?;
        }
        Ok(results)
    }
}

/// Tombstones for every offset of a group, and for its membership record if `group`.
fn tombstones(group_id: &str, offsets: &Offsets, group: bool) -> Records {
    let mut records: Records = offsets
        .iter()
        .map(|(topic, partition, _)| {
            (
                RecordKey::Offset {
                    group: group_id.to_string(),
                    topic: topic.to_string(),
                    partition,
                },
                None,
            )
        })
        .collect();
    if group {
        records.push((
            RecordKey::Group {
                group: group_id.to_string(),
            },
            None,
        ));
    }
    records
}

async fn wait_durable(pending: Result<PendingAppend, GroupError>) -> Result<(), GroupError> {
    pending?
        .wait()
        .await
        .map(|_| ())
        .map_err(|e| GroupError::CoordinatorNotAvailable {
            reason: format!("writing __consumer_offsets failed: {e}"),
        })
}

/// Reads every record of an offsets partition from its log start, in order.
fn replay_log(
    log: &Log,
    apply: &mut dyn FnMut(RecordKey, Option<RecordValue>),
) -> Result<(), GroupError> {
    replay_keyed(log, |key, value| {
        let key = decode_key(key).map_err(|e| e.to_string())?;
        let value = value
            .map(|v| decode_value(&key, v))
            .transpose()
            .map_err(|e| e.to_string())?;
        apply(key, value);
        Ok(())
    })
    .map(|_| ())
    .map_err(|reason| GroupError::CoordinatorNotAvailable {
        reason: format!("replaying __consumer_offsets log {}: {reason}", log.id()),
    })
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this node coordinates offsets partition `index` (always, alone).
    fn owns(&self, index: usize) -> bool {
        self.owns.get().is_none_or(|owns| owns(index))
    }

    /// `Ok` when this node serves `group_id` now: loaded, and its coordinator.
    fn ready(&self, group_id: &str) -> Result<(), GroupError> {
        let logs = self.logs.get().ok_or_else(not_loaded)?;
        if self.owns(partition_for(group_id, logs.len())) {
            Ok(())
        } else {
            Err(GroupError::NotCoordinator {
                group: group_id.to_string(),
            })
        }
    }

    fn log_for(&self, group_id: &str) -> Result<&Log, GroupError> {
        let logs = self.logs.get().ok_or_else(not_loaded)?;
        logs.get(partition_for(group_id, logs.len()))
            .ok_or_else(|| GroupError::CoordinatorNotAvailable {
                reason: "no __consumer_offsets partition".into(),
            })
    }

    /// Appends `records` to the group's offsets partition. Call with the state lock held.
    fn submit(
        &self,
        group_id: &str,
        records: &Records,
        durability: Durability,
        now: i64,
    ) -> Result<PendingAppend, GroupError> {
        let log = self.log_for(group_id)?;
        let mut batches = BytesMut::new();
        for chunk in records.chunks(SNAPSHOT_BATCH) {
            let mut builder = BatchBuilder::new(now);
            for (key, value) in chunk {
                let key = encode_key(key);
                let value = value.as_ref().map(encode_value);
                builder.push(Some(&key), value.as_deref(), &[], now);
            }
            batches.extend_from_slice(&builder.build());
        }
        log.submit(batches.freeze(), durability)
            .map_err(|e| GroupError::CoordinatorNotAvailable {
                reason: format!("writing __consumer_offsets failed: {e}"),
            })
    }

    /// After a call on a group: answer parked requests, persist a membership change, forget
    /// a group that holds nothing.
    fn after_change(&self, state: &mut State, group_id: &str, outputs: Vec<Output>) {
        let now = (self.clock)();
        deliver(state, group_id, outputs);
        let record = state.groups.get_mut(group_id).and_then(|e| {
            let classic = e.group.take_metadata_change();
            let consumer = e.consumer.as_mut().is_some_and(ConsumerGroup::take_change);
            match &e.consumer {
                Some(c) if consumer || (classic && !e.group.has_members()) => {
                    Some(RecordValue::ConsumerGroup(c.to_record()))
                }
                _ => classic.then(|| RecordValue::Group(e.group.to_record())),
            }
        });
        if let Some(value) = record {
            let key = RecordKey::Group {
                group: group_id.to_string(),
            };
            // Membership is written without waiting: losing it costs a rebalance, not data.
            if let Err(error) = self.submit(
                group_id,
                &vec![(key, Some(value))],
                Durability::Written,
                now,
            ) {
                tracing::warn!(group = group_id, %error, "persisting group membership failed");
            }
        }
        forget_if_vacant(state, group_id);
    }
}

fn forget_if_vacant(state: &mut State, group_id: &str) {
    {
        if state.groups.get(group_id).is_some_and(Entry::is_vacant) {
            state.groups.remove(group_id);
        }
    }
}

impl Inner {
    async fn tick(&self) {
        let Some(logs) = self.logs.get() else {
            return;
        };
        let now = (self.clock)();
        let mut snapshots = Vec::new();
        {
            let mut state = self.lock();
            // Only the groups this node coordinates age here (a follower's copies are stale).
            let ids: Vec<String> = state
                .groups
                .keys()
                .filter(|id| self.owns(partition_for(id, logs.len())))
                .cloned()
                .collect();
            let topics = self.topics.get().map(|source| source());
            for id in &ids {
                let outputs = match state.groups.get_mut(id) {
                    Some(e) => {
                        if let (Some(c), Some(topics)) = (&mut e.consumer, &topics) {
                            c.tick(now, topics);
                        }
                        e.group.tick(now, &self.config.group)
                    }
                    None => continue,
                };
                self.after_change(&mut state, id, outputs);
            }
            if now - state.last_expiry >= EXPIRY_EVERY_MS {
                state.last_expiry = now;
                self.expire(&mut state, now, logs.len());
                for (index, log) in logs.iter().enumerate() {
                    if !self.owns(index) {
                        continue;
                    }
                    let held = log.high_watermark() - log.log_start_offset();
                    let live = live_records(&state, index, logs.len());
                    // A compacted log is cleaned by storage; the rewrite is for logs
                    // without the policy (a data directory not yet opened with it).
                    if !log.config().compact
                        && held > self.config.compact_after_records
                        && held > 2 * live
                    {
                        snapshots.push(snapshot(&state, index, logs.len(), log, now));
                    }
                }
            }
        }
        for snapshot in snapshots {
            finish_snapshot(snapshot).await;
        }
    }

    /// Expires offsets of empty groups; forgets empty groups with nothing left.
    fn expire(&self, state: &mut State, now: i64, partitions: usize) {
        let retention = self.config.offsets_retention_ms;
        let mut writes: Vec<(String, Records)> = Vec::new();
        let mut forget = Vec::new();
        for (id, entry) in &mut state.groups {
            if !self.owns(partition_for(id, partitions)) {
                continue;
            }
            let Some(empty_since) = entry.empty_since() else {
                continue;
            };
            let expired = entry.offsets.expire(now, empty_since, retention);
            let mut records: Records = expired
                .into_iter()
                .map(|(topic, partition)| {
                    (
                        RecordKey::Offset {
                            group: id.clone(),
                            topic,
                            partition,
                        },
                        None,
                    )
                })
                .collect();
            if !records.is_empty() {
                tracing::info!(group = %id, offsets = records.len(), "committed offsets expired");
            }
            if entry.offsets.is_empty()
                && ((entry.group.is_simple() && entry.consumer.is_none())
                    || now - empty_since >= EMPTY_GROUP_GRACE_MS)
            {
                forget.push(id.clone());
                records.push((RecordKey::Group { group: id.clone() }, None));
            }
            if !records.is_empty() {
                writes.push((id.clone(), records));
            }
        }
        for id in forget {
            state.groups.remove(&id);
        }
        for (id, records) in writes {
            if let Err(error) = self.submit(&id, &records, Durability::Written, now) {
                tracing::warn!(group = %id, %error, "writing offset expiry failed");
            }
        }
    }
}

/// The groups and offsets the offsets partitions `logs` hold (latest record per key wins),
/// and how many records were read. Blocking: reads the logs.
fn replay_groups(
    logs: &[Log],
    now: i64,
    config: &CoordinatorConfig,
) -> Result<(HashMap<String, Entry>, usize), GroupError> {
    let mut latest: HashMap<RecordKey, Option<RecordValue>> = HashMap::new();
    let mut records = 0usize;
    for log in logs {
        replay_log(log, &mut |key, value| {
            records += 1;
            latest.insert(key, value);
        })?;
    }
    let mut groups: HashMap<String, Entry> = HashMap::new();
    let mut group_values = Vec::new();
    let mut offset_values = Vec::new();
    for (key, value) in latest {
        match (key, value) {
            (RecordKey::Group { group }, Some(RecordValue::ConsumerGroup(v))) => {
                let mut entry = Entry::new(&group, now);
                entry.consumer = Some(ConsumerGroup::from_record(
                    &group,
                    v,
                    now,
                    &config.group.consumer,
                ));
                groups.insert(group, entry);
            }
            (RecordKey::Group { group }, Some(RecordValue::Group(v))) => {
                group_values.push((group, v));
            }
            (
                RecordKey::Offset {
                    group,
                    topic,
                    partition,
                },
                Some(RecordValue::Offset(v)),
            ) => offset_values.push((group, topic, partition, v)),
            _ => {}
        }
    }
    for (group, v) in group_values {
        groups.insert(
            group.clone(),
            Entry {
                group: Group::from_record(&group, v, now),
                consumer: None,
                offsets: Offsets::default(),
            },
        );
    }
    for (group, topic, partition, v) in offset_values {
        groups
            .entry(group.clone())
            .or_insert_with(|| Entry::new(&group, 0))
            .offsets
            .commit(&topic, partition, v);
    }
    Ok((groups, records))
}

/// Submits the live state of every group in offsets partition `index`.
fn snapshot(state: &State, index: usize, partitions: usize, log: &Log, now: i64) -> Snapshot {
    let mut records: Records = Vec::new();
    for (id, entry) in &state.groups {
        if partition_for(id, partitions) != index {
            continue;
        }
        let value = match &entry.consumer {
            Some(c) if !entry.group.has_members() => RecordValue::ConsumerGroup(c.to_record()),
            _ => RecordValue::Group(entry.group.to_record()),
        };
        records.push((RecordKey::Group { group: id.clone() }, Some(value)));
        for (topic, partition, v) in entry.offsets.iter() {
            records.push((
                RecordKey::Offset {
                    group: id.clone(),
                    topic: topic.to_string(),
                    partition,
                },
                Some(RecordValue::Offset(v.clone())),
            ));
        }
    }
    let pending = if records.is_empty() {
        None
    } else {
        let mut batches = BytesMut::new();
        for chunk in records.chunks(SNAPSHOT_BATCH) {
            let mut builder = BatchBuilder::new(now);
            for (key, value) in chunk {
                let key = encode_key(key);
                let value = value.as_ref().map(encode_value);
                builder.push(Some(&key), value.as_deref(), &[], now);
            }
            batches.extend_from_slice(&builder.build());
        }
        Some(log.submit(batches.freeze(), Durability::Synced))
    };
    Snapshot {
        log: log.clone(),
        pending,
        high_watermark: log.high_watermark(),
    }
}

/// A snapshot of one offsets partition on its way to the log.
struct Snapshot {
    log: Log,
    pending: Option<Result<PendingAppend, wharf_storage::StorageError>>,
    /// Where the log ended when the snapshot was taken (for an empty snapshot).
    high_watermark: i64,
}

async fn finish_snapshot(snapshot: Snapshot) {
    let start = match snapshot.pending {
        None => snapshot.high_watermark,
        Some(Ok(pending)) => match pending.wait().await {
            Ok(info) => info.base_offset,
            Err(error) => {
                tracing::warn!(log_id = snapshot.log.id(), %error, "offsets snapshot failed");
                return;
            }
        },
        Some(Err(error)) => {
            tracing::warn!(log_id = snapshot.log.id(), %error, "offsets snapshot failed");
            return;
        }
    };
    let log = snapshot.log;
    let result = tokio::task::spawn_blocking(move || log.delete_records(start)).await;
    match result {
        Ok(Ok(start)) => tracing::info!(log_start = start, "offsets partition compacted"),
        Ok(Err(error)) => tracing::warn!(%error, "truncating offsets partition failed"),
        Err(error) => tracing::warn!(%error, "truncating offsets partition failed"),
    }
}

fn live_records(state: &State, index: usize, partitions: usize) -> i64 {
    state
        .groups
        .iter()
        .filter(|(id, _)| partition_for(id, partitions) == index)
        .map(|(_, e)| 1 + e.offsets.iter().count() as i64)
        .sum()
}

fn deliver(state: &mut State, group_id: &str, outputs: Vec<Output>) {
    for output in outputs {
        match output {
            Output::Join {
                member_id,
                response,
            } => {
                if let Some(tx) = state.joins.remove(&(group_id.to_string(), member_id)) {
                    let _ = tx.send(response);
                }
            }
            Output::Sync {
                member_id,
                response,
            } => {
                if let Some(tx) = state.syncs.remove(&(group_id.to_string(), member_id)) {
                    let _ = tx.send(response);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
