//! [`ShareGroup`], the pure membership of one share group (KIP-932): members join, stay and
//! leave by heartbeat and get assignments from the simple assignor. No I/O, no clock.
//!
//! Invariant: a member's epoch is the group epoch at which its current assignment was
//! computed; the group epoch grows whenever any member's assignment changes.
//!
//! The simple assignor: for each subscribed topic of `n` partitions and the `m` members
//! subscribed to it (sorted by id), when `m >= n` every member gets every partition (any
//! number of members share a partition), otherwise partition `p` goes to member `p mod m`.
//! A joining member never removes another.

use std::collections::{BTreeMap, BTreeSet};

use super::error::ShareError;

/// Topic name → assigned partitions.
pub type Assignment = BTreeMap<String, Vec<i32>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub subscribed: BTreeSet<String>,
    pub assignment: Assignment,
    pub last_seen_ms: i64,
    pub rack: Option<String>,
}

/// What a heartbeat answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub member_id: String,
    pub member_epoch: i32,
    /// Sent when the member's assignment is new to it.
    pub assignment: Option<Assignment>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareGroup {
    pub epoch: i32,
    pub members: BTreeMap<String, Member>,
}

impl ShareGroup {
    /// One heartbeat of `member_id` at `member_epoch` (0 joins, -1 leaves). `subscribed`
    /// `None` keeps the subscription; `partitions(topic)` is the topic's partition count
    /// (`None`: no such topic). `new_id` names a joining member that sent no id.
    #[allow(clippy::too_many_arguments)]
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        member_epoch: i32,
        subscribed: Option<Vec<String>>,
        rack: Option<String>,
        now_ms: i64,
        partitions: &dyn Fn(&str) -> Option<i32>,
        new_id: &dyn Fn() -> String,
    ) -> Result<Beat, ShareError> {
        match member_epoch {
            -1 => {
                if self.members.remove(member_id).is_none() {
                    return Err(ShareError::UnknownMemberId(member_id.to_string()));
                }
                self.reassign(partitions);
                Ok(Beat {
                    member_id: member_id.to_string(),
                    member_epoch: -1,
                    assignment: None,
                })
            }
            0 => {
                let id = if member_id.is_empty() {
                    new_id()
                } else {
                    member_id.to_string()
                };
                let member = self.members.entry(id.clone()).or_insert_with(|| Member {
                    id: id.clone(),
                    epoch: 0,
                    previous_epoch: 0,
                    subscribed: BTreeSet::new(),
                    assignment: Assignment::new(),
                    last_seen_ms: now_ms,
                    rack: None,
                });
                member.last_seen_ms = now_ms;
                member.rack = rack;
                if let Some(topics) = subscribed {
                    member.subscribed = topics.into_iter().collect();
                }
                member.epoch = 0;
                self.reassign(partitions);
                let member = self.member(&id)?;
                Ok(Beat {
                    member_id: id,
                    member_epoch: member.epoch,
                    assignment: Some(member.assignment.clone()),
                })
            }
            epoch => {
                let member = self
                    .members
                    .get_mut(member_id)
                    .ok_or_else(|| ShareError::UnknownMemberId(member_id.to_string()))?;
                if epoch > member.epoch || (epoch < member.epoch && epoch != member.previous_epoch)
                {
                    return Err(ShareError::FencedMemberEpoch {
                        member_id: member_id.to_string(),
                        sent: epoch,
                        current: member.epoch,
                    });
                }
                member.last_seen_ms = now_ms;
                if let Some(topics) = subscribed {
                    member.subscribed = topics.into_iter().collect();
                }
                self.reassign(partitions);
                let member = self.member(member_id)?;
                Ok(Beat {
                    member_id: member_id.to_string(),
                    member_epoch: member.epoch,
                    assignment: (member.epoch != epoch).then(|| member.assignment.clone()),
                })
            }
        }
    }

    fn member(&self, id: &str) -> Result<&Member, ShareError> {
        self.members
            .get(id)
            .ok_or_else(|| ShareError::UnknownMemberId(id.to_string()))
    }

    /// Removes members not seen for `timeout_ms`; returns their ids.
    pub fn expire(
        &mut self,
        now_ms: i64,
        timeout_ms: i64,
        partitions: &dyn Fn(&str) -> Option<i32>,
    ) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| now_ms - m.last_seen_ms > timeout_ms)
            .map(|m| m.id.clone())
            .collect();
        if !gone.is_empty() {
            for id in &gone {
                self.members.remove(id);
            }
            self.reassign(partitions);
        }
        gone
    }

    /// Recomputes every member's assignment; members whose assignment changed (or who just
    /// joined) get the next group epoch.
    fn reassign(&mut self, partitions: &dyn Fn(&str) -> Option<i32>) {
        let topics: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect();
        let mut target: BTreeMap<String, Assignment> = self
            .members
            .keys()
            .map(|id| (id.clone(), Assignment::new()))
            .collect();
        for topic in topics {
            let Some(count) = partitions(&topic) else {
                continue;
            };
            let subscribers: Vec<&String> = self
                .members
                .values()
                .filter(|m| m.subscribed.contains(&topic))
                .map(|m| &m.id)
                .collect();
            let m = i32::try_from(subscribers.len()).unwrap_or(i32::MAX);
            if m == 0 {
                continue;
            }
            for p in 0..count {
                let owners: Vec<&String> = if m >= count {
                    subscribers.clone()
                } else {
                    subscribers
                        .get(usize::try_from(p % m).unwrap_or(0))
                        .into_iter()
                        .copied()
                        .collect()
                };
                for owner in owners {
                    if let Some(a) = target.get_mut(owner) {
                        a.entry(topic.clone()).or_default().push(p);
                    }
                }
            }
        }
        let changed: Vec<String> = self
            .members
            .values()
            .filter(|m| m.epoch == 0 || target.get(&m.id) != Some(&m.assignment))
            .map(|m| m.id.clone())
            .collect();
        if changed.is_empty() {
            return;
        }
        self.epoch += 1;
        for id in changed {
            if let (Some(member), Some(assignment)) =
                (self.members.get_mut(&id), target.remove(&id))
            {
                member.previous_epoch = member.epoch;
                member.epoch = self.epoch;
                member.assignment = assignment;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(topic: &str) -> Option<i32> {
        match topic {
            "one" => Some(1),
            "four" => Some(4),
            _ => None,
        }
    }

    fn join(g: &mut ShareGroup, id: &str, topic: &str) -> Beat {
        g.heartbeat(id, 0, Some(vec![topic.into()]), None, 0, &parts, &|| {
            "x".into()
        })
        .unwrap()
    }

    #[test]
    fn members_outnumbering_partitions_all_get_every_partition() {
        let mut g = ShareGroup::default();
        for id in ["a", "b", "c"] {
            let beat = join(&mut g, id, "one");
            assert_eq!(beat.assignment.unwrap()["one"], vec![0]);
        }
        // The earlier members keep their assignment: nothing new for them.
        let a_epoch = g.members["a"].epoch;
        let beat = g
            .heartbeat("a", a_epoch, None, None, 1, &parts, &|| "x".into())
            .unwrap();
        assert_eq!(beat.assignment, None);
        assert_eq!(g.members.len(), 3);
    }

    #[test]
    fn partitions_spread_when_they_outnumber_members() {
        let mut g = ShareGroup::default();
        join(&mut g, "a", "four");
        assert_eq!(g.members["a"].assignment["four"], vec![0, 1, 2, 3]);
        join(&mut g, "b", "four");
        assert_eq!(g.members["a"].assignment["four"], vec![0, 2]);
        assert_eq!(g.members["b"].assignment["four"], vec![1, 3]);
        // `a` learns its new assignment with a new epoch at its next heartbeat.
        let prev = g.members["a"].previous_epoch;
        let beat = g
            .heartbeat("a", prev, None, None, 1, &parts, &|| "x".into())
            .unwrap();
        assert_eq!(beat.assignment.unwrap()["four"], vec![0, 2]);
    }

    #[test]
    fn stale_epochs_and_unknown_members_are_refused_and_silent_members_expire() {
        let mut g = ShareGroup::default();
        join(&mut g, "a", "one");
        let e = g.members["a"].epoch;
        assert!(matches!(
            g.heartbeat("a", e + 5, None, None, 0, &parts, &|| "x".into()),
            Err(ShareError::FencedMemberEpoch { .. })
        ));
        assert!(matches!(
            g.heartbeat("zz", 3, None, None, 0, &parts, &|| "x".into()),
            Err(ShareError::UnknownMemberId(_))
        ));
        assert_eq!(g.expire(45_001, 45_000, &parts), vec!["a".to_string()]);
        assert!(g.members.is_empty());
        let beat = g
            .heartbeat("", 0, Some(vec!["one".into()]), None, 0, &parts, &|| {
                "gen".into()
            })
            .unwrap();
        assert_eq!(beat.member_id, "gen");
    }
}
