//! The housekeeping thread: retention by time (`retention.ms`) and size (`retention.bytes`)
//! moves each log's start offset at once; a sealed segment is deleted when every log with data
//! in it has moved past that data (or was deleted).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::log::{write_lock, LogShared};
use crate::segment;
use crate::storage::StorageInner;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The start offset retention allows for `log`, never above its high watermark.
fn retained_start(log: &LogShared, now: i64) -> i64 {
    let cfg = log.config();
    let start = log.log_start.load(Ordering::Acquire);
    let high_watermark = log.next_offset.load(Ordering::Acquire);
    let index = log
        .index
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut new_start = start;
    if cfg.retention_ms >= 0 {
        let cutoff = now - cfg.retention_ms;
        new_start = index
            .iter()
            .find(|e| e.max_timestamp >= cutoff && e.last_offset >= start)
            .map_or(high_watermark, |e| e.base_offset.max(start));
    }
    if cfg.retention_bytes >= 0 {
        let mut total = log.bytes.load(Ordering::Acquire);
        for e in &*index {
            if total <= cfg.retention_bytes as u64 {
                break;
            }
            total -= u64::from(e.len);
            new_start = new_start.max(e.last_offset + 1);
        }
    }
    new_start.min(high_watermark).max(start)
}

/// One housekeeping pass.
pub(crate) fn run_once(storage: &Arc<StorageInner>) {
    let now = now_ms();
    let logs: Vec<Arc<LogShared>> = storage.logs_snapshot();
    let mut moved = false;
    for log in &logs {
        let new_start = retained_start(log, now);
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
        if let Err(error) = storage.persist_log_starts() {
            tracing::error!(%error, "cannot persist log start offsets; segment deletion skipped");
            return;
        }
    }
    for shard in &storage.shards {
        let state = &shard.state;
        let active = state.active_id();
        let candidates: Vec<_> = state
            .segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|s| Some(s.id) != active)
            .cloned()
            .collect();
        for seg in candidates {
            let expired = seg
                .last_offsets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .all(|(log_id, last)| {
                    storage
                        .log_shared(*log_id)
                        .is_none_or(|l| l.log_start.load(Ordering::Acquire) > *last)
                });
            if !expired {
                continue;
            }
            write_lock(&state.segments).remove(&seg.id);
            let _ = std::fs::remove_file(segment::index_path(&state.dir, seg.id));
            match std::fs::remove_file(&seg.path) {
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
}
