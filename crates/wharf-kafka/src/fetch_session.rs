//! Fetch sessions (KIP-227): the broker remembers a consumer's partitions and fetch offsets,
//! so an incremental fetch lists only partitions that changed and its answer only partitions
//! with something new. The cache is bounded; the least recently used session goes first.
//!
//! ```text
//!  (id 0,  epoch -1)  no session: a full fetch, answered with session id 0
//!  (any,   epoch 0)   full fetch that opens a session (closing `id` if given): answer has its id
//!  (id,    epoch n>0) incremental: adds/updates the listed partitions, drops the forgotten,
//!                     fetches them all, answers those with records, errors or new offsets
//!  (id,    epoch -1)  closes `id`; a full fetch without a session
//! ```
//!
//! Invariant: a session's `epoch` is the one its next incremental fetch must carry; it moves
//! on only when a fetch is accepted, so a replayed or concurrent request gets
//! INVALID_FETCH_SESSION_EPOCH.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use kafka_protocol::messages::TopicName;
use kafka_protocol::ResponseError;

/// Default bound on open sessions (Kafka's `max.incremental.fetch.session.cache.slots`).
pub const DEFAULT_CAPACITY: usize = 1000;

/// What a response last told the client about a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub high_watermark: i64,
    pub last_stable: i64,
    pub log_start: i64,
}

/// A partition as a fetch names it: by topic name (v12 and older) or topic id (v13+).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: TopicName,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
}

#[derive(Debug, Clone)]
pub struct SessionPartition {
    pub key: PartitionKey,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// `None` until a response carried the partition.
    pub sent: Option<Sent>,
}

struct Session {
    epoch: i32,
    partitions: Vec<SessionPartition>,
    last_used: Instant,
}

/// How to serve one Fetch request.
#[derive(Debug)]
pub enum Plan {
    /// Fetch the request's partitions, answer all of them; `session_id` is 0 (no session) or
    /// the new session's id.
    Full { session_id: i32 },
    /// Fetch these partitions of session `session_id`; answer only those with news.
    Incremental {
        session_id: i32,
        partitions: Vec<SessionPartition>,
    },
    /// A session error for the whole request.
    Refused(ResponseError),
}

pub struct FetchSessions {
    capacity: usize,
    inner: Mutex<Cache>,
}

struct Cache {
    sessions: HashMap<i32, Session>,
    next_id: i32,
}

/// The epoch after `epoch` (1 follows `i32::MAX`, as in Kafka).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

impl FetchSessions {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Cache {
                sessions: HashMap::new(),
                next_id: 1,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Open sessions.
    pub fn open_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Decides how to serve a request with `session_id` and `epoch`; `listed` are the
    /// partitions the request names (with their offsets), `forgotten` those it drops.
    pub fn begin(
        &self,
        session_id: i32,
        epoch: i32,
        listed: &[SessionPartition],
        forgotten: &[PartitionKey],
        now: Instant,
    ) -> Plan {
        let mut cache = self.lock();
        if epoch <= 0 && session_id != 0 {
            cache.sessions.remove(&session_id);
        }
        if epoch == -1 {
            return Plan::Full { session_id: 0 };
        }
        if epoch == 0 {
            if self.capacity == 0 {
                return Plan::Full { session_id: 0 };
            }
            if cache.sessions.len() >= self.capacity {
                if let Some(oldest) = cache
                    .sessions
                    .iter()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(id, _)| *id)
                {
                    cache.sessions.remove(&oldest);
                }
            }
            let mut id = cache.next_id;
            while id == 0 || cache.sessions.contains_key(&id) {
                id = id.checked_add(1).unwrap_or(1);
            }
            cache.next_id = id.checked_add(1).unwrap_or(1);
            cache.sessions.insert(
                id,
                Session {
                    epoch: 1,
                    partitions: listed.to_vec(),
                    last_used: now,
                },
            );
            return Plan::Full { session_id: id };
        }
        let Some(session) = cache.sessions.get_mut(&session_id) else {
            return Plan::Refused(ResponseError::FetchSessionIdNotFound);
        };
        if session.epoch != epoch {
            return Plan::Refused(ResponseError::InvalidFetchSessionEpoch);
        }
        session.epoch = next_epoch(epoch);
        session.last_used = now;
        session.partitions.retain(|p| !forgotten.contains(&p.key));
        for update in listed {
            match session.partitions.iter_mut().find(|p| p.key == update.key) {
                Some(p) => {
                    p.fetch_offset = update.fetch_offset;
                    p.max_bytes = update.max_bytes;
                }
                None => session.partitions.push(update.clone()),
            }
        }
        Plan::Incremental {
            session_id,
            partitions: session.partitions.clone(),
        }
    }

    /// Records what a response told the client about partitions of `session_id`.
    pub fn record_sent(&self, session_id: i32, sent: &[(PartitionKey, Sent)]) {
        let mut cache = self.lock();
        let Some(session) = cache.sessions.get_mut(&session_id) else {
            return;
        };
        for (key, s) in sent {
            if let Some(p) = session.partitions.iter_mut().find(|p| &p.key == key) {
                p.sent = Some(*s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: i32, fetch_offset: i64) -> SessionPartition {
        SessionPartition {
            key: PartitionKey {
                topic: TopicName(kafka_protocol::protocol::StrBytes::from_static_str("t")),
                topic_id: uuid::Uuid::nil(),
                partition,
            },
            fetch_offset,
            max_bytes: 1 << 20,
            sent: None,
        }
    }

    #[test]
    fn a_session_lives_from_epoch_0_through_incremental_epochs_to_its_close() {
        let sessions = FetchSessions::new(10);
        let now = Instant::now();
        let Plan::Full { session_id } = sessions.begin(0, 0, &[part(0, 0), part(1, 0)], &[], now)
        else {
            panic!("epoch 0 opens a session")
        };
        assert_ne!(session_id, 0);
        // Epoch 1: only partition 1 moved on; partition 0 keeps its offset.
        let Plan::Incremental { partitions, .. } =
            sessions.begin(session_id, 1, &[part(1, 7)], &[], now)
        else {
            panic!("incremental")
        };
        let offsets: Vec<_> = partitions
            .iter()
            .map(|p| (p.key.partition, p.fetch_offset))
            .collect();
        assert_eq!(offsets, vec![(0, 0), (1, 7)]);
        // A replayed epoch is refused; the next one is accepted; forgotten partitions go.
        assert!(matches!(
            sessions.begin(session_id, 1, &[], &[], now),
            Plan::Refused(ResponseError::InvalidFetchSessionEpoch)
        ));
        let Plan::Incremental { partitions, .. } =
            sessions.begin(session_id, 2, &[], &[part(0, 0).key], now)
        else {
            panic!("incremental")
        };
        assert_eq!(partitions.len(), 1);
        // Epoch -1 closes it.
        assert!(matches!(
            sessions.begin(session_id, -1, &[], &[], now),
            Plan::Full { session_id: 0 }
        ));
        assert!(matches!(
            sessions.begin(session_id, 3, &[], &[], now),
            Plan::Refused(ResponseError::FetchSessionIdNotFound)
        ));
    }

    #[test]
    fn a_full_cache_evicts_the_least_recently_used_session() {
        let sessions = FetchSessions::new(2);
        let t0 = Instant::now();
        let id = |plan| match plan {
            Plan::Full { session_id } => session_id,
            other => panic!("{other:?}"),
        };
        let first = id(sessions.begin(0, 0, &[part(0, 0)], &[], t0));
        let second = id(sessions.begin(
            0,
            0,
            &[part(0, 0)],
            &[],
            t0 + std::time::Duration::from_millis(1),
        ));
        // `first` is used again, so `second` is now the oldest.
        assert!(matches!(
            sessions.begin(first, 1, &[], &[], t0 + std::time::Duration::from_millis(2)),
            Plan::Incremental { .. }
        ));
        let third = id(sessions.begin(
            0,
            0,
            &[part(0, 0)],
            &[],
            t0 + std::time::Duration::from_millis(3),
        ));
        assert_eq!(sessions.open_count(), 2);
        assert!(matches!(
            sessions.begin(second, 1, &[], &[], t0),
            Plan::Refused(ResponseError::FetchSessionIdNotFound)
        ));
        assert!(matches!(
            sessions.begin(third, 1, &[], &[], t0),
            Plan::Incremental { .. }
        ));
    }
}
