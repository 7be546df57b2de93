//! Retention by time (`retention.ms`) and size (`retention.bytes`) moves each log's start
//! offset at once; a sealed segment is deleted when every log with data in it has moved past
//! that data (or was deleted). Only sealed segments are ever candidates, chosen under the one
//! lock that a roll takes to add a segment, so the active segment is never deleted.

use std::sync::atomic::Ordering;

use crate::paging::Pager;
use crate::registry::Registry;
use crate::segment;
use crate::shard::ShardHandle;
use crate::StorageError;

/// One housekeeping pass at `now` (epoch ms). `between` runs after the log starts moved and
/// before segments are chosen: tests interleave a roll there.
pub(crate) fn run_once(
    registry: &Registry,
    shards: &[ShardHandle],
    pager: &Pager,
    now: i64,
    between: &dyn Fn(),
) -> Result<(), StorageError> {
    let mut moved = false;
    for log in registry.snapshot() {
        // Slots of segments sealed since the last pass go; their index files hold them.
        log.page_out();
        let new_start = log.retained_start(now);
        let old = log.log_start.fetch_max(new_start, Ordering::AcqRel);
        if new_start > old {
            tracing::info!(
                log_id = log.id,
                from = old,
                to = new_start,
                "retention moved log start offset"
            );
            log.prune_index();
            moved = true;
        }
    }
    if moved {
        // Segments go only after the new starts are durable: a crash in between must not
        // bring back offsets whose bytes are gone.
        registry.persist_log_starts()?;
    }
    between();
    for shard in shards {
        let state = &shard.state;
        for seg in state.sealed_segments() {
            let expired = seg
                .last_offsets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .all(|(log_id, last)| {
                    registry
                        .get(*log_id)
                        .is_none_or(|l| l.log_start.load(Ordering::Acquire) > *last)
                });
            if !expired {
                continue;
            }
            crate::index::write_lock(&state.segments).remove(&seg.id);
            pager.evict(&seg);
            let fs = &*state.fs;
            let _ = fs.remove_file(&segment::index_path(&state.dir, seg.id));
            match fs.remove_file(&seg.path) {
                Ok(()) => tracing::info!(
                    shard = state.id,
                    segment = seg.id,
                    bytes = seg.size(),
                    "deleted expired segment"
                ),
                Err(error) => {
                    tracing::warn!(shard = state.id, segment = seg.id, %error, "cannot delete expired segment");
                }
            }
        }
    }
    Ok(())
}
