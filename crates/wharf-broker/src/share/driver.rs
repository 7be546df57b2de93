//! The share coordinator's driver: membership by heartbeat, share sessions, ShareFetch and
//! ShareAcknowledge over the partitions' cursors (owner `share/<group>`), group configs
//! persisted in `__wharf_share_groups`, describe and reset.
//!
//! A member's locks are given back when its share session closes (epoch -1) or is replaced,
//! and when it forgets a partition; otherwise they expire after
//! `share.record.lock.duration.ms`. Leaving the group (heartbeat epoch -1) does not touch
//! them: a closing consumer sends its last acknowledgements and its leave at the same time,
//! and a leave handled first must not turn those acknowledgements into errors. Sessions are
//! the partition leader's, not the group's (as in Kafka), so a leave does not end them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use wharf_record::BatchBuilder;
use wharf_storage::{Durability, Log};

use super::config::{self, ShareGroupConfig};
use super::dead_letter::{GroupConfigs, ShareDeadLetter};
use super::error::ShareError;
use super::membership::{Beat, Member, ShareGroup};
use super::session::{SessionPartition, ShareSessions};
use crate::cursor::{AckType, Acquisition, CursorKey, CursorView};
use crate::group::Clock;
use crate::internal_log::replay_keyed;
use crate::{Broker, BrokerError, ConfigOp};

/// The internal topic holding share-group configs.
pub const SHARE_GROUPS_TOPIC: &str = "__wharf_share_groups";
/// Cursor owners of share groups start with this.
pub const OWNER_PREFIX: &str = "share/";
/// A member silent this long leaves (Kafka's `group.share.session.timeout.ms`).
pub const SESSION_TIMEOUT_MS: i64 = 45_000;
/// How often members heartbeat (Kafka's `group.share.heartbeat.interval.ms` is 5 s; a
/// shorter one lets members see a new assignment sooner).
pub const HEARTBEAT_INTERVAL_MS: i32 = 2_000;
/// Records per ShareFetch when the request sets no limit.
const DEFAULT_MAX_RECORDS: usize = 500;
/// How often a waiting ShareFetch looks for released records.
const POLL: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The share group a cursor owner names.
pub fn group_of(owner: &str) -> Option<&str> {
    owner.strip_prefix(OWNER_PREFIX)
}

fn key(group: &str, topic: &str, partition: i32) -> CursorKey {
    CursorKey::new(&format!("{OWNER_PREFIX}{group}"), topic, partition)
}

pub struct ShareCoordinator {
    groups: Mutex<HashMap<String, ShareGroup>>,
    sessions: Mutex<ShareSessions>,
    configs: GroupConfigs,
    log: OnceLock<Log>,
    clock: Clock,
}

impl ShareCoordinator {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            groups: Mutex::default(),
            sessions: Mutex::default(),
            configs: Arc::default(),
            log: OnceLock::new(),
            clock,
        }
    }

    /// The configs set on `group` (the rest are defaults).
    pub fn configs_set(&self, group: &str) -> BTreeMap<String, String> {
        lock(&self.configs).get(group).cloned().unwrap_or_default()
    }

    /// The resolved configs of `group`.
    pub fn config(&self, group: &str) -> ShareGroupConfig {
        ShareGroupConfig::resolve(&self.configs_set(group)).unwrap_or_else(|_| {
            // Stored configs were validated when set; defaults always resolve.
            ShareGroupConfig::resolve(&BTreeMap::new()).unwrap_or(ShareGroupConfig {
                lock_ms: 30_000,
                delivery_limit: 5,
                start: crate::cursor::StartFrom::Latest,
                read_committed: false,
                retry_backoff_ms: Vec::new(),
                dlq_topic: String::new(),
                dlq_copy_record: false,
            })
        })
    }

    /// Every known share group: with members, configs, or cursors.
    pub fn group_names(&self, cursors: &[CursorKey]) -> Vec<String> {
        let mut names: BTreeSet<String> = lock(&self.groups).keys().cloned().collect();
        names.extend(lock(&self.configs).keys().cloned());
        names.extend(
            cursors
                .iter()
                .filter_map(|k| group_of(&k.owner).map(str::to_string)),
        );
        names.into_iter().collect()
    }

    /// Whether `group` is a known share group.
    pub fn is_share_group(&self, group: &str) -> bool {
        lock(&self.groups).contains_key(group) || lock(&self.configs).contains_key(group)
    }

    /// The members of `group` (a copy) and its epoch.
    pub fn members(&self, group: &str) -> (i32, Vec<Member>) {
        lock(&self.groups)
            .get(group)
            .map(|g| (g.epoch, g.members.values().cloned().collect()))
            .unwrap_or_default()
    }
}

/// One partition of a ShareFetch or ShareAcknowledge, with its acknowledgements.
#[derive(Debug, Clone)]
pub struct SharePartitionRequest {
    pub topic: String,
    pub partition: i32,
    /// (first offset, last offset, type); a gap is acknowledged as Accept.
    pub acks: Vec<(i64, i64, AckType)>,
}

#[derive(Debug, Clone)]
pub struct ShareFetchRequest {
    pub group: String,
    pub member: String,
    pub session_epoch: i32,
    pub max_wait: Duration,
    pub max_records: i32,
    pub max_bytes: i32,
    pub partitions: Vec<SharePartitionRequest>,
    pub forgotten: Vec<SessionPartition>,
}

/// One partition of a ShareFetch answer.
#[derive(Debug)]
pub struct SharePartitionAnswer {
    pub topic: String,
    pub partition: i32,
    pub error: Option<BrokerError>,
    /// The first failure among the partition's acknowledgements.
    pub ack_error: Option<BrokerError>,
    pub acquired: Acquisition,
}

#[derive(Debug)]
pub struct ShareFetchAnswer {
    pub lock_ms: i64,
    pub partitions: Vec<SharePartitionAnswer>,
}

/// A share partition's state for describe commands.
#[derive(Debug, Clone)]
pub struct SharePartitionState {
    pub topic: String,
    pub partition: i32,
    pub view: CursorView,
    pub high_watermark: i64,
    /// Records from the start offset to the high watermark not yet settled.
    pub lag: i64,
}

#[derive(Debug, Clone)]
pub struct ShareGroupDescription {
    pub group: String,
    pub epoch: i32,
    pub members: Vec<Member>,
    pub partitions: Vec<SharePartitionState>,
    pub configs: BTreeMap<String, String>,
}

impl Broker {
    pub fn share(&self) -> &ShareCoordinator {
        &self.share
    }

    /// Replays the group configs of `__wharf_share_groups` if it exists (it is created when
    /// a share-group config is first set) and registers the dead-letter step of share groups.
    pub(crate) fn open_share(&self) -> Result<(), BrokerError> {
        self.cursors().register_dead_letter(
            OWNER_PREFIX,
            Arc::new(ShareDeadLetter {
                configs: self.share.configs.clone(),
            }),
        );
        if self.topic(SHARE_GROUPS_TOPIC).is_none() {
            return Ok(());
        }
        let topic = self.internal_topic(SHARE_GROUPS_TOPIC, 1, true)?;
        let log = topic
            .partitions
            .first()
            .map(|p| p.log.clone())
            .ok_or_else(|| {
                BrokerError::Metadata(format!("{SHARE_GROUPS_TOPIC} has no partition"))
            })?;
        self.load_share_configs(&log)?;
        if self.share.log.set(log).is_err() {
            return Err(BrokerError::Metadata(format!(
                "{SHARE_GROUPS_TOPIC} loaded twice"
            )));
        }
        Ok(())
    }

    /// Replaces the group configs with those `log` holds.
    fn load_share_configs(&self, log: &Log) -> Result<(), BrokerError> {
        let mut configs = HashMap::new();
        replay_keyed(log, |key, value| {
            let group = String::from_utf8(key.to_vec()).map_err(|e| e.to_string())?;
            match value {
                Some(v) => {
                    let set: BTreeMap<String, String> =
                        serde_json::from_slice(v).map_err(|e| format!("group {group}: {e}"))?;
                    configs.insert(group, set);
                }
                None => {
                    configs.remove(&group);
                }
            }
            Ok(())
        })
        .map_err(|reason| BrokerError::Metadata(format!("{SHARE_GROUPS_TOPIC}: {reason}")))?;
        *lock(&self.share.configs) = configs;
        Ok(())
    }

    /// This node now leads the shard of `__wharf_share_groups`: the group configs become
    /// what the log holds. Blocking (reads the log).
    pub(crate) fn reload_share_configs(&self) -> Result<(), BrokerError> {
        let Some(log) = self
            .topic(SHARE_GROUPS_TOPIC)
            .and_then(|t| t.partitions.first().map(|p| p.log.clone()))
        else {
            return Ok(());
        };
        self.load_share_configs(&log)?;
        // Created by another node after this one opened: the same log from now on.
        let _ = self.share.log.set(log);
        tracing::info!(
            groups = lock(&self.share.configs).len(),
            "share-group configs reloaded from {SHARE_GROUPS_TOPIC} for a new leader"
        );
        Ok(())
    }

    /// Forgets the members of the share groups whose `__consumer_offsets` partition index
    /// `coordinated_here` names (this node just became their coordinator: what it knew from
    /// an earlier term is stale; members are not persisted and join again).
    pub(crate) fn share_forget_members(&self, coordinated_here: &dyn Fn(usize) -> bool) {
        let Some(count) = self
            .topic(crate::group::OFFSETS_TOPIC)
            .map(|t| t.partitions.len())
        else {
            return;
        };
        lock(&self.share.groups)
            .retain(|group, _| !coordinated_here(crate::group::partition_for(group, count)));
    }

    /// `NOT_COORDINATOR` unless this node coordinates `group` (the leader of its
    /// `__consumer_offsets` partition's shard, as for a consumer group; always alone).
    fn check_share_coordinator(&self, group: &str) -> Result<(), BrokerError> {
        let Some(count) = self
            .topic(crate::group::OFFSETS_TOPIC)
            .map(|t| t.partitions.len())
        else {
            return Ok(());
        };
        if self.owns_internal(
            crate::group::OFFSETS_TOPIC,
            crate::group::partition_for(group, count),
        ) {
            Ok(())
        } else {
            Err(crate::group::GroupError::NotCoordinator {
                group: group.to_string(),
            }
            .into())
        }
    }

    fn partition_count(&self, topic: &str) -> Option<i32> {
        self.topic(topic)
            .filter(|t| !t.is_internal())
            .and_then(|t| i32::try_from(t.partitions.len()).ok())
    }

    /// ShareGroupHeartbeat: join (epoch 0), stay, or leave (epoch -1).
    pub fn share_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        subscribed: Option<Vec<String>>,
        rack: Option<String>,
    ) -> Result<Beat, BrokerError> {
        if group.is_empty() {
            return Err(ShareError::InvalidRequest("empty group id".into()).into());
        }
        self.check_share_coordinator(group)?;
        if matches!(self.groups().describe_group(group), Ok(Some(_))) {
            return Err(ShareError::NotShareGroup(group.to_string()).into());
        }
        let now = (self.share.clock)();
        let partitions = |t: &str| self.partition_count(t);
        let (beat, gone) = {
            let mut groups = lock(&self.share.groups);
            let g = groups.entry(group.to_string()).or_default();
            let gone = g.expire(now, SESSION_TIMEOUT_MS, &partitions);
            let beat = g.heartbeat(
                member_id,
                member_epoch,
                subscribed,
                rack,
                now,
                &partitions,
                &|| uuid::Uuid::new_v4().simple().to_string(),
            );
            (beat, gone)
        };
        for member in &gone {
            tracing::info!(group, member, "share-group member expired");
            lock(&self.share.sessions).drop_member(group, member);
        }
        Ok(beat?)
    }

    async fn share_apply_acks(
        self: &Arc<Self>,
        group: &str,
        member: &str,
        partitions: &[SharePartitionRequest],
    ) -> HashMap<SessionPartition, Option<BrokerError>> {
        let config = self.share.config(group).cursor();
        let mut out = HashMap::new();
        for p in partitions.iter().filter(|p| !p.acks.is_empty()) {
            let k = key(group, &p.topic, p.partition);
            let error = match self.cursor_ack(&k, &config, member, &p.acks).await {
                Ok(results) => results
                    .into_iter()
                    .find_map(Result::err)
                    .map(BrokerError::from),
                Err(e) => Some(e),
            };
            out.insert((p.topic.clone(), p.partition), error);
        }
        out
    }

    /// ShareFetch: applies the session epoch and the piggy-backed acknowledgements, then
    /// acquires records of the session's partitions for the member, waiting up to
    /// `max_wait` when there are none.
    pub async fn share_fetch(
        self: &Arc<Self>,
        req: ShareFetchRequest,
    ) -> Result<ShareFetchAnswer, BrokerError> {
        let added: Vec<SessionPartition> = req
            .partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        if req.session_epoch == 0 && req.partitions.iter().any(|p| !p.acks.is_empty()) {
            return Err(
                ShareError::InvalidRequest("acknowledgements in a new session".into()).into(),
            );
        }
        let step = lock(&self.share.sessions).step(
            &req.group,
            &req.member,
            req.session_epoch,
            &added,
            &req.forgotten,
            true,
        )?;
        let mut ack_errors = self
            .share_apply_acks(&req.group, &req.member, &req.partitions)
            .await;
        let group_config = self.share.config(&req.group);
        let config = group_config.cursor();
        for (topic, partition) in &step.released {
            let k = key(&req.group, topic, *partition);
            self.cursor_release_consumer(&k, &config, &req.member)
                .await?;
        }
        let mut answers: Vec<SharePartitionAnswer> = step
            .partitions
            .iter()
            .map(|(topic, partition)| SharePartitionAnswer {
                topic: topic.clone(),
                partition: *partition,
                error: None,
                ack_error: ack_errors.remove(&(topic.clone(), *partition)).flatten(),
                acquired: Acquisition::default(),
            })
            .collect();
        if step.closing {
            return Ok(ShareFetchAnswer {
                lock_ms: group_config.lock_ms,
                partitions: answers,
            });
        }
        let max_records = usize::try_from(req.max_records)
            .ok()
            .filter(|m| *m > 0)
            .unwrap_or(DEFAULT_MAX_RECORDS);
        let max_bytes = usize::try_from(req.max_bytes)
            .ok()
            .filter(|m| *m > 0)
            .unwrap_or(50 << 20);
        // A member's fair part of a partition's in-flight records: the cap shared by the
        // members assigned the partition, so a fast member cannot starve the others.
        let fair: Vec<usize> = {
            let groups = lock(&self.share.groups);
            let members = groups
                .get(&req.group)
                .map(|g| g.members.values().collect::<Vec<_>>());
            answers
                .iter()
                .map(|a| {
                    let sharing = members.as_ref().map_or(0, |ms| {
                        ms.iter()
                            .filter(|m| {
                                m.assignment
                                    .get(&a.topic)
                                    .is_some_and(|ps| ps.contains(&a.partition))
                            })
                            .count()
                    });
                    config::MAX_IN_FLIGHT / sharing.max(1)
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + req.max_wait;
        loop {
            let notify = Arc::new(tokio::sync::Notify::new());
            let (mut records_left, mut bytes_left) = (max_records, max_bytes);
            for (answer, fair) in answers.iter_mut().zip(&fair) {
                if records_left == 0 || bytes_left == 0 {
                    break;
                }
                let partition = match self.partition(&answer.topic, answer.partition) {
                    Ok(p) => p,
                    Err(e) => {
                        answer.error = Some(e);
                        continue;
                    }
                };
                partition.log.register_waiter(&notify);
                let k = key(&req.group, &answer.topic, answer.partition);
                let room = fair.saturating_sub(self.cursors().held(&k, &req.member).await);
                if room == 0 {
                    continue;
                }
                match self
                    .cursor_acquire(&k, &config, &req.member, records_left.min(room), bytes_left)
                    .await
                {
                    Ok(got) => {
                        let count: i64 = got.ranges.iter().map(|r| r.last - r.first + 1).sum();
                        records_left =
                            records_left.saturating_sub(usize::try_from(count).unwrap_or(0));
                        bytes_left = bytes_left.saturating_sub(got.records.len());
                        answer.acquired = got;
                    }
                    Err(e) => answer.error = Some(e),
                }
            }
            let now = tokio::time::Instant::now();
            let any = answers
                .iter()
                .any(|a| !a.acquired.ranges.is_empty() || a.error.is_some());
            if any || now >= deadline || answers.is_empty() {
                break;
            }
            let _ = tokio::time::timeout((deadline - now).min(POLL), notify.notified()).await;
        }
        Ok(ShareFetchAnswer {
            lock_ms: group_config.lock_ms,
            partitions: answers,
        })
    }

    /// ShareAcknowledge: the session epoch and acknowledgements alone; epoch -1 closes the
    /// session and gives the member's locks back.
    pub async fn share_acknowledge(
        self: &Arc<Self>,
        group: &str,
        member: &str,
        session_epoch: i32,
        partitions: &[SharePartitionRequest],
    ) -> Result<Vec<(String, i32, Option<BrokerError>)>, BrokerError> {
        let step =
            lock(&self.share.sessions).step(group, member, session_epoch, &[], &[], false)?;
        let mut errors = self.share_apply_acks(group, member, partitions).await;
        if step.closing {
            let config = self.share.config(group).cursor();
            for (topic, partition) in &step.released {
                let k = key(group, topic, *partition);
                self.cursor_release_consumer(&k, &config, member).await?;
            }
        }
        Ok(partitions
            .iter()
            .map(|p| {
                let error = errors.remove(&(p.topic.clone(), p.partition)).flatten();
                (p.topic.clone(), p.partition, error)
            })
            .collect())
    }

    /// Applies config changes to `group` (validated first; nothing changes on an error)
    /// and persists them. In a cluster the node that leads `__wharf_share_groups` writes
    /// them: another node validates, then hands the change to it (as Kafka brokers forward
    /// group configs).
    pub async fn share_alter_configs(
        self: &Arc<Self>,
        group: &str,
        ops: &[ConfigOp],
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        self.share_configs_after(group, ops)?;
        if validate_only {
            return Ok(());
        }
        if self.share_log().is_none() {
            let broker = self.clone();
            let log = tokio::task::spawn_blocking(move || broker.internal_log(SHARE_GROUPS_TOPIC))
                .await
                .map_err(|e| {
                    BrokerError::Metadata(format!("creating {SHARE_GROUPS_TOPIC}: {e}"))
                })??;
            let _ = self.share.log.set(log);
        }
        let shard = self
            .share_log()
            .ok_or_else(|| BrokerError::Metadata(format!("{SHARE_GROUPS_TOPIC} is not loaded")))?
            .shard_id();
        if self.shard_served(shard) {
            return self.write_share_configs(group, ops).await;
        }
        let ops = ops
            .iter()
            .filter_map(|op| match op {
                ConfigOp::Set(k, v) => Some((k.clone(), Some(v.clone()))),
                ConfigOp::Delete(k) => Some((k.clone(), None)),
                // Refused by the validation above.
                ConfigOp::Append(..) | ConfigOp::Subtract(..) => None,
            })
            .collect();
        self.call_shard_leader(
            shard,
            crate::forward::NodeCall::ShareGroupConfigs {
                group: group.to_string(),
                ops,
            },
        )
        .await
    }

    /// The log of `__wharf_share_groups`, once it exists (created by another node after
    /// this one opened: found then).
    fn share_log(&self) -> Option<&Log> {
        if let Some(log) = self
            .share
            .log
            .get()
            .is_none()
            .then(|| self.topic(SHARE_GROUPS_TOPIC))
            .flatten()
            .and_then(|t| t.partitions.first().map(|p| p.log.clone()))
        {
            let _ = self.share.log.set(log);
        }
        self.share.log.get()
    }

    /// The configs of `group` after `ops` (validated; `Err` changes nothing).
    fn share_configs_after(
        &self,
        group: &str,
        ops: &[ConfigOp],
    ) -> Result<BTreeMap<String, String>, BrokerError> {
        let mut set = self.share.configs_set(group);
        for op in ops {
            match op {
                ConfigOp::Set(k, v) => {
                    config::validate(k, v)?;
                    let prefix = &self.config().dlq_topic_name_prefix;
                    if k == config::DLQ_TOPIC
                        && !v.is_empty()
                        && !prefix.is_empty()
                        && !v.starts_with(prefix.as_str())
                    {
                        return Err(BrokerError::InvalidConfig {
                            key: k.clone(),
                            value: v.clone(),
                            reason: format!(
                                "a dead-letter topic must start with {prefix:?} (errors_deadletterqueue_topic_name_prefix)"
                            ),
                        });
                    }
                    set.insert(k.clone(), v.clone());
                }
                ConfigOp::Delete(k) => {
                    config::validate(
                        k,
                        config::SHARE_CONFIG_DEFAULTS
                            .iter()
                            .find(|(d, _)| d == k)
                            .map_or("", |(_, v)| v),
                    )?;
                    set.remove(k);
                }
                ConfigOp::Append(k, _) | ConfigOp::Subtract(k, _) => {
                    return Err(BrokerError::InvalidConfig {
                        key: k.clone(),
                        value: String::new(),
                        reason: "APPEND and SUBTRACT do not apply to share-group configs".into(),
                    })
                }
            }
        }
        ShareGroupConfig::resolve(&set)?;
        Ok(set)
    }

    /// Applies `ops` to `group`'s configs and persists them: on the node serving
    /// `__wharf_share_groups` only (a change another node forwarded lands here too).
    pub(crate) async fn write_share_configs(
        &self,
        group: &str,
        ops: &[ConfigOp],
    ) -> Result<(), BrokerError> {
        let set = self.share_configs_after(group, ops)?;
        let log = self
            .share_log()
            .ok_or_else(|| BrokerError::Metadata(format!("{SHARE_GROUPS_TOPIC} is not loaded")))?;
        if !self.shard_served(log.shard_id()) {
            // Written only by the node that leads the log's shard (the caller retries).
            return Err(self.not_leader(log.shard_id()));
        }
        let value = serde_json::to_vec(&set).map_err(|e| BrokerError::Metadata(e.to_string()))?;
        let now = (self.share.clock)();
        let mut builder = BatchBuilder::new(now);
        builder.push(Some(group.as_bytes()), Some(&value), &[], now);
        let pending = log.submit(builder.build().into(), Durability::Synced)?;
        lock(&self.share.configs).insert(group.to_string(), set);
        pending.wait().await?;
        Ok(())
    }

    /// The state of `group`: members, assignments, and each share partition's cursor.
    pub fn share_describe(&self, group: &str) -> ShareGroupDescription {
        let (epoch, members) = self.share.members(group);
        let owner = format!("{OWNER_PREFIX}{group}");
        let mut partitions = Vec::new();
        for k in self.cursors().keys_of(&owner) {
            let Some(view) = self.cursors().snapshot(&k) else {
                continue;
            };
            let high_watermark = self
                .partition(&k.topic, k.partition)
                .map_or(view.next, |p| p.log.high_watermark());
            partitions.push(SharePartitionState {
                topic: k.topic.clone(),
                partition: k.partition,
                view,
                high_watermark,
                lag: (high_watermark - view.start).max(0),
            });
        }
        ShareGroupDescription {
            group: group.to_string(),
            epoch,
            members,
            partitions,
            configs: self.share.configs_set(group),
        }
    }

    /// Kafka's state of a share group: Stable with members, Empty without.
    pub fn share_group_state(&self, group: &str) -> &'static str {
        if self.share.members(group).1.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }

    /// Every share group, sorted.
    pub fn share_groups(&self) -> Vec<String> {
        self.share.group_names(&self.cursors().keys())
    }

    /// Moves `group`'s cursor on `topic`[`partition`] to `offset` (within the log); the
    /// group must have no members.
    pub async fn share_set_start(
        self: &Arc<Self>,
        group: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, BrokerError> {
        if !self.share.members(group).1.is_empty() {
            return Err(ShareError::NonEmptyGroup(group.to_string()).into());
        }
        let p = self.partition(topic, partition)?;
        let offset = offset.clamp(p.log.log_start_offset(), p.log.high_watermark());
        self.cursor_reset(&key(group, topic, partition), offset)
            .await?;
        Ok(offset)
    }

    /// Forgets `group`'s state on `topic` (its cursors; archived records waiting for the
    /// dead-letter step go with them); the group must have no members. A later fetch starts
    /// where `share.auto.offset.reset` says.
    pub async fn share_delete_offsets(
        self: &Arc<Self>,
        group: &str,
        topic: &str,
    ) -> Result<(), BrokerError> {
        if !self.share.members(group).1.is_empty() {
            return Err(ShareError::NonEmptyGroup(group.to_string()).into());
        }
        let owner = format!("{OWNER_PREFIX}{group}");
        for k in self.cursors().keys_of(&owner) {
            if k.topic == topic {
                self.cursor_delete(&k).await?;
            }
        }
        Ok(())
    }
}
