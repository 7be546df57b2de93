//! One group's membership (Kafka's classic group protocol) as a pure state machine. Every call
//! takes `now` (ms since the epoch) and returns the parked responses it completes; the
//! coordinator owns the parked requests, the clock and the log.
//!
//! ```text
//!  Empty ──join──► PreparingRebalance ──all joined, or rebalance timeout──► CompletingRebalance
//!    ▲               ▲   ▲  (members that did not rejoin are removed)          │ leader's SyncGroup
//!    │ no members    │   └──── join (new member, new protocols), leave, ───────┤
//!    └───────────────┘         session expiry  ◄──────────────── Stable ◄──────┘
//! ```
//!
//! Invariant: a member's `awaiting_join` (`awaiting_sync`) is true exactly while the
//! coordinator holds a parked JoinGroup (SyncGroup) for it, and each is answered by exactly
//! one [`Output`] (or the immediate reply).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::group::api::{
    GroupDescription, GroupListing, HeartbeatRequest, JoinRequest, JoinResponse, JoinedMember,
    LeaveMember, MemberDescription, Protocol, SyncRequest, SyncResponse,
};
use crate::group::consumer::ConsumerGroupConfig;
use crate::group::records::{GroupValue, MemberValue};
use crate::group::GroupError;

/// Group protocol limits, from the broker settings.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Kafka's `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty
    /// group waits for more members.
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// The consumer protocol's (KIP-848) limits.
    pub consumer: ConsumerGroupConfig,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 1_800_000,
            consumer: ConsumerGroupConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's names, as ListGroups and DescribeGroups show them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }
}

/// A parked request answered later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Join {
        member_id: String,
        response: JoinResponse,
    },
    Sync {
        member_id: String,
        response: SyncResponse,
    },
}

/// A reply now, or a request parked under `member_id` until an [`Output`] answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<T> {
    Now(T),
    Parked { member_id: String },
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    last_seen: i64,
    awaiting_join: bool,
    awaiting_sync: bool,
}

impl Member {
    fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|p| Some(p.name.as_str()) == protocol)
            .or(self.protocols.first())
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    id: String,
    state: GroupState,
    state_since: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED → when they lapse.
    pending: HashMap<String, i64>,
    rebalance_deadline: i64,
    join_not_before: i64,
    metadata_changed: bool,
}

type Joined = (Reply<JoinResponse>, Vec<Output>);

impl Group {
    pub fn new(id: &str, now: i64) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            state_since: now,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: 0,
            join_not_before: 0,
            metadata_changed: false,
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> GroupState {
        self.state
    }

    #[cfg(test)]
    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// When the group became empty, if it is.
    pub fn empty_since(&self) -> Option<i64> {
        (self.state == GroupState::Empty).then_some(self.state_since)
    }

    /// Whether the membership changed in a way worth persisting since the last call.
    pub fn take_metadata_change(&mut self) -> bool {
        std::mem::take(&mut self.metadata_changed)
    }

    /// A group that holds nothing: never joined, no member ids handed out.
    pub fn is_vacant(&self) -> bool {
        self.members.is_empty()
            && self.pending.is_empty()
            && self.generation == 0
            && self.state == GroupState::Empty
    }

    /// Marks a group created by an offset commit alone (no members, no protocol).
    pub fn is_simple(&self) -> bool {
        self.protocol_type.is_none() && self.members.is_empty()
    }

    fn set_state(&mut self, state: GroupState, now: i64) {
        self.state = state;
        self.state_since = now;
    }

    fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|q| q.name == p.name))
            })
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|q| q.name == *name))
            })
            .collect();
        let mut votes: Vec<usize> = vec![0; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name))
            {
                if let Some(v) = votes.get_mut(i) {
                    *v += 1;
                }
            }
        }
        let mut best: Option<(usize, &str)> = None;
        for (name, count) in candidates.iter().zip(votes) {
            if best.is_none_or(|(b, _)| count > b) {
                best = Some((count, name));
            }
        }
        best.map(|(_, name)| name.to_string())
    }

    fn check_fenced(&self, member_id: &str, instance: Option<&String>) -> Result<(), GroupError> {
        if let Some(instance) = instance {
            if let Some(owner) = self.static_members.get(instance) {
                if owner != member_id {
                    return Err(GroupError::FencedInstanceId {
                        group: self.id.clone(),
                        instance: instance.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    fn unknown_member(&self, member_id: &str) -> GroupError {
        GroupError::UnknownMemberId {
            group: self.id.clone(),
            member: member_id.to_string(),
        }
    }

    /// The JoinGroup answer for `member_id` in the current generation.
    fn join_response(&self, member_id: &str, leader: Option<&str>) -> JoinResponse {
        let leader = leader.or(self.leader.as_deref()).unwrap_or_default();
        let members = if self.leader.as_deref() == Some(member_id) && leader == member_id {
            self.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata_for(self.protocol.as_deref()),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: leader.to_string(),
            member_id: member_id.to_string(),
            members,
        }
    }

    /// JoinGroup. `fresh_id` is the member id to hand out if this join needs a new one.
    pub fn join(
        &mut self,
        req: &JoinRequest,
        now: i64,
        fresh_id: String,
        config: &GroupConfig,
    ) -> Joined {
        let fail = |e: GroupError| (Reply::Now(JoinResponse::error(e, &req.member_id)), vec![]);
        if req.session_timeout_ms < config.min_session_timeout_ms
            || req.session_timeout_ms > config.max_session_timeout_ms
        {
            return fail(GroupError::InvalidSessionTimeout {
                timeout_ms: req.session_timeout_ms,
                min: config.min_session_timeout_ms,
                max: config.max_session_timeout_ms,
            });
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return fail(GroupError::InconsistentGroupProtocol {
                group: self.id.clone(),
            });
        }
        let mut out = Vec::new();
        if req.member_id.is_empty() {
            if let Some(instance) = &req.group_instance_id {
                if let Some(old_id) = self.static_members.get(instance).cloned() {
                    return self.replace_static(&old_id, req, now, fresh_id, config);
                }
                self.add_member(&fresh_id, req, now, config, &mut out);
                return (
                    Reply::Parked {
                        member_id: fresh_id,
                    },
                    out,
                );
            }
            if req.require_known_member_id {
                let lapse = now + i64::from(req.session_timeout_ms);
                self.pending.insert(fresh_id.clone(), lapse);
                let e = GroupError::MemberIdRequired {
                    group: self.id.clone(),
                };
                return (Reply::Now(JoinResponse::error(e, &fresh_id)), out);
            }
            self.add_member(&fresh_id, req, now, config, &mut out);
            return (
                Reply::Parked {
                    member_id: fresh_id,
                },
                out,
            );
        }
        if self.pending.remove(&req.member_id).is_some() {
            self.add_member(&req.member_id, req, now, config, &mut out);
            return (
                Reply::Parked {
                    member_id: req.member_id.clone(),
                },
                out,
            );
        }
        if let Err(e) = self.check_fenced(&req.member_id, req.group_instance_id.as_ref()) {
            return fail(e);
        }
        let Some(member) = self.members.get(&req.member_id) else {
            return fail(self.unknown_member(&req.member_id));
        };
        let same_protocols = member.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        let rebalance = match self.state {
            GroupState::Empty | GroupState::Dead => {
                return fail(self.unknown_member(&req.member_id))
            }
            GroupState::PreparingRebalance => false,
            GroupState::CompletingRebalance => !same_protocols,
            GroupState::Stable => is_leader || !same_protocols,
        };
        if self.state != GroupState::PreparingRebalance && !rebalance {
            // A retried join with unchanged metadata: the current generation, as it is.
            if let Some(m) = self.members.get_mut(&req.member_id) {
                m.last_seen = now;
            }
            return (Reply::Now(self.join_response(&req.member_id, None)), out);
        }
        if let Some(m) = self.members.get_mut(&req.member_id) {
            m.protocols.clone_from(&req.protocols);
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.awaiting_join = true;
            m.last_seen = now;
        }
        if rebalance {
            self.prepare_rebalance(now, config, &mut out);
        }
        self.try_complete_join(now, &mut out);
        (
            Reply::Parked {
                member_id: req.member_id.clone(),
            },
            out,
        )
    }

    fn add_member(
        &mut self,
        member_id: &str,
        req: &JoinRequest,
        now: i64,
        config: &GroupConfig,
        out: &mut Vec<Output>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.insert(
            member_id.to_string(),
            Member {
                id: member_id.to_string(),
                group_instance_id: req.group_instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols.clone(),
                assignment: Bytes::new(),
                last_seen: now,
                awaiting_join: true,
                awaiting_sync: false,
            },
        );
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.to_string());
        }
        if self.state == GroupState::PreparingRebalance {
            if self.join_not_before > now {
                // The first rebalance of an empty group waits a little longer for each
                // newcomer, never past the rebalance timeout.
                self.join_not_before =
                    (now + config.initial_rebalance_delay_ms).min(self.rebalance_deadline);
            }
            self.rebalance_deadline = self
                .rebalance_deadline
                .max(now + i64::from(req.rebalance_timeout_ms));
        } else {
            self.prepare_rebalance(now, config, out);
        }
        self.try_complete_join(now, out);
    }

    fn replace_static(
        &mut self,
        old_id: &str,
        req: &JoinRequest,
        now: i64,
        new_id: String,
        config: &GroupConfig,
    ) -> Joined {
        let mut out = Vec::new();
        let Some(old) = self.members.remove(old_id) else {
            return (
                Reply::Now(JoinResponse::error(
                    self.unknown_member(old_id),
                    &req.member_id,
                )),
                out,
            );
        };
        let instance = old.group_instance_id.clone().unwrap_or_default();
        let fenced = || GroupError::FencedInstanceId {
            group: self.id.clone(),
            instance: instance.clone(),
        };
        if old.awaiting_join {
            out.push(Output::Join {
                member_id: old_id.to_string(),
                response: JoinResponse::error(fenced(), old_id),
            });
        }
        if old.awaiting_sync {
            out.push(Output::Sync {
                member_id: old_id.to_string(),
                response: SyncResponse::error(fenced()),
            });
        }
        let member = Member {
            id: new_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols.clone(),
            last_seen: now,
            awaiting_join: false,
            awaiting_sync: false,
            ..old
        };
        self.members.insert(new_id.clone(), member);
        self.static_members.insert(instance, new_id.clone());
        let old_leader = self.leader.clone();
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable && self.select_protocol() == self.protocol {
            // Same instance back within its session: it keeps its assignment and the group
            // does not rebalance. The old leader id is returned so that the newcomer does
            // not compute an assignment nobody would receive.
            self.metadata_changed = true;
            let resp = self.join_response(&new_id, old_leader.as_deref());
            return (Reply::Now(resp), out);
        }
        if let Some(m) = self.members.get_mut(&new_id) {
            m.awaiting_join = true;
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, config, &mut out);
        }
        self.try_complete_join(now, &mut out);
        (Reply::Parked { member_id: new_id }, out)
    }

    fn prepare_rebalance(&mut self, now: i64, config: &GroupConfig, out: &mut Vec<Output>) {
        if self.state == GroupState::CompletingRebalance {
            let group = self.id.clone();
            for m in self.members.values_mut().filter(|m| m.awaiting_sync) {
                m.awaiting_sync = false;
                out.push(Output::Sync {
                    member_id: m.id.clone(),
                    response: SyncResponse::error(GroupError::RebalanceInProgress {
                        group: group.clone(),
                    }),
                });
            }
        }
        let was_empty = matches!(self.state, GroupState::Empty | GroupState::Dead);
        self.set_state(GroupState::PreparingRebalance, now);
        let timeout = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        self.rebalance_deadline = now + timeout;
        self.join_not_before = if was_empty {
            (now + config.initial_rebalance_delay_ms).min(self.rebalance_deadline)
        } else {
            now
        };
    }

    fn try_complete_join(&mut self, now: i64, out: &mut Vec<Output>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join) && self.pending.is_empty();
        if (all_joined && now >= self.join_not_before) || now >= self.rebalance_deadline {
            self.complete_join(now, out);
        }
    }

    fn complete_join(&mut self, now: i64, out: &mut Vec<Output>) {
        let late: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join)
            .map(|m| m.id.clone())
            .collect();
        for id in late {
            self.remove_member(&id, out);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now);
            self.metadata_changed = true;
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            if let Some(m) = self.members.get_mut(&id) {
                m.awaiting_join = false;
                m.last_seen = now;
            }
            out.push(Output::Join {
                response: self.join_response(&id, None),
                member_id: id,
            });
        }
    }

    fn remove_member(&mut self, member_id: &str, out: &mut Vec<Output>) {
        let Some(m) = self.members.remove(member_id) else {
            return;
        };
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if m.awaiting_join {
            out.push(Output::Join {
                member_id: member_id.to_string(),
                response: JoinResponse::error(self.unknown_member(member_id), member_id),
            });
        }
        if m.awaiting_sync {
            out.push(Output::Sync {
                member_id: member_id.to_string(),
                response: SyncResponse::error(self.unknown_member(member_id)),
            });
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// After members left or expired: rebalance the rest (or finish the one under way).
    fn members_removed(&mut self, now: i64, config: &GroupConfig, out: &mut Vec<Output>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, config, out);
            }
            GroupState::PreparingRebalance | GroupState::Empty | GroupState::Dead => {}
        }
        self.try_complete_join(now, out);
    }

    pub fn sync(&mut self, req: &SyncRequest, now: i64) -> (Reply<SyncResponse>, Vec<Output>) {
        let fail = |e: GroupError| (Reply::Now(SyncResponse::error(e)), vec![]);
        if let Err(e) = self.check_fenced(&req.member_id, req.group_instance_id.as_ref()) {
            return fail(e);
        }
        if !self.members.contains_key(&req.member_id) {
            return fail(self.unknown_member(&req.member_id));
        }
        if req.generation_id != self.generation {
            return fail(GroupError::IllegalGeneration {
                group: self.id.clone(),
                generation: req.generation_id,
                current: self.generation,
            });
        }
        let inconsistent = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != self.protocol.as_ref());
        if inconsistent {
            return fail(GroupError::InconsistentGroupProtocol {
                group: self.id.clone(),
            });
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => fail(self.unknown_member(&req.member_id)),
            GroupState::PreparingRebalance => fail(GroupError::RebalanceInProgress {
                group: self.id.clone(),
            }),
            GroupState::Stable => {
                let Some(m) = self.members.get_mut(&req.member_id) else {
                    return fail(self.unknown_member(&req.member_id));
                };
                m.last_seen = now;
                let resp = SyncResponse {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: m.assignment.clone(),
                };
                (Reply::Now(resp), vec![])
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.awaiting_sync = true;
                    m.last_seen = now;
                }
                let mut out = Vec::new();
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    let assignments: HashMap<&str, &Bytes> = req
                        .assignments
                        .iter()
                        .map(|(id, a)| (id.as_str(), a))
                        .collect();
                    self.set_state(GroupState::Stable, now);
                    self.metadata_changed = true;
                    for m in self.members.values_mut() {
                        m.assignment = assignments
                            .get(m.id.as_str())
                            .map(|a| (*a).clone())
                            .unwrap_or_default();
                        if m.awaiting_sync {
                            m.awaiting_sync = false;
                            out.push(Output::Sync {
                                member_id: m.id.clone(),
                                response: SyncResponse {
                                    error: None,
                                    protocol_type: self.protocol_type.clone(),
                                    protocol_name: self.protocol.clone(),
                                    assignment: m.assignment.clone(),
                                },
                            });
                        }
                    }
                }
                (
                    Reply::Parked {
                        member_id: req.member_id.clone(),
                    },
                    out,
                )
            }
        }
    }

    pub fn heartbeat(&mut self, req: &HeartbeatRequest, now: i64) -> Result<(), GroupError> {
        self.check_fenced(&req.member_id, req.group_instance_id.as_ref())?;
        let generation = self.generation;
        let group = self.id.clone();
        let state = self.state;
        let unknown = self.unknown_member(&req.member_id);
        let m = self.members.get_mut(&req.member_id).ok_or(unknown)?;
        if req.generation_id != generation {
            return Err(GroupError::IllegalGeneration {
                group,
                generation: req.generation_id,
                current: generation,
            });
        }
        m.last_seen = now;
        match state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress { group }),
            _ => Ok(()),
        }
    }

    /// LeaveGroup: one result per member, in order.
    pub fn leave(
        &mut self,
        leaving: &[LeaveMember],
        now: i64,
        config: &GroupConfig,
    ) -> (Vec<Result<(), GroupError>>, Vec<Output>) {
        let mut out = Vec::new();
        let mut removed = false;
        let mut results = Vec::with_capacity(leaving.len());
        for l in leaving {
            let member_id = match (&l.group_instance_id, l.member_id.is_empty()) {
                (Some(instance), true) => {
                    let Some(id) = self.static_members.get(instance) else {
                        results.push(Err(self.unknown_member(&l.member_id)));
                        continue;
                    };
                    id.clone()
                }
                _ => l.member_id.clone(),
            };
            if let Err(e) = self.check_fenced(&member_id, l.group_instance_id.as_ref()) {
                results.push(Err(e));
                continue;
            }
            if self.pending.remove(&member_id).is_some() {
                results.push(Ok(()));
            } else if self.members.contains_key(&member_id) {
                self.remove_member(&member_id, &mut out);
                removed = true;
                results.push(Ok(()));
            } else {
                results.push(Err(self.unknown_member(&member_id)));
            }
        }
        if removed {
            self.members_removed(now, config, &mut out);
        }
        (results, out)
    }

    /// Whether an OffsetCommit from this member and generation may store offsets.
    pub fn validate_commit(
        &mut self,
        generation_id: i32,
        member_id: &str,
        instance: Option<&String>,
        now: i64,
    ) -> Result<(), GroupError> {
        if generation_id < 0 && member_id.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress {
                group: self.id.clone(),
            });
        }
        self.check_fenced(member_id, instance)?;
        let generation = self.generation;
        let group = self.id.clone();
        let unknown = self.unknown_member(member_id);
        let m = self.members.get_mut(member_id).ok_or(unknown)?;
        if generation_id != generation {
            return Err(GroupError::IllegalGeneration {
                group,
                generation: generation_id,
                current: generation,
            });
        }
        m.last_seen = now;
        Ok(())
    }

    /// Whether a transactional offset commit (TxnOffsetCommit v3+, KIP-447) names a live
    /// member of the current generation: a zombie producer whose consumer was fenced by a
    /// rebalance cannot move the group's offsets. A commit naming no member is not checked,
    /// and, unlike OffsetCommit, a rebalance in progress does not refuse it (as in Kafka).
    pub fn validate_txn_commit(
        &self,
        generation_id: i32,
        member_id: &str,
        instance: Option<&String>,
    ) -> Result<(), GroupError> {
        if generation_id < 0 && member_id.is_empty() && instance.is_none() {
            return Ok(());
        }
        self.check_fenced(member_id, instance)?;
        if !self.members.contains_key(member_id) {
            return Err(self.unknown_member(member_id));
        }
        if generation_id != self.generation {
            return Err(GroupError::IllegalGeneration {
                group: self.id.clone(),
                generation: generation_id,
                current: self.generation,
            });
        }
        Ok(())
    }

    /// Timeouts: lapsed member ids, expired sessions, rebalances whose wait is over.
    pub fn tick(&mut self, now: i64, config: &GroupConfig) -> Vec<Output> {
        let mut out = Vec::new();
        let before = self.pending.len();
        self.pending.retain(|_, lapse| *lapse > now);
        let lapsed = self.pending.len() != before;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                !m.awaiting_join
                    && !m.awaiting_sync
                    && now - m.last_seen >= i64::from(m.session_timeout_ms)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member_id = %id, "session expired; removing member");
            self.remove_member(id, &mut out);
        }
        if expired.is_empty() {
            if lapsed || self.state == GroupState::PreparingRebalance {
                self.try_complete_join(now, &mut out);
            }
        } else {
            self.members_removed(now, config, &mut out);
        }
        out
    }

    pub fn listing(&self) -> GroupListing {
        GroupListing {
            group_id: self.id.clone(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            state: self.state.as_str(),
            group_type: "classic",
        }
    }

    pub fn describe(&self) -> GroupDescription {
        GroupDescription {
            group_id: self.id.clone(),
            state: self.state.as_str(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            generation_id: self.generation,
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(self.protocol.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The membership to persist: members only while the group is stable.
    pub fn to_record(&self) -> GroupValue {
        let stable = self.state == GroupState::Stable;
        GroupValue {
            protocol_type: self.protocol_type.clone(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: if stable { self.leader.clone() } else { None },
            state_since_ms: self.state_since,
            members: if stable {
                self.members
                    .values()
                    .map(|m| MemberValue {
                        member_id: m.id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        session_timeout_ms: m.session_timeout_ms,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        metadata: m.metadata_for(self.protocol.as_deref()),
                        assignment: m.assignment.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// A group replayed from its record: stable with its members (each given a fresh session
    /// from `now`), or empty.
    pub fn from_record(id: &str, value: GroupValue, now: i64) -> Self {
        let mut g = Self::new(id, value.state_since_ms);
        g.generation = value.generation;
        g.protocol_type = value.protocol_type;
        g.protocol = value.protocol;
        g.leader = value.leader;
        for m in value.members {
            if let Some(instance) = &m.group_instance_id {
                g.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let protocol = Protocol {
                name: g.protocol.clone().unwrap_or_default(),
                metadata: m.metadata,
            };
            g.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![protocol],
                    assignment: m.assignment,
                    last_seen: now,
                    awaiting_join: false,
                    awaiting_sync: false,
                },
            );
        }
        if !g.members.is_empty() {
            g.state = GroupState::Stable;
            g.state_since = now;
        }
        g
    }
}

#[cfg(test)]
mod tests;
