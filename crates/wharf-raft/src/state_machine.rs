//! openraft's state machine of a shard group. The shard log *is* the state: applying an entry
//! records the applied id and membership and moves the committed watch to the entry's end.
//! A snapshot is the retained shard log up to the applied entry (ADR 0012).
//!
//! Snapshot bytes: for each shard entry, `log_id` (u64 BE), `len` (u32 BE), `len` bytes of
//! stored batches, in log order.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use wharf_storage::{Durability, Position, ShardLog};

use crate::log_store::Shared;
use crate::types::{NodeId, PartInfo, Response, TypeConfig};

#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

type Slot = Arc<Mutex<Option<StoredSnapshot>>>;

fn lock_slot(slot: &Slot) -> std::sync::MutexGuard<'_, Option<StoredSnapshot>> {
    // The slot holds one whole value; a panic elsewhere cannot leave it half-written.
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sm_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

pub(crate) struct StateMachine {
    shared: Arc<Shared>,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Slot,
}

impl StateMachine {
    pub fn new(shared: Arc<Shared>) -> Self {
        let (applied, membership) = match shared.lock().state.snapshot.clone() {
            Some((last, membership)) => (Some(last), membership),
            None => (None, StoredMembership::default()),
        };
        Self {
            shared,
            applied,
            membership,
            snapshot: Arc::default(),
        }
    }

    fn advance_committed(&self, end: Position) {
        self.shared.committed.send_if_modified(|c| {
            let moved = end > *c;
            if moved {
                *c = end;
            }
            moved
        });
    }
}

/// Builds a snapshot of the shard up to a given applied entry.
pub(crate) struct SnapshotBuilder {
    shared: Arc<Shared>,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    slot: Slot,
}

fn encode_until(shared: &Shared, end: Position) -> Result<Vec<u8>, StorageError<NodeId>> {
    let mut data = Vec::new();
    let mut at = shared.shard.start();
    'read: loop {
        let read = shared.shard.read(at, 1 << 20).map_err(sm_error)?;
        let Some(last) = read.last() else { break };
        at = last.end;
        for entry in read {
            if entry.end > end {
                break 'read;
            }
            let len = u32::try_from(entry.batches.len()).map_err(sm_error)?;
            data.extend_from_slice(&entry.log_id.to_be_bytes());
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(&entry.batches);
        }
        if at >= end {
            break;
        }
    }
    Ok(data)
}

/// The entries of snapshot bytes; an error for bytes that do not parse whole.
fn decode(mut data: &[u8]) -> Result<Vec<(u64, bytes::Bytes)>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (Some(id), Some(len)) = (data.get(..8), data.get(8..12)) else {
            return Err(format!("snapshot entry header cut at {} bytes", data.len()));
        };
        let id = u64::from_be_bytes(id.try_into().map_err(|_| "id")?);
        let len = u32::from_be_bytes(len.try_into().map_err(|_| "len")?) as usize;
        let Some(batches) = data.get(12..12 + len) else {
            return Err(format!("snapshot entry of {len} bytes cut"));
        };
        out.push((id, bytes::Bytes::copy_from_slice(batches)));
        data = &data[12 + len..];
    }
    Ok(out)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let end =
            match self.applied {
                None => self.shared.shard.start(),
                Some(last) => self.shared.lock().end_of(last.index).ok_or_else(|| {
                    sm_error(format!("applied entry {} has no position", last.index))
                })?,
            };
        let shared = self.shared.clone();
        let data = tokio::task::spawn_blocking(move || encode_until(&shared, end))
            .await
            .map_err(sm_error)??;
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.applied.map_or(0, |l| l.leader_id.term),
                self.applied.map_or(0, |l| l.index)
            ),
        };
        if let Some(last) = self.applied {
            self.shared.lock().state.snapshot = Some((last, self.membership.clone()));
            self.shared.persist().await?;
        }
        *lock_slot(&self.slot) = Some(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        });
        tracing::info!(shard_id = self.shared.shard_id, snapshot_id = %meta.snapshot_id, bytes = data.len(), "raft snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut end = None;
        for entry in entries {
            let meta = self
                .shared
                .lock()
                .meta(entry.log_id.index)
                .cloned()
                .ok_or_else(|| {
                    StorageIOError::apply(
                        entry.log_id,
                        AnyError::error("entry is not in the shard log"),
                    )
                })?;
            self.applied = Some(entry.log_id);
            end = Some(meta.end);
            let mut response = Response {
                segment: meta.end.segment,
                offset: meta.end.offset,
                ..Response::default()
            };
            match entry.payload {
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                }
                EntryPayload::Blank => {}
                EntryPayload::Normal(_) => {
                    {
                        let mut index = self.shared.lock();
                        for part in &meta.parts {
                            let committed = index.committed_offsets.entry(part.log_id).or_insert(0);
                            *committed = (*committed).max(part.last_offset + 1);
                        }
                    }
                    response.parts = meta
                        .parts
                        .iter()
                        .map(|part| PartInfo {
                            base_offset: part.base_offset,
                            last_offset: part.last_offset,
                            log_start_offset: self
                                .shared
                                .storage
                                .log(part.log_id)
                                .map_or(0, |l| l.log_start_offset()),
                            segment: part.end.segment,
                            offset: part.end.offset,
                        })
                        .collect();
                }
            }
            responses.push(response);
        }
        if let Some(end) = end {
            self.advance_committed(end);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            applied: self.applied,
            membership: self.membership.clone(),
            slot: self.snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let Some(last) = meta.last_log_id else {
            return Ok(());
        };
        let data = snapshot.into_inner();
        let entries = decode(&data).map_err(sm_error)?;
        let shared = &self.shared;
        tracing::info!(shard_id = shared.shard_id, snapshot_id = %meta.snapshot_id, entries = entries.len(), "installing raft snapshot: the shard log is replaced");
        // Before the cut, so a read that meets it knows it was cut (`Shared::read_entries`).
        shared.lock().truncations += 1;
        shared
            .shard
            .truncate(shared.shard.start())
            .await
            .map_err(sm_error)?;
        let mut pending = Vec::with_capacity(entries.len());
        for (log_id, batches) in entries {
            let log = shared.log(log_id);
            pending.push(
                shared
                    .shard
                    .append(&log, batches, Durability::Synced)
                    .map_err(sm_error)?,
            );
        }
        let mut end = shared.shard.start();
        for appending in pending {
            end = appending.wait_appended().await.map_err(sm_error)?.position;
        }
        {
            let mut index = shared.lock();
            index.entries.clear();
            index.committed_offsets.clear();
            index.state.set_anchor(last.index + 1, end);
            index.state.terms.clear();
            index.state.purged = Some(last);
            index.state.snapshot = Some((last, meta.last_membership.clone()));
        }
        shared.persist().await?;
        self.applied = Some(last);
        self.membership = meta.last_membership.clone();
        self.advance_committed(end);
        *lock_slot(&self.snapshot) = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = lock_slot(&self.snapshot).clone();
        match stored {
            Some(s) => Ok(Some(Snapshot {
                meta: s.meta,
                snapshot: Box::new(Cursor::new(s.data)),
            })),
            // After a restart: rebuild from the log, up to what is applied.
            None if self.applied.is_some() => {
                let mut builder = self.get_snapshot_builder().await;
                builder.build_snapshot().await.map(Some)
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn snapshot_bytes_that_do_not_parse_whole_are_an_error() {
        let mut data = Vec::new();
        data.extend_from_slice(&7u64.to_be_bytes());
        data.extend_from_slice(&3u32.to_be_bytes());
        data.extend_from_slice(b"abc");
        assert_eq!(
            decode(&data).unwrap(),
            vec![(7, bytes::Bytes::from_static(b"abc"))]
        );
        assert!(decode(&data[..13]).is_err());
        assert!(decode(&data[..5]).is_err());
    }
}
