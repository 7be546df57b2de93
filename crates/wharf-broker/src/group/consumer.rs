//! One consumer group of KIP-848's protocol (`group.protocol=consumer`) as a pure state
//! machine: members heartbeat, the coordinator computes the assignment (server-side
//! assignors) and hands it out incrementally. Every call takes `now` (ms since the epoch);
//! the coordinator owns the clock and the log.
//!
//! ```text
//!  heartbeat ─► membership or subscription changed, or a subscribed topic grew ─► group epoch + 1
//!            ─► group epoch > assignment epoch ─► target assignment recomputed (assignor)
//!            ─► reconcile this member toward its target:
//!                 owns partitions outside its target ─► told to drop them (same epoch) and
//!                                                       waits until it reports them gone
//!                 otherwise ─► member epoch = assignment epoch; gets every target partition
//!                              no other member still owns (the rest on later heartbeats)
//! ```
//!
//! Invariant (no partition is consumed twice at once): a partition is in at most one
//! member's `assigned ∪ revoking` — a member is given a partition only when no other member
//! holds it, and a member gives one up by reporting it no longer owns it (or by leaving,
//! expiring or missing its rebalance timeout).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::group::api::{
    ConsumerGroupDescription, ConsumerHeartbeatRequest, ConsumerHeartbeatResponse,
    ConsumerMemberDescription, GroupDescription, GroupListing, MemberDescription,
};
use crate::group::records::{ConsumerGroupValue, ConsumerMemberValue};
use crate::group::GroupError;

/// Topic name → partitions.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The server-side assignors (Kafka's names); the first is the default.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// KIP-848 limits, from the broker settings (Kafka's `group.consumer.*`).
#[derive(Debug, Clone)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`: a member that does not heartbeat for this long
    /// is removed.
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: how often members heartbeat.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`.
    pub max_size: usize,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: i32::MAX as usize,
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    topics: Vec<String>,
    regex: Option<String>,
    assignor: Option<String>,
    epoch: i32,
    previous_epoch: i32,
    /// What the member was last told it owns.
    assigned: Assignment,
    /// Partitions it was told to give up and has not yet reported gone.
    revoking: Assignment,
    /// The assignment last sent, to send it again only when it changed.
    last_sent: Option<Assignment>,
    session_deadline: i64,
    revoke_deadline: Option<i64>,
}

/// One consumer-protocol group.
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    id: String,
    group_epoch: i32,
    assignment_epoch: i32,
    assignor: String,
    members: BTreeMap<String, Member>,
    /// Member id → target partitions (the assignor's output at `assignment_epoch`).
    target: BTreeMap<String, Assignment>,
    /// Partition counts of the subscribed topics the target was computed for.
    subscribed: BTreeMap<String, i32>,
    /// Set when what is persisted changed; cleared by `take_change`.
    changed: bool,
    empty_since: Option<i64>,
}

/// An assignment as the API and the records carry it: (topic, partitions).
fn flat(a: &Assignment) -> Vec<(String, Vec<i32>)> {
    a.iter()
        .map(|(t, ps)| (t.clone(), ps.iter().copied().collect()))
        .collect()
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

fn contains(a: &Assignment, topic: &str, partition: i32) -> bool {
    a.get(topic).is_some_and(|s| s.contains(&partition))
}

fn insert(a: &mut Assignment, topic: &str, partition: i32) {
    a.entry(topic.to_string()).or_default().insert(partition);
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        for p in ps {
            if !contains(b, t, *p) {
                insert(&mut out, t, *p);
            }
        }
    }
    out
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        for p in ps {
            if contains(b, t, *p) {
                insert(&mut out, t, *p);
            }
        }
    }
    out
}

fn union(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = a.clone();
    for (t, ps) in b {
        for p in ps {
            insert(&mut out, t, *p);
        }
    }
    out
}

/// `regex` as Kafka matches it: the whole topic name (RE2 syntax, which the `regex` crate
/// shares for what clients send).
fn compile(regex: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{regex})$"))
}

impl Member {
    /// The topics this member subscribes to, among `topics` (name → partition count).
    fn subscribed<'a>(&self, topics: &'a BTreeMap<String, i32>) -> Vec<&'a str> {
        let pattern = self.regex.as_deref().and_then(|r| compile(r).ok());
        topics
            .keys()
            .filter(|t| {
                self.topics.iter().any(|s| s == *t)
                    || pattern
                        .as_ref()
                        .is_some_and(|re| !t.starts_with("__") && re.is_match(t))
            })
            .map(String::as_str)
            .collect()
    }
}

impl ConsumerGroup {
    pub fn new(id: &str, now: i64) -> Self {
        Self {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            assignor: ASSIGNORS[0].to_string(),
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed: BTreeMap::new(),
            changed: false,
            empty_since: Some(now),
        }
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    pub fn empty_since(&self) -> Option<i64> {
        self.empty_since
    }

    /// Whether the persisted state changed since the last call.
    pub fn take_change(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn bump(&mut self) {
        self.group_epoch += 1;
        self.changed = true;
    }

    fn fenced(&self, member: &str, epoch: i32, current: i32) -> GroupError {
        GroupError::FencedMemberEpoch {
            group: self.id.clone(),
            member: member.to_string(),
            epoch,
            current,
        }
    }

    fn unknown(&self, member: &str) -> GroupError {
        GroupError::UnknownMemberId {
            group: self.id.clone(),
            member: member.to_string(),
        }
    }

    /// ConsumerGroupHeartbeat. `topics`: every topic (name → partition count) a member may
    /// subscribe to.
    pub fn heartbeat(
        &mut self,
        req: &ConsumerHeartbeatRequest,
        topics: &BTreeMap<String, i32>,
        now: i64,
        config: &ConsumerGroupConfig,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        if req.member_id.is_empty() {
            return Err(GroupError::InvalidRequest {
                reason: "MemberId can't be empty".into(),
            });
        }
        if let Some(regex) = &req.subscribed_topic_regex {
            if let Err(e) = compile(regex) {
                return Err(GroupError::InvalidRegularExpression {
                    regex: regex.clone(),
                    reason: e.to_string(),
                });
            }
        }
        if let Some(name) = &req.server_assignor {
            if !ASSIGNORS.contains(&name.as_str()) {
                return Err(GroupError::UnsupportedAssignor { name: name.clone() });
            }
        }
        let owned = req.owned.as_ref().map(|o| {
            let mut a = Assignment::new();
            for (t, ps) in o {
                for p in ps {
                    insert(&mut a, t, *p);
                }
            }
            a
        });
        match req.member_epoch {
            -1 | -2 => {
                if self.members.remove(&req.member_id).is_none() {
                    return Err(self.unknown(&req.member_id));
                }
                self.target.remove(&req.member_id);
                self.bump();
                if self.members.is_empty() {
                    self.empty_since = Some(now);
                }
                self.compute_target(topics);
                return Ok(ConsumerHeartbeatResponse {
                    error: None,
                    member_id: req.member_id.clone(),
                    member_epoch: req.member_epoch,
                    heartbeat_interval_ms: config.heartbeat_interval_ms,
                    assignment: None,
                });
            }
            0 => self.join(req, now, config)?,
            epoch if epoch < 0 => {
                return Err(GroupError::InvalidRequest {
                    reason: format!("MemberEpoch {epoch} is invalid"),
                })
            }
            epoch => {
                let member = self
                    .members
                    .get(&req.member_id)
                    .ok_or_else(|| self.unknown(&req.member_id))?;
                let lost_response = epoch == member.previous_epoch
                    && owned
                        .as_ref()
                        .is_some_and(|o| minus(o, &member.assigned).is_empty());
                if epoch != member.epoch && !lost_response {
                    return Err(self.fenced(&req.member_id, epoch, member.epoch));
                }
                if lost_response {
                    // The member missed the response that moved it on: send it again.
                    if let Some(m) = self.members.get_mut(&req.member_id) {
                        m.last_sent = None;
                    }
                }
            }
        }
        let mut changed = false;
        let unknown = self.unknown(&req.member_id);
        let member = self.members.get_mut(&req.member_id).ok_or(unknown)?;
        member.session_deadline = now + i64::from(config.session_timeout_ms);
        if let Some(names) = &req.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            if member.topics != names {
                member.topics = names;
                changed = true;
            }
        }
        if req.subscribed_topic_regex.is_some() {
            let regex = req.subscribed_topic_regex.clone().filter(|r| !r.is_empty());
            if member.regex != regex {
                member.regex = regex;
                changed = true;
            }
        }
        if req.server_assignor.is_some() && member.assignor != req.server_assignor {
            member.assignor.clone_from(&req.server_assignor);
            changed = true;
        }
        if req.rebalance_timeout_ms > 0 {
            member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if req.rack_id.is_some() {
            member.rack_id.clone_from(&req.rack_id);
        }
        member.client_id.clone_from(&req.client_id);
        member.client_host.clone_from(&req.client_host);
        if changed {
            self.bump();
        }
        let view = self.subscribed_view(topics);
        if view != self.subscribed {
            self.bump();
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target(topics);
        }
        let full = req.member_epoch == 0 || owned.is_some();
        self.reconcile(&req.member_id, owned.as_ref(), now);
        let unknown = self.unknown(&req.member_id);
        let member = self.members.get_mut(&req.member_id).ok_or(unknown)?;
        let send = full && owned.as_ref() != Some(&member.assigned)
            || member.last_sent.as_ref() != Some(&member.assigned);
        let assignment = send.then(|| {
            member.last_sent = Some(member.assigned.clone());
            flat(&member.assigned)
        });
        Ok(ConsumerHeartbeatResponse {
            error: None,
            member_id: member.id.clone(),
            member_epoch: member.epoch,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            assignment,
        })
    }

    fn join(
        &mut self,
        req: &ConsumerHeartbeatRequest,
        now: i64,
        config: &ConsumerGroupConfig,
    ) -> Result<(), GroupError> {
        if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
            return Err(GroupError::InvalidRequest {
                reason:
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in the first request"
                        .into(),
            });
        }
        if req.rebalance_timeout_ms <= 0 {
            return Err(GroupError::InvalidRequest {
                reason: "RebalanceTimeoutMs must be provided in the first request".into(),
            });
        }
        if req
            .owned
            .as_ref()
            .is_some_and(|o| o.iter().any(|(_, ps)| !ps.is_empty()))
        {
            return Err(GroupError::InvalidRequest {
                reason: "TopicPartitions must be empty when (re-)joining".into(),
            });
        }
        // A static member that comes back under a new member id replaces its old self.
        if let Some(instance) = &req.instance_id {
            let previous: Vec<String> = self
                .members
                .values()
                .filter(|m| m.instance_id.as_ref() == Some(instance) && m.id != req.member_id)
                .map(|m| m.id.clone())
                .collect();
            for id in previous {
                self.members.remove(&id);
                self.target.remove(&id);
            }
        }
        // A member rejoining with epoch 0 (after being fenced) starts over.
        if let Some(old) = self.members.remove(&req.member_id) {
            tracing::debug!(group = %self.id, member = %old.id, "member rejoined");
            self.target.remove(&req.member_id);
        } else if self.members.len() >= config.max_size {
            return Err(GroupError::GroupMaxSizeReached {
                group: self.id.clone(),
                max: config.max_size,
            });
        }
        self.members.insert(
            req.member_id.clone(),
            Member {
                id: req.member_id.clone(),
                instance_id: req.instance_id.clone(),
                rack_id: req.rack_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                topics: Vec::new(),
                regex: None,
                assignor: None,
                epoch: 0,
                previous_epoch: 0,
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                last_sent: None,
                session_deadline: now + i64::from(config.session_timeout_ms),
                revoke_deadline: None,
            },
        );
        self.empty_since = None;
        self.bump();
        Ok(())
    }

    /// Partition counts of every topic some member subscribes to.
    fn subscribed_view(&self, topics: &BTreeMap<String, i32>) -> BTreeMap<String, i32> {
        let mut view = BTreeMap::new();
        for m in self.members.values() {
            for t in m.subscribed(topics) {
                view.insert(t.to_string(), topics.get(t).copied().unwrap_or(0));
            }
        }
        view
    }

    /// Runs the assignor for the current members and topics; the assignment epoch catches up
    /// with the group epoch.
    fn compute_target(&mut self, topics: &BTreeMap<String, i32>) {
        self.subscribed = self.subscribed_view(topics);
        self.assignor = self
            .members
            .values()
            .find_map(|m| m.assignor.clone())
            .unwrap_or_else(|| ASSIGNORS[0].to_string());
        let members: Vec<(String, BTreeSet<String>)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.subscribed(topics).into_iter().map(String::from).collect(),
                )
            })
            .collect();
        self.target = if self.assignor == "range" {
            assign_range(&members, &self.subscribed)
        } else {
            assign_uniform(&members, &self.subscribed, &self.target)
        };
        self.assignment_epoch = self.group_epoch;
        self.changed = true;
    }

    /// Moves `member_id` toward its target (see the module docs).
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: Assignment = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .fold(Assignment::new(), |acc, m| {
                union(&union(&acc, &m.assigned), &m.revoking)
            });
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        if count(&member.revoking) > 0 {
            let gone = owned.is_some_and(|o| intersect(o, &member.revoking).is_empty());
            if !gone {
                return;
            }
            member.revoking.clear();
            member.revoke_deadline = None;
            self.changed = true;
        }
        let keep = intersect(&member.assigned, &target);
        let revoke = minus(&member.assigned, &target);
        if count(&revoke) > 0 {
            member.assigned = keep;
            member.revoking = revoke;
            member.revoke_deadline = Some(now + i64::from(member.rebalance_timeout_ms));
            self.changed = true;
            return;
        }
        let free = minus(&minus(&target, &member.assigned), &held_by_others);
        if member.epoch != assignment_epoch || count(&free) > 0 {
            if member.epoch != assignment_epoch {
                member.previous_epoch = member.epoch;
                member.epoch = assignment_epoch;
            }
            member.assigned = union(&keep, &free);
            self.changed = true;
        }
    }

    /// Removes members whose session expired or that did not give up partitions within
    /// their rebalance timeout. Returns the removed member ids.
    pub fn tick(&mut self, now: i64, topics: &BTreeMap<String, i32>) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| now >= m.session_deadline || m.revoke_deadline.is_some_and(|d| now >= d))
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            tracing::info!(group = %self.id, member = %id, "consumer group member removed: session or rebalance timeout expired");
            self.members.remove(id);
            self.target.remove(id);
        }
        if !gone.is_empty() {
            self.bump();
            if self.members.is_empty() {
                self.empty_since = Some(now);
            }
            self.compute_target(topics);
        }
        gone
    }

    /// OffsetCommit v9+ from a member: its epoch must be its current one.
    pub fn validate_commit(&self, member_epoch: i32, member_id: &str) -> Result<(), GroupError> {
        if member_epoch < 0 && member_id.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(self.unknown(member_id));
        }
        let member = self
            .members
            .get(member_id)
            .ok_or_else(|| self.unknown(member_id))?;
        if member_epoch != member.epoch {
            return Err(GroupError::StaleMemberEpoch {
                group: self.id.clone(),
                member: member_id.to_string(),
                epoch: member_epoch,
                current: member.epoch,
            });
        }
        Ok(())
    }

    /// Kafka's group states for consumer groups.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.epoch != self.assignment_epoch
                || count(&m.revoking) > 0
                || Some(&m.assigned) != self.target.get(&m.id)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub fn listing(&self) -> GroupListing {
        GroupListing {
            group_id: self.id.clone(),
            protocol_type: "consumer".into(),
            state: self.state(),
            group_type: "consumer",
        }
    }

    pub fn describe(&self) -> ConsumerGroupDescription {
        ConsumerGroupDescription {
            group_id: self.id.clone(),
            state: self.state(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.clone(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.topics.clone(),
                    subscribed_topic_regex: m.regex.clone(),
                    assignment: flat(&m.assigned),
                    target_assignment: flat(&self.target.get(&m.id).cloned().unwrap_or_default()),
                })
                .collect(),
        }
    }

    /// The topics the current target was computed for.
    pub fn subscribed_topics(&self) -> impl Iterator<Item = String> + '_ {
        self.subscribed.keys().cloned()
    }

    /// The group as DescribeGroups shows it: protocol type `consumer`, the group epoch as
    /// the generation, no per-member metadata (it lives in ConsumerGroupDescribe).
    pub fn describe_classic(&self) -> GroupDescription {
        GroupDescription {
            group_id: self.id.clone(),
            state: self.state(),
            protocol_type: "consumer".into(),
            protocol: self.assignor.clone(),
            generation_id: self.group_epoch,
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: Bytes::new(),
                    assignment: Bytes::new(),
                })
                .collect(),
        }
    }

    pub fn to_record(&self) -> ConsumerGroupValue {
        ConsumerGroupValue {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.clone(),
            subscribed: self
                .subscribed
                .iter()
                .map(|(t, n)| (t.clone(), *n))
                .collect(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    topics: m.topics.clone(),
                    regex: m.regex.clone(),
                    assignor: m.assignor.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: flat(&m.assigned),
                    revoking: flat(&m.revoking),
                    target: flat(&self.target.get(&m.id).cloned().unwrap_or_default()),
                })
                .collect(),
        }
    }

    /// A group replayed from its record; each member gets a fresh session from `now`.
    pub fn from_record(
        id: &str,
        value: ConsumerGroupValue,
        now: i64,
        config: &ConsumerGroupConfig,
    ) -> Self {
        let build = |list: Vec<(String, Vec<i32>)>| -> Assignment {
            list.into_iter()
                .map(|(t, ps)| (t, ps.into_iter().collect()))
                .collect()
        };
        let mut g = Self::new(id, now);
        g.group_epoch = value.group_epoch;
        g.assignment_epoch = value.assignment_epoch;
        g.assignor = value.assignor;
        g.subscribed = value.subscribed.into_iter().collect();
        for m in value.members {
            g.target.insert(m.member_id.clone(), build(m.target));
            let revoking = build(m.revoking);
            let revoke_deadline =
                (count(&revoking) > 0).then(|| now + i64::from(m.rebalance_timeout_ms));
            g.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    rack_id: m.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    topics: m.topics,
                    regex: m.regex,
                    assignor: m.assignor,
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    assigned: build(m.assigned),
                    revoking,
                    last_sent: None,
                    session_deadline: now + i64::from(config.session_timeout_ms),
                    revoke_deadline,
                },
            );
        }
        if !g.members.is_empty() {
            g.empty_since = None;
        }
        g
    }
}

/// Kafka's uniform assignor: every partition of a subscribed topic goes to one subscribed
/// member, member counts differ by at most one where subscriptions allow, and a partition
/// stays with its previous owner when balance allows (stickiness).
fn assign_uniform(
    members: &[(String, BTreeSet<String>)],
    topics: &BTreeMap<String, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|(id, _)| (id.clone(), Assignment::new()))
        .collect();
    let mut load: BTreeMap<&str, usize> = members.iter().map(|(id, _)| (id.as_str(), 0)).collect();
    let candidates = |topic: &str| -> Vec<&str> {
        members
            .iter()
            .filter(|(_, subs)| subs.contains(topic))
            .map(|(id, _)| id.as_str())
            .collect()
    };
    // How many partitions a member may keep: its fair share if every member subscribed the same.
    let partitions: Vec<(&str, i32)> = topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.as_str(), p)))
        .collect();
    let assignable = partitions
        .iter()
        .filter(|(t, _)| !candidates(t).is_empty())
        .count();
    let quota = if members.is_empty() {
        0
    } else {
        assignable.div_ceil(members.len())
    };
    let mut owner: BTreeMap<(&str, i32), &str> = BTreeMap::new();
    // Keep previous owners up to the quota.
    for &(t, p) in &partitions {
        let cands = candidates(t);
        if let Some(prev) = cands
            .iter()
            .find(|id| previous.get(**id).is_some_and(|a| contains(a, t, p)))
        {
            let l = load.entry(prev).or_default();
            if *l < quota {
                *l += 1;
                owner.insert((t, p), prev);
            }
        }
    }
    // Give each unowned partition to its least-loaded candidate.
    for &(t, p) in &partitions {
        if owner.contains_key(&(t, p)) {
            continue;
        }
        let cands = candidates(t);
        if let Some(best) = cands.iter().min_by_key(|id| (load[**id], **id)) {
            *load.entry(best).or_default() += 1;
            owner.insert((t, p), best);
        }
    }
    // Balance: move partitions from a member to a less-loaded candidate while the gap is > 1.
    for _ in 0..16 {
        let mut moved = false;
        for &(t, p) in &partitions {
            let Some(&from) = owner.get(&(t, p)) else {
                continue;
            };
            let cands = candidates(t);
            if let Some(&to) = cands.iter().min_by_key(|id| (load[**id], **id)) {
                if load[to] + 1 < load[from] {
                    *load.entry(from).or_default() -= 1;
                    *load.entry(to).or_default() += 1;
                    owner.insert((t, p), to);
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    for ((t, p), id) in owner {
        if let Some(a) = out.get_mut(id) {
            insert(a, t, p);
        }
    }
    out
}

/// Kafka's range assignor: per topic, its subscribers in member-id order each take a
/// contiguous range; the first `partitions % members` take one more.
fn assign_range(
    members: &[(String, BTreeSet<String>)],
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|(id, _)| (id.clone(), Assignment::new()))
        .collect();
    for (topic, n) in topics {
        let mut subs: Vec<&str> = members
            .iter()
            .filter(|(_, s)| s.contains(topic))
            .map(|(id, _)| id.as_str())
            .collect();
        subs.sort_unstable();
        if subs.is_empty() {
            continue;
        }
        let n = usize::try_from(*n).unwrap_or(0);
        let per = n / subs.len();
        let extra = n % subs.len();
        let mut next = 0usize;
        for (i, id) in subs.iter().enumerate() {
            let take = per + usize::from(i < extra);
            for p in next..next + take {
                if let Some(a) = out.get_mut(*id) {
                    insert(a, topic, i32::try_from(p).unwrap_or(i32::MAX));
                }
            }
            next += take;
        }
    }
    out
}

#[cfg(test)]
mod tests;
