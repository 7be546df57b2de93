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
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::segment::{self, Segment, SegmentEntry};
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

/// A rolled segment to seal: synced through its end, then its index file written, then
/// marked sealed. The writer hands it over at the roll and writes the next segment meanwhile.
pub(crate) struct SealJob {
    pub segment: Arc<Segment>,
    /// Its logical end (`Segment::size` at the roll).
    pub size: u64,
    /// Its entries, for the index file.
    pub entries: Vec<SegmentEntry>,
}

pub(crate) enum SyncCommand {
    Sync(SyncJob),
    /// Commands are taken in order: a seal completes before any later job's fdatasync, so
    /// no ack for the next segment goes out before the sealed one's bytes are durable.
    Seal(SealJob),
    /// Replies once every job sent before it is done (truncation, stop).
    Barrier(Sender<()>),
}

/// Histograms the syncer records into, registered by the shard writer.
pub(crate) struct SyncMetrics {
    pub fdatasync_seconds: metrics::Histogram,
    /// `stage` "fdatasync": from a group's hand-over to its fdatasync's end, per append.
    pub stage_seconds: metrics::Histogram,
    /// How long sealing a rolled segment took (its fdatasync and its index file).
    pub seal: metrics::Histogram,
}

impl SyncMetrics {
    pub(crate) fn new(shard: usize) -> Self {
        let label = shard.to_string();
        Self {
            fdatasync_seconds: metrics::histogram!("wharf_storage_fdatasync_duration_seconds", "shard" => label.clone()),
            stage_seconds: stage::produce_histogram("fdatasync"),
            seal: metrics::histogram!("wharf_storage_segment_seal_seconds", "shard" => label),
        }
    }
}

/// Takes commands until the writer hangs up. Pacing (ADR 0023): when a group was already
/// waiting as the last round of fdatasyncs ended (the disk is busy), the next round starts no
/// sooner than `min_interval` after the last one started, and the groups handed over meanwhile
/// share it. A round after a quiet spell starts at once, and seals and barriers never wait.
pub(crate) fn run(
    state: &ShardState,
    rx: &Receiver<SyncCommand>,
    metrics: &SyncMetrics,
    min_interval: Duration,
) {
    let mut last_round: Option<Instant> = None;
    // A command already waiting when the last round ended: the disk is busy.
    let mut waiting: Option<SyncCommand> = None;
    loop {
        let busy = waiting.is_some();
        let Some(first) = waiting.take().or_else(|| rx.recv().ok()) else {
            break;
        };
        if let (true, SyncCommand::Sync(_), Some(last)) = (busy, &first, last_round) {
            let due = last + min_interval;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let mut jobs = Vec::new();
        let mut barriers = Vec::new();
        let mut take = |cmd| match cmd {
            SyncCommand::Sync(job) => jobs.push(job),
            SyncCommand::Seal(job) => {
                // The groups handed before the roll first, then the seal, in order.
                if !jobs.is_empty() {
                    sync_jobs(state, std::mem::take(&mut jobs), metrics);
                }
                seal(state, job, metrics);
            }
            SyncCommand::Barrier(done) => barriers.push(done),
        };
        take(first);
        while let Ok(cmd) = rx.try_recv() {
            take(cmd);
        }
        if !jobs.is_empty() {
            last_round = Some(Instant::now());
            sync_jobs(state, jobs, metrics);
        }
        for done in barriers {
            let _ = done.send(());
        }
        waiting = rx.try_recv().ok();
    }
}

/// Seals a rolled segment: its bytes are durable before its index file is written, and the
/// index file is written before the segment is marked sealed (paging then reads it; ADR
/// 0018). A failed fdatasync poisons the shard, as any other. A failed index write (a full
/// disk) is logged and the segment is sealed all the same: a sealed segment without an index
/// file is scanned when its index is loaded, and it must be sealed for retention to free it.
pub(crate) fn seal(state: &ShardState, job: SealJob, metrics: &SyncMetrics) {
    let started = Instant::now();
    let SealJob {
        segment,
        size,
        entries,
    } = job;
    if !state.is_poisoned() && fdatasync(state, &segment, &metrics.fdatasync_seconds).is_ok() {
        state.advance_durable(Position {
            segment: segment.id,
            offset: size,
        });
        if let Err(error) = segment::write_index(&*state.fs, &state.dir, segment.id, &entries) {
            tracing::warn!(shard = state.id, segment = %segment.path.display(), %error, "cannot write a sealed segment's index file; the segment is scanned when its index is loaded");
        }
    }
    segment
        .sealed
        .store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(
        shard = state.id,
        segment = segment.id,
        bytes = size,
        batches = entries.len(),
        seal_ms = started.elapsed().as_millis() as u64,
        "segment sealed"
    );
    metrics.seal.record(started.elapsed().as_secs_f64());
}

/// One fdatasync of `segment`, counted and timed into `histogram`. A failure poisons the
/// shard: the failed writeback may have dropped pages that no later fdatasync would write.
pub(crate) fn fdatasync(
    state: &ShardState,
    segment: &Segment,
    histogram: &metrics::Histogram,
) -> Result<(), StorageError> {
    state
        .fsyncs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let outcome = segment.file.sync_data();
    histogram.record(started.elapsed().as_secs_f64());
    outcome.map_err(|error| {
        tracing::error!(shard = state.id, segment = %segment.path.display(), %error, "fdatasync failed; shard poisoned");
        state.poison();
        StorageError::WriteFailed {
            shard_id: state.id,
            source: Arc::new(error),
        }
    })
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
        result = fdatasync(state, &job.segment, &metrics.fdatasync_seconds);
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
