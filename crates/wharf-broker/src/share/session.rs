//! Share sessions (KIP-932): the partitions a member fetches from, kept between ShareFetch
//! requests and checked by epoch. Epoch 0 opens (or replaces) a session, -1 closes it after
//! the request's acknowledgements, any other must be the session's next epoch.

use std::collections::{BTreeSet, HashMap};

use super::error::ShareError;

/// A partition of a session: (topic, partition).
pub type SessionPartition = (String, i32);

#[derive(Debug, Clone, Default)]
struct Session {
    /// The epoch the next request must carry.
    next_epoch: i32,
    partitions: BTreeSet<SessionPartition>,
}

/// What one request does to its session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStep {
    /// The partitions to serve.
    pub partitions: Vec<SessionPartition>,
    /// Partitions the member no longer fetches from (forgotten, or of a replaced session):
    /// its locks there are given back.
    pub released: Vec<SessionPartition>,
    /// The request closes the session (epoch -1): nothing is acquired, every lock is given
    /// back after its acknowledgements.
    pub closing: bool,
}

#[derive(Debug, Default)]
pub struct ShareSessions {
    sessions: HashMap<(String, String), Session>,
}

impl ShareSessions {
    /// Applies a ShareFetch (`fetch`) or ShareAcknowledge request's epoch and partitions.
    pub fn step(
        &mut self,
        group: &str,
        member: &str,
        epoch: i32,
        added: &[SessionPartition],
        forgotten: &[SessionPartition],
        fetch: bool,
    ) -> Result<SessionStep, ShareError> {
        let key = (group.to_string(), member.to_string());
        match epoch {
            0 if fetch => {
                let old = self.sessions.insert(
                    key,
                    Session {
                        next_epoch: 1,
                        partitions: added.iter().cloned().collect(),
                    },
                );
                Ok(SessionStep {
                    partitions: added.to_vec(),
                    released: old
                        .map(|s| s.partitions.into_iter().collect())
                        .unwrap_or_default(),
                    closing: false,
                })
            }
            0 => Err(ShareError::InvalidRequest(
                "ShareAcknowledge cannot open a session (epoch 0)".into(),
            )),
            -1 => {
                let session = self
                    .sessions
                    .remove(&key)
                    .ok_or_else(|| ShareError::SessionNotFound(member.to_string()))?;
                let partitions: Vec<SessionPartition> = session.partitions.into_iter().collect();
                Ok(SessionStep {
                    released: partitions.clone(),
                    partitions,
                    closing: true,
                })
            }
            epoch => {
                let session = self
                    .sessions
                    .get_mut(&key)
                    .ok_or_else(|| ShareError::SessionNotFound(member.to_string()))?;
                if epoch != session.next_epoch {
                    let expected = session.next_epoch;
                    self.sessions.remove(&key);
                    return Err(ShareError::InvalidSessionEpoch {
                        member_id: member.to_string(),
                        sent: epoch,
                        expected,
                    });
                }
                session.next_epoch = session.next_epoch.checked_add(1).unwrap_or(1);
                if fetch {
                    session.partitions.extend(added.iter().cloned());
                    for f in forgotten {
                        session.partitions.remove(f);
                    }
                }
                Ok(SessionStep {
                    partitions: session.partitions.iter().cloned().collect(),
                    released: if fetch {
                        forgotten.to_vec()
                    } else {
                        Vec::new()
                    },
                    closing: false,
                })
            }
        }
    }

    /// Drops every session of `member` of `group` (it left the group).
    pub fn drop_member(&mut self, group: &str, member: &str) {
        self.sessions
            .remove(&(group.to_string(), member.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> SessionPartition {
        ("t".into(), p)
    }

    #[test]
    fn epochs_open_continue_and_close() {
        let mut s = ShareSessions::default();
        assert_eq!(
            s.step("g", "m", 1, &[], &[], true),
            Err(ShareError::SessionNotFound("m".into()))
        );
        let open = s.step("g", "m", 0, &[tp(0), tp(1)], &[], true).unwrap();
        assert_eq!(open.partitions, vec![tp(0), tp(1)]);
        let next = s.step("g", "m", 1, &[], &[tp(1)], true).unwrap();
        assert_eq!((next.partitions, next.released), (vec![tp(0)], vec![tp(1)]));
        assert!(
            s.step("g", "m", 2, &[], &[], false).is_ok(),
            "an acknowledge counts"
        );
        assert!(matches!(
            s.step("g", "m", 9, &[], &[], true),
            Err(ShareError::InvalidSessionEpoch { expected: 3, .. })
        ));
        // The mismatch dropped the session: the member opens a new one.
        assert!(s.step("g", "m", 3, &[], &[], true).is_err());
        s.step("g", "m", 0, &[tp(0)], &[], true).unwrap();
        let close = s.step("g", "m", -1, &[], &[], false).unwrap();
        assert!(close.closing);
        assert_eq!(close.released, vec![tp(0)]);
    }
}
