//! The raft state of one shard that the shard log does not hold: the vote, the anchor (the raft
//! index of the entry that starts at a shard position: the first entry after the last purge)
//! and the term starts (Kafka's leader-epoch checkpoint). Invariant: it is replaced durably
//! before any entry that depends on it is acknowledged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{BasicNode, CommittedLeaderId, LogId, StoredMembership, Vote};
use serde::{Deserialize, Serialize};
use wharf_storage::{durable, FileSystem, Position};

use crate::types::NodeId;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StateFile {
    pub vote: Option<Vote<NodeId>>,
    /// Raft index of the entry that starts at `anchor_segment:anchor_offset`.
    pub anchor_index: u64,
    pub anchor_segment: u64,
    pub anchor_offset: u64,
    /// The last purged (and applied) log id, if any.
    pub purged: Option<LogId<NodeId>>,
    /// `(leader, first index)` for each leader whose entries the log holds, in index order.
    pub terms: Vec<(CommittedLeaderId<NodeId>, u64)>,
    /// The last snapshot's last log id and membership: everything up to it was applied.
    pub snapshot: Option<(LogId<NodeId>, StoredMembership<NodeId, BasicNode>)>,
}

impl StateFile {
    pub fn empty() -> Self {
        Self {
            anchor_index: 0,
            ..Self::default()
        }
    }

    pub fn anchor(&self) -> Position {
        Position {
            segment: self.anchor_segment,
            offset: self.anchor_offset,
        }
    }

    pub fn set_anchor(&mut self, index: u64, at: Position) {
        self.anchor_index = index;
        self.anchor_segment = at.segment;
        self.anchor_offset = at.offset;
    }

    /// The leader that wrote entry `index`.
    pub fn leader_of(&self, index: u64) -> Option<CommittedLeaderId<NodeId>> {
        self.terms
            .iter()
            .rev()
            .find(|(_, first)| *first <= index)
            .map(|(leader, _)| *leader)
            .or_else(|| self.purged.map(|p| p.leader_id))
    }

    /// Entry `index` is written by `leader`; every term start at or after it is overwritten.
    /// Returns whether the term starts changed (so the file must be replaced).
    pub fn record_leader(&mut self, leader: CommittedLeaderId<NodeId>, index: u64) -> bool {
        let before = self.terms.len();
        self.terms.retain(|(_, first)| *first < index);
        let removed = self.terms.len() != before;
        if self.leader_of(index) == Some(leader) && !self.terms.is_empty() {
            return removed;
        }
        self.terms.push((leader, index));
        true
    }

    /// Entries at or after `index` are gone.
    pub fn truncate(&mut self, index: u64) {
        self.terms.retain(|(_, first)| *first < index);
    }

    /// Entries up to `purged` are purged: term starts wholly before it are dropped.
    pub fn purge(&mut self, purged: LogId<NodeId>) {
        self.purged = Some(purged);
        let keep_from = self
            .terms
            .iter()
            .rposition(|(_, first)| *first <= purged.index)
            .unwrap_or(0);
        self.terms.drain(..keep_from);
    }
}

/// Where a shard's state file lives, and the file seam it goes through.
pub(crate) struct StatePath {
    pub fs: Arc<dyn FileSystem>,
    pub path: PathBuf,
}

impl StatePath {
    pub fn new(fs: Arc<dyn FileSystem>, dir: &Path, shard_id: usize) -> Self {
        Self {
            fs,
            path: dir.join(format!("raft-shard-{shard_id}.json")),
        }
    }

    /// The saved state, or `None` for a shard that never ran raft.
    pub fn load(&self) -> std::io::Result<Option<StateFile>> {
        match durable::read_optional(&*self.fs, &self.path)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
        }
    }

    /// Replaces the file durably. Blocking: call from a blocking thread.
    pub fn save(&self, state: &StateFile) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        durable::replace(&*self.fs, &self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(term: u64) -> CommittedLeaderId<NodeId> {
        CommittedLeaderId::new(term, 1)
    }

    #[test]
    fn term_starts_follow_appends_truncation_and_purge() {
        let mut s = StateFile::empty();
        assert!(s.record_leader(leader(1), 1));
        assert!(!s.record_leader(leader(1), 2));
        assert!(s.record_leader(leader(2), 5));
        assert_eq!(s.leader_of(4), Some(leader(1)));
        assert_eq!(s.leader_of(9), Some(leader(2)));
        // A follower overwrites index 3 onward with a term-3 entry.
        assert!(s.record_leader(leader(3), 3));
        assert_eq!(s.terms, vec![(leader(1), 1), (leader(3), 3)]);
        s.truncate(3);
        assert_eq!(s.leader_of(7), Some(leader(1)));
        s.record_leader(leader(4), 3);
        s.purge(LogId::new(leader(4), 6));
        assert_eq!(s.terms, vec![(leader(4), 3)]);
        assert_eq!(s.leader_of(7), Some(leader(4)));
    }
}
