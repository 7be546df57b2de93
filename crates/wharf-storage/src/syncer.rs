//! A shard's syncer thread: the fdatasync half of group commit (ADR 0017). The writer
//! writes a group, publishes it (ADR 0003: visible at write) and hands the group's durable
//! appends here; the syncer takes every group handed over meanwhile, issues one fdatasync per
//! segment they touch, moves the shard's durable position, then completes their acks. So the
//! writer writes the next group while the disk syncs the last one, and neither a record's
//! queue wait nor its visibility to fetchers includes an fdatasync.
//!
//! ```text
//!  writer: drain ─► write ─► publish ─► SyncJob ─► syncer: drain jobs ─► fdatasync ─► durable ─► acks
//! ```
//!
//! Invariant: an append is acknowledged only after an fdatasync that started after its
//! write; a failed fdatasync poisons the shard and fails every ack it covered.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::segment::Segment;
use crate::shard::{Appended, Position, ShardState};
use crate::stage;
use crate::StorageError;

/// One durable append waiting for its fdatasync.
pub(crate) struct DurableAck {
    pub reply: oneshot::Sender<Result<Appended, StorageError>>,
    pub appended: Appended,
    /// Stage stamp: set when the reply is sent.
    pub replied: Option<Arc<OnceLock<Instant>>>,
}

/// A written group's durable appends: `segment` must be synced through `upto`.
pub(crate) struct SyncJob {
    pub segment: Arc<Segment>,
    pub upto: Position,
    pub acks: Vec<DurableAck>,
    /// Stage stamp: when the group was published and handed over.
    pub handed: Option<Instant>,
}

pub(crate) enum SyncCommand {
    Sync(SyncJob),
    /// Replies once every job sent before it is done (truncation, stop).
    Barrier(Sender<()>),
}

/// Histograms the syncer records into, registered by the shard writer.
pub(crate) struct SyncMetrics {
    pub fdatasync_seconds: metrics::Histogram,
    /// `stage` "fdatasync": from a group's hand-over to its fdatasync's end, per append.
    pub stage_seconds: metrics::Histogram,
}

pub(crate) fn run(state: &ShardState, rx: &Receiver<SyncCommand>, metrics: &SyncMetrics) {
    while let Ok(first) = rx.recv() {
        let mut jobs = Vec::new();
        let mut barriers = Vec::new();
        let mut take = |cmd| match cmd {
            SyncCommand::Sync(job) => jobs.push(job),
            SyncCommand::Barrier(done) => barriers.push(done),
        };
        take(first);
        while let Ok(cmd) = rx.try_recv() {
            take(cmd);
        }
        if !jobs.is_empty() {
            sync_jobs(state, jobs, metrics);
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

/// One fdatasync per segment the jobs touch (in log order), then every ack.
fn sync_jobs(state: &ShardState, jobs: Vec<SyncJob>, metrics: &SyncMetrics) {
    let mut result = if state.is_poisoned() {
        Err(StorageError::Poisoned { shard_id: state.id })
    } else {
        Ok(())
    };
    let mut synced: Vec<u64> = Vec::new();
    for job in &jobs {
        if result.is_err() {
            break;
        }
        if synced.contains(&job.segment.id) {
            continue;
        }
        // Every job of this segment handed so far is covered by this one fdatasync.
        synced.push(job.segment.id);
        state
            .fsyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let outcome = job.segment.file.sync_data();
        metrics
            .fdatasync_seconds
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = outcome {
            tracing::error!(shard = state.id, segment = %job.segment.path.display(), %error, "fdatasync failed; shard poisoned");
            state.poison();
            result = Err(StorageError::WriteFailed {
                shard_id: state.id,
                source: Arc::new(error),
            });
        }
    }
    if result.is_ok() {
        if let Some(upto) = jobs.iter().map(|j| j.upto).max() {
            state.advance_durable(upto);
        }
    }
    let now = stage::now();
    for job in jobs {
        if let (Some(handed), Some(now)) = (job.handed, now) {
            metrics.stage_seconds.record_many(
                now.saturating_duration_since(handed).as_secs_f64(),
                job.acks.len(),
            );
        }
        for ack in job.acks {
            if let (Some(replied), Some(now)) = (&ack.replied, now) {
                let _ = replied.set(now);
            }
            let reply = match &result {
                Ok(()) => Ok(ack.appended),
                Err(error) => Err(error.clone_for_waiter()),
            };
            let _ = ack.reply.send(reply);
        }
    }
}
