//! A shard's single writer thread. Group commit: it drains every pending append, assigns
//! offsets, writes them all with one positional write, issues one fdatasync if any of them
//! asked for it, then publishes index entries and completes every ack. A failed fdatasync
//! poisons the shard: no ack is ever sent for data that may not be on disk.
//!
//! ```text
//!  appends ─► channel ─► drain ─► offsets + envelopes into one buffer ─► write ─► fdatasync?
//!                                                                                  │
//!      acks ◄─ index entries, next_offset (high watermark), wake fetchers ◄────────┘
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use wharf_record::{set_base_offset, BatchHeader};

use crate::envelope::{self, ENVELOPE_LEN};
use crate::fs::FileSystem;
use crate::id_map::IdMap;
use crate::index::{read_lock, write_lock, LogShared};
use crate::prealloc::{self, Prealloc};
use crate::queue::{self, Recv};
use crate::segment::{self, Segment, SegmentEntry};
use crate::stage::{self, Publishes};
use crate::syncer::{self, DurableAck, SealJob, SyncCommand, SyncJob, SyncMetrics};
use crate::{clock, StorageError};

/// How durable an append must be before it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Complete once written to the OS (acks=0/1); flushed by the background interval.
    Written,
    /// Complete once fdatasync-ed (acks=all).
    Synced,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
}

/// An append as the shard log saw it: the offsets, and where its entry ends in the shard log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub info: AppendInfo,
    pub position: Position,
}

/// A place in a shard log: a segment and a byte offset in it. Ordered as the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

pub(crate) struct AppendRequest {
    pub log: Arc<LogShared>,
    pub batches: Bytes,
    pub durability: Durability,
    pub reply: oneshot::Sender<Result<Appended, StorageError>>,
    /// Stage stamps (`stage`): when it entered the queue; when its reply was sent.
    pub queued: Option<Instant>,
    pub replied: Option<Arc<OnceLock<Instant>>>,
    /// Written even if the log was deleted meanwhile: a replicated shard's entries are its
    /// raft log, which must hold every entry it was handed (the data stays unreachable, as a
    /// deleted log's older entries are). Otherwise the append fails with `UnknownLog`.
    pub even_if_deleted: bool,
}

pub(crate) enum Command {
    Append(AppendRequest),
    /// fdatasync now, then reply.
    Flush(oneshot::Sender<Result<(), StorageError>>),
    /// Drop every entry at or after the position (a replica's log diverged), then reply.
    Truncate(Position, oneshot::Sender<Result<(), StorageError>>),
    Stop,
}

/// State of a shard shared with readers and housekeeping.
pub(crate) struct ShardState {
    pub id: usize,
    pub dir: PathBuf,
    pub fs: Arc<dyn FileSystem>,
    /// All segments by id; the last one is the active one.
    pub segments: RwLock<std::collections::BTreeMap<u64, Arc<Segment>>>,
    pub poisoned: AtomicBool,
    pub group_commits: AtomicU64,
    pub fsyncs: AtomicU64,
    /// Bytes written by group commits (envelopes included), since the shard opened.
    pub written_bytes: AtomicU64,
    /// The end of the durable (fdatasync-ed) part of the log.
    pub durable: watch::Sender<Position>,
    /// Where `Log::submit` sends appends when the shard is replicated (set once, before the
    /// broker writes): the shard log that owns the shard's order. Unset: the writer directly.
    pub route: std::sync::OnceLock<Arc<dyn crate::ShardLog>>,
    /// The last publishes, for timing the fetches they wake (`stage`).
    pub publishes: Publishes,
    /// From the writer's reply to the produce task resuming (`stage` "ack").
    pub ack_seconds: metrics::Histogram,
}

impl ShardState {
    pub fn new(
        id: usize,
        dir: PathBuf,
        fs: Arc<dyn FileSystem>,
        segments: std::collections::BTreeMap<u64, Arc<Segment>>,
    ) -> Self {
        let end = segments
            .values()
            .next_back()
            .map_or_else(Position::default, |s| Position {
                segment: s.id,
                offset: s.size(),
            });
        metrics::gauge!("wharf_storage_shard_poisoned", "shard" => id.to_string()).set(0.0);
        Self {
            id,
            dir,
            fs,
            segments: RwLock::new(segments),
            poisoned: AtomicBool::new(false),
            group_commits: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            durable: watch::Sender::new(end),
            route: std::sync::OnceLock::new(),
            publishes: Publishes::new(),
            ack_seconds: stage::produce_histogram("ack"),
        }
    }

    /// Sealed segments, oldest first: never the active one, read under one lock.
    pub fn sealed_segments(&self) -> Vec<Arc<Segment>> {
        read_lock(&self.segments)
            .values()
            .filter(|s| s.sealed.load(Ordering::Acquire))
            .cloned()
            .collect()
    }

    /// Moves the durable position forward to `upto` (never back: the writer's own
    /// fdatasync and the syncer's may finish in either order).
    pub(crate) fn advance_durable(&self, upto: Position) {
        self.durable.send_if_modified(|durable| {
            let moved = upto > *durable;
            if moved {
                *durable = upto;
            }
            moved
        });
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
        metrics::gauge!("wharf_storage_shard_poisoned", "shard" => self.id.to_string()).set(1.0);
    }
}

#[derive(Clone)]
pub(crate) struct ShardHandle {
    pub state: Arc<ShardState>,
    /// Unbounded: appends are submitted from async workers, which must never block on a full
    /// queue. Memory is bounded upstream (per-connection in-flight requests and bytes).
    tx: queue::Sender<Command>,
}

impl ShardHandle {
    pub fn send(&self, request: AppendRequest) -> Result<(), StorageError> {
        if self.state.is_poisoned() {
            return Err(StorageError::Poisoned {
                shard_id: self.state.id,
            });
        }
        // Inside a produce request's scope (`WakeWritersLater`) a sleeping writer is woken
        // once, after the request's last partition.
        self.tx
            .send_waking_later(Command::Append(request))
            .map_err(|_| StorageError::ShutDown)
    }

    pub async fn flush(&self) -> Result<(), StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(reply))
            .map_err(|_| StorageError::ShutDown)?;
        rx.await.map_err(|_| StorageError::ShutDown)?
    }

    pub async fn truncate(&self, position: Position) -> Result<(), StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Truncate(position, reply))
            .map_err(|_| StorageError::ShutDown)?;
        rx.await.map_err(|_| StorageError::ShutDown)?
    }

    pub fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub flush_interval: Duration,
    /// The syncer's pacing (`StorageConfig::sync_min_interval`).
    pub sync_min_interval: Duration,
    pub max_group_bytes: usize,
    /// How far ahead of the writer the active segment is zero-filled (`prealloc`); 0: off.
    pub preallocate_bytes: u64,
    /// Test hook (`StorageConfig::prealloc_claim_delay`).
    pub prealloc_claim_delay: Duration,
}

struct Staged {
    request: AppendRequest,
    entries: Vec<SegmentEntry>,
    /// Where this append's entry ends in the segment (each append of a group has its own).
    end: u64,
}

/// Histograms of one shard's writer, registered once (the `shard` label is fixed).
struct WriterMetrics {
    /// Appends (produce requests' partitions) covered by one group commit.
    group_commit_appends: metrics::Histogram,
    group_commit_bytes: metrics::Histogram,
    fdatasync_seconds: metrics::Histogram,
    /// How long a segment roll held the writer (index sort and write, syncs, the new file).
    roll_seconds: metrics::Histogram,
    /// Stages of an append (`stage`), one sample per append.
    queue_seconds: metrics::Histogram,
    write_seconds: metrics::Histogram,
    publish_seconds: metrics::Histogram,
}

impl WriterMetrics {
    fn new(shard: usize) -> Self {
        let label = shard.to_string();
        Self {
            group_commit_appends: metrics::histogram!("wharf_storage_group_commit_appends", "shard" => label.clone()),
            group_commit_bytes: metrics::histogram!("wharf_storage_group_commit_bytes", "shard" => label.clone()),
            fdatasync_seconds: metrics::histogram!("wharf_storage_fdatasync_duration_seconds", "shard" => label.clone()),
            roll_seconds: metrics::histogram!("wharf_storage_segment_roll_seconds", "shard" => label),
            queue_seconds: stage::produce_histogram("queue"),
            write_seconds: stage::produce_histogram("write"),
            publish_seconds: stage::produce_histogram("publish"),
        }
    }
}

/// A count as a histogram sample (exact below 2^32; saturating above).
fn metric_value(n: usize) -> f64 {
    u32::try_from(n).map_or(f64::from(u32::MAX), f64::from)
}

/// Commands taken from the channel for one turn of the writer loop.
#[derive(Default)]
struct Drained {
    group: Vec<AppendRequest>,
    /// Batch bytes in `group` (kept as they arrive, not re-summed).
    bytes: usize,
    flushes: Vec<oneshot::Sender<Result<(), StorageError>>>,
    truncation: Option<(Position, oneshot::Sender<Result<(), StorageError>>)>,
    stop: bool,
}

impl Drained {
    fn take(&mut self, cmd: Command) {
        match cmd {
            Command::Append(r) => {
                self.bytes += r.batches.len();
                self.group.push(r);
            }
            Command::Flush(reply) => self.flushes.push(reply),
            Command::Truncate(position, reply) => self.truncation = Some((position, reply)),
            Command::Stop => self.stop = true,
        }
    }
}

/// A piece of a group's gathered write: bytes of the writer's buffer (envelope headers and
/// batch prefixes), or a range of a staged request's batches.
enum Piece {
    Own(std::ops::Range<usize>),
    Batch(usize, std::ops::Range<usize>),
}

struct Writer {
    state: Arc<ShardState>,
    /// Every log of this shard, for truncation.
    logs: Arc<crate::registry::Registry>,
    metrics: WriterMetrics,
    active: Arc<Segment>,
    /// Entries of the active segment, written to its index file when it is sealed.
    active_entries: Vec<SegmentEntry>,
    limits: Limits,
    buf: Vec<u8>,
    dirty_since: Option<Instant>,
    /// The end of the bytes written so far (durable, or handed to the syncer, once
    /// `dirty_since` is `None`).
    written: Position,
    roll_bytes: u64,
    roll_ms: i64,
    roll_failed_at: Option<Instant>,
    /// The syncer thread (`syncer`) durable groups are handed to; `None` once stopped.
    syncer: Option<(Sender<SyncCommand>, std::thread::JoinHandle<()>)>,
    /// A rolled segment was handed to the syncer to seal and may not be durable yet.
    seal_pending: bool,
    /// For a seal done here (no syncer: stopping).
    sync_metrics: SyncMetrics,
    /// The filler thread (`prealloc`) zero-filling the active segment ahead of the writes.
    prealloc: Arc<Prealloc>,
    filler: Option<std::thread::JoinHandle<()>>,
}

/// Starts the writer thread of a shard whose segments were recovered into `state`.
pub(crate) fn spawn(
    state: Arc<ShardState>,
    logs: Arc<crate::registry::Registry>,
    active_entries: Vec<SegmentEntry>,
    limits: Limits,
) -> Result<(ShardHandle, std::thread::JoinHandle<()>), StorageError> {
    let Some(active) = state
        .segments
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .next_back()
        .cloned()
    else {
        return Err(StorageError::ShutDown);
    };
    let (tx, rx) = queue::queue();
    let (sync_tx, sync_rx) = mpsc::channel();
    let sync_metrics = SyncMetrics::new(state.id);
    let sync_state = state.clone();
    let sync_min_interval = limits.sync_min_interval;
    let syncer_thread = std::thread::Builder::new()
        .name(format!("wharf-sync-{}", state.id))
        .spawn(move || syncer::run(&sync_state, &sync_rx, &sync_metrics, sync_min_interval))
        .map_err(|e| StorageError::io(&state.dir, e))?;
    let written = Position {
        segment: active.id,
        offset: active.size(),
    };
    let prealloc = Arc::new(Prealloc::new(
        limits.preallocate_bytes,
        limits.prealloc_claim_delay,
    ));
    let filler = if prealloc.enabled() {
        prealloc.attach(active.clone(), active.size(), limits.segment_bytes);
        let (fill_state, fill) = (state.clone(), prealloc.clone());
        let thread = std::thread::Builder::new()
            .name(format!("wharf-fill-{}", state.id))
            .spawn(move || prealloc::run(&fill, &fill_state))
            .map_err(|e| StorageError::io(&state.dir, e))?;
        Some(thread)
    } else {
        None
    };
    let mut writer = Writer {
        metrics: WriterMetrics::new(state.id),
        state: state.clone(),
        logs,
        written,
        active,
        active_entries,
        roll_bytes: limits.segment_bytes,
        roll_ms: limits.segment_ms,
        limits,
        buf: Vec::new(),
        dirty_since: None,
        roll_failed_at: None,
        syncer: Some((sync_tx, syncer_thread)),
        seal_pending: false,
        sync_metrics: SyncMetrics::new(state.id),
        prealloc,
        filler,
    };
    let thread = std::thread::Builder::new()
        .name(format!("wharf-shard-{}", state.id))
        .spawn(move || writer.run(&rx))
        .map_err(|e| StorageError::io(&state.dir, e))?;
    Ok((ShardHandle { state, tx }, thread))
}

impl Writer {
    fn run(&mut self, rx: &queue::Receiver<Command>) {
        let tick = Duration::from_millis(50);
        let mut drained = Drained::default();
        loop {
            match rx.recv_timeout(tick) {
                Recv::Command(cmd) => drained.take(cmd),
                Recv::Timeout => {}
                Recv::Disconnected => drained.stop = true,
            }
            // A truncation ends the group: appends after it go to the truncated log.
            while !drained.stop
                && drained.bytes < self.limits.max_group_bytes
                && drained.truncation.is_none()
            {
                match rx.try_recv() {
                    Some(cmd) => drained.take(cmd),
                    None => break,
                }
            }
            drained.bytes = 0;
            if !drained.group.is_empty() {
                self.commit_group(std::mem::take(&mut drained.group));
            }
            if let Some((position, reply)) = drained.truncation.take() {
                let _ = reply.send(self.truncate(position));
            }
            if drained.stop {
                // Every handed-over ack completes before the last fdatasync and the return.
                if let Some((tx, thread)) = self.syncer.take() {
                    drop(tx);
                    let _ = thread.join();
                }
                self.prealloc.stop();
                if let Some(thread) = self.filler.take() {
                    let _ = thread.join();
                }
            }
            let (stop, flushes) = (drained.stop, &mut drained.flushes);
            let flush_due = self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= self.limits.flush_interval);
            // A due periodic flush goes to the syncer, so the writer goes on writing while
            // the disk syncs; requested flushes and the last one at a stop are synced here.
            let handed = flush_due && flushes.is_empty() && !stop && self.hand_flush_to_syncer();
            if !handed && (!flushes.is_empty() || flush_due || (stop && self.dirty_since.is_some()))
            {
                let result = self.sync();
                for reply in flushes.drain(..) {
                    let _ =
                        reply.send(
                            result
                                .as_ref()
                                .copied()
                                .map_err(|_| StorageError::Poisoned {
                                    shard_id: self.state.id,
                                }),
                        );
                }
            }
            let roll_due = self
                .roll_failed_at
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if roll_due {
                // A failed roll (a full disk, say) leaves the active segment in use; it is
                // retried a second later. Only a failed fdatasync poisons the shard.
                self.roll_failed_at = self.maybe_roll().err().map(|error| {
                    tracing::warn!(shard = self.state.id, %error, "segment roll failed; will retry");
                    Instant::now()
                });
            }
            if stop {
                tracing::debug!(shard = self.state.id, "shard writer stopped");
                return;
            }
        }
    }

    fn poisoned(&self) -> Option<StorageError> {
        self.state.is_poisoned().then_some(StorageError::Poisoned {
            shard_id: self.state.id,
        })
    }

    /// One group commit: offsets, one write, at most one fdatasync, then acks.
    fn commit_group(&mut self, group: Vec<AppendRequest>) {
        if self.state.is_poisoned() {
            for r in group {
                let _ = r.reply.send(Err(StorageError::Poisoned {
                    shard_id: self.state.id,
                }));
            }
            return;
        }
        let taken = stage::now();
        let start = self.active.size();
        // The group is written with one gathered write: the envelope headers and the batch
        // prefixes that carry the broker-owned base offsets are built in `self.buf`; the rest
        // of each batch is written from the request's own bytes, not copied first.
        self.buf.clear();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut group_len = 0usize;
        let mut staged: Vec<Staged> = Vec::with_capacity(group.len());
        // Offsets handed out in this group but not yet published.
        let mut next: IdMap<i64> = IdMap::default();
        for request in group {
            if let (Some(queued), Some(taken)) = (request.queued, taken) {
                self.metrics
                    .queue_seconds
                    .record(taken.saturating_duration_since(queued).as_secs_f64());
            }
            if !request.even_if_deleted && request.log.deleted.load(Ordering::Acquire) {
                let _ = request.reply.send(Err(StorageError::UnknownLog {
                    log_id: request.log.id,
                }));
                continue;
            }
            let log_id = request.log.id;
            let mut offset = *next
                .entry(log_id)
                .or_insert_with(|| request.log.next_offset.load(Ordering::Acquire));
            let (buf_before, pieces_before) = (self.buf.len(), pieces.len());
            let header_at = self.buf.len();
            let envelope_at = start + group_len as u64;
            self.buf.extend_from_slice(&[0u8; ENVELOPE_LEN]);
            pieces.push(Piece::Own(header_at..header_at + ENVELOPE_LEN));
            let request_index = staged.len();
            let mut crc = envelope::checksum_start(log_id);
            let mut entries = Vec::new();
            let mut at = 0usize;
            let mut valid = true;
            while at < request.batches.len() {
                let Ok(header) = BatchHeader::parse(&request.batches[at..]) else {
                    valid = false;
                    break;
                };
                let (len, last_delta, max_timestamp) = (
                    header.len(),
                    header.last_offset_delta(),
                    header.max_timestamp(),
                );
                let prefix_len = envelope::BATCH_PREFIX.min(len);
                let prefix_at = self.buf.len();
                self.buf
                    .extend_from_slice(&request.batches[at..at + prefix_len]);
                set_base_offset(&mut self.buf[prefix_at..], offset);
                crc = envelope::checksum_batch(crc, &self.buf[prefix_at..]);
                pieces.push(Piece::Own(prefix_at..prefix_at + prefix_len));
                pieces.push(Piece::Batch(request_index, at + prefix_len..at + len));
                entries.push(SegmentEntry {
                    log_id,
                    base_offset: offset,
                    last_offset: offset + i64::from(last_delta),
                    max_timestamp,
                    position: envelope_at + (ENVELOPE_LEN + at) as u64,
                    len: len as u32,
                });
                offset += i64::from(last_delta) + 1;
                at += len;
            }
            if !valid || entries.is_empty() {
                self.buf.truncate(buf_before);
                pieces.truncate(pieces_before);
                let source = wharf_record::RecordError::InvalidLength {
                    length: request.batches.len() as i32,
                };
                let _ = request
                    .reply
                    .send(Err(StorageError::InvalidBatch { log_id, source }));
                continue;
            }
            next.insert(log_id, offset);
            envelope::write_header_parts(
                &mut self.buf[header_at..header_at + ENVELOPE_LEN],
                log_id,
                request.batches.len(),
                crc,
            );
            group_len += ENVELOPE_LEN + request.batches.len();
            let cfg = request.log.config();
            self.roll_bytes = self.roll_bytes.min(cfg.segment_bytes.max(1));
            self.roll_ms = self.roll_ms.min(cfg.segment_ms.max(1));
            let end = start + group_len as u64;
            staged.push(Staged {
                request,
                entries,
                end,
            });
        }
        if staged.is_empty() {
            return;
        }
        self.state.group_commits.fetch_add(1, Ordering::Relaxed);
        self.state
            .written_bytes
            .fetch_add(group_len as u64, Ordering::Relaxed);
        self.metrics
            .group_commit_appends
            .record(metric_value(staged.len()));
        self.metrics
            .group_commit_bytes
            .record(metric_value(group_len));
        let parts: Vec<&[u8]> = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Own(range) => &self.buf[range.clone()],
                Piece::Batch(index, range) => &staged[*index].request.batches[range.clone()],
            })
            .collect();
        let group_end = start + group_len as u64;
        self.prealloc.reserve(start, group_end, self.roll_bytes);
        let wrote = self.active.file.write_all_gathered_at(&parts, start);
        drop(parts);
        if let Err(error) = wrote {
            tracing::error!(shard = self.state.id, segment = %self.active.path.display(), %error, "write failed");
            // Undo a partial write so the segment holds whole entries only (and no zeros
            // past them: a write into filled blocks does not fail for want of space).
            let _ = self.with_filler_detached(|writer| {
                if let Err(e) = writer.active.file.set_len(start) {
                    tracing::error!(shard = writer.state.id, %e, "cannot truncate after failed write; shard poisoned");
                    writer.state.poison();
                }
                Ok(())
            });
            let source = Arc::new(error);
            for s in staged {
                let _ = s.request.reply.send(Err(StorageError::WriteFailed {
                    shard_id: self.state.id,
                    source: source.clone(),
                }));
            }
            return;
        }
        let written = stage::now();
        if let (Some(taken), Some(written)) = (taken, written) {
            self.metrics.write_seconds.record_many(
                written.saturating_duration_since(taken).as_secs_f64(),
                staged.len(),
            );
        }
        self.active.size.store(group_end, Ordering::Release);
        self.written = Position {
            segment: self.active.id,
            offset: group_end,
        };
        self.dirty_since.get_or_insert_with(Instant::now);
        // Visible at write (ADR 0003); durable appends are acked by the syncer once an
        // fdatasync covers them, so the writer goes on with the next group meanwhile.
        let mut durable_acks = Vec::new();
        for s in staged {
            self.publish(&s);
            let log = &s.request.log;
            let info = AppendInfo {
                base_offset: s.entries.first().map_or(0, |e| e.base_offset),
                last_offset: s.entries.last().map_or(0, |e| e.last_offset),
                log_start_offset: log.log_start.load(Ordering::Acquire),
            };
            self.active_entries.extend_from_slice(&s.entries);
            let appended = Appended {
                info,
                position: Position {
                    segment: self.active.id,
                    offset: s.end,
                },
            };
            let published = written.map(|written| {
                let now = Instant::now();
                self.metrics
                    .publish_seconds
                    .record(now.saturating_duration_since(written).as_secs_f64());
                now
            });
            if s.request.durability == Durability::Synced {
                durable_acks.push(DurableAck {
                    reply: s.request.reply,
                    appended,
                    replied: s.request.replied,
                });
                continue;
            }
            if let (Some(replied), Some(now)) = (&s.request.replied, published) {
                let _ = replied.set(now);
            }
            let _ = s.request.reply.send(Ok(appended));
        }
        if durable_acks.is_empty() {
            return;
        }
        let job = SyncJob {
            segment: self.active.clone(),
            upto: self.written,
            acks: durable_acks,
            handed: stage::now(),
        };
        let job = match &self.syncer {
            Some((tx, _)) => match tx.send(SyncCommand::Sync(job)) {
                Ok(()) => {
                    // Everything written is the syncer's to make durable now.
                    self.dirty_since = None;
                    return;
                }
                Err(returned) => match returned.0 {
                    SyncCommand::Sync(job) => job,
                    SyncCommand::Barrier(_) | SyncCommand::Seal(_) => return,
                },
            },
            None => job,
        };
        // No syncer (stopping): fdatasync here.
        let result = self.sync();
        for ack in job.acks {
            let _ = ack.reply.send(match &result {
                Ok(()) => Ok(ack.appended),
                Err(error) => Err(error.clone_for_waiter()),
            });
        }
    }

    /// Hands the periodic flush of what was written so far to the syncer, as a job without
    /// acks: an fdatasync of hundreds of MB (a second of acks=1 writes) then holds the
    /// syncer, not the writer. False when there is no syncer (stopping).
    fn hand_flush_to_syncer(&mut self) -> bool {
        let Some((tx, _)) = &self.syncer else {
            return false;
        };
        let job = SyncJob {
            segment: self.active.clone(),
            upto: self.written,
            acks: Vec::new(),
            handed: None,
        };
        if tx.send(SyncCommand::Sync(job)).is_err() {
            return false;
        }
        self.dirty_since = None;
        true
    }

    /// Waits until the syncer has finished every job handed to it.
    fn wait_for_syncer(&mut self) {
        self.seal_pending = false;
        if let Some((tx, _)) = &self.syncer {
            let (done, wait) = mpsc::channel();
            if tx.send(SyncCommand::Barrier(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    /// Makes staged entries visible: index first, then the high watermark, then wake fetchers.
    fn publish(&self, staged: &Staged) {
        let log = &staged.request.log;
        let Some(last) = staged.entries.last() else {
            return;
        };
        log.push(&staged.entries, &self.active);
        self.active.note_offset(log.id, last.last_offset);
        log.next_offset
            .store(last.last_offset + 1, Ordering::Release);
        if stage::enabled() {
            self.state.publishes.record(log.id, Instant::now());
        }
        log.wake();
    }

    /// fdatasync of the active segment; a failure poisons the shard.
    fn sync(&mut self) -> Result<(), StorageError> {
        if self.seal_pending {
            // The durable position moves past a rolled segment only once it is sealed.
            self.wait_for_syncer();
        }
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        syncer::fdatasync(&self.state, &self.active, &self.metrics.fdatasync_seconds)?;
        self.dirty_since = None;
        self.state.advance_durable(self.written);
        Ok(())
    }

    /// Drops every entry at or after `cut` (a replica whose log diverged from its leader's):
    /// later segments whole, the rest of `cut`'s segment, and the index entries and offsets of
    /// every log of the shard that pointed there. `cut`'s segment becomes the active one.
    fn truncate(&mut self, cut: Position) -> Result<(), StorageError> {
        self.with_filler_detached(|writer| writer.cut_to(cut))
    }

    /// Runs `step` (which may cut, trim or replace the active segment) with the filler off
    /// the active segment, then points it at the active segment's end.
    fn with_filler_detached(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.prealloc.detach();
        let result = step(self);
        self.prealloc
            .attach(self.active.clone(), self.active.size(), self.roll_bytes);
        result
    }

    fn cut_to(&mut self, cut: Position) -> Result<(), StorageError> {
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        if cut >= self.written {
            return Ok(());
        }
        // No fdatasync of the old tail may finish (and move `durable`) after the cut.
        self.wait_for_syncer();
        let (target, later): (Arc<Segment>, Vec<Arc<Segment>>) = {
            let segments = read_lock(&self.state.segments);
            let Some(target) = segments.get(&cut.segment).cloned() else {
                return Err(StorageError::PositionOutOfRange {
                    shard_id: self.state.id,
                    segment: cut.segment,
                    offset: cut.offset,
                });
            };
            let later = segments
                .range(cut.segment + 1..)
                .map(|(_, s)| s.clone())
                .collect();
            (target, later)
        };
        for log in self.logs.snapshot() {
            if log.shard == self.state.id {
                log.truncate_from(cut);
            }
        }
        let fs = &*self.state.fs;
        let mut entries = if Arc::ptr_eq(&target, &self.active) {
            std::mem::take(&mut self.active_entries)
        } else {
            segment::read_index(fs, &self.state.dir, target.id).ok_or_else(|| {
                StorageError::io(&target.path, std::io::Error::other("index missing"))
            })?
        };
        entries.retain(|e| e.position + u64::from(e.len) <= cut.offset);
        {
            let mut segments = write_lock(&self.state.segments);
            for seg in &later {
                segments.remove(&seg.id);
            }
        }
        for seg in &later {
            for path in [
                seg.path.clone(),
                segment::index_path(&self.state.dir, seg.id),
            ] {
                if let Err(error) = fs.remove_file(&path) {
                    if error.kind() != std::io::ErrorKind::NotFound {
                        return Err(StorageError::io(&path, error));
                    }
                }
            }
        }
        let index = segment::index_path(&self.state.dir, target.id);
        match fs.remove_file(&index) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(StorageError::io(&index, error));
            }
            _ => {}
        }
        let io = |e| StorageError::io(&target.path, e);
        target.file.set_len(cut.offset).map_err(io)?;
        target.file.sync_data().map_err(io)?;
        fs.sync_dir(&self.state.dir)
            .map_err(|e| StorageError::io(&self.state.dir, e))?;
        target.size.store(cut.offset, Ordering::Release);
        target.sealed.store(false, Ordering::Release);
        {
            let mut last = target
                .last_offsets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            last.clear();
            for e in &entries {
                let slot = last.entry(e.log_id).or_insert(e.last_offset);
                *slot = (*slot).max(e.last_offset);
            }
        }
        tracing::info!(
            shard = self.state.id,
            segment = cut.segment,
            offset = cut.offset,
            "shard log truncated"
        );
        self.active = target;
        self.active_entries = entries;
        self.written = cut;
        self.dirty_since = None;
        self.state.durable.send_replace(cut);
        Ok(())
    }

    /// Seals the active segment and opens a new one when it is large or old enough.
    fn maybe_roll(&mut self) -> Result<(), StorageError> {
        let size = self.active.size();
        if size == 0 || self.poisoned().is_some() {
            return Ok(());
        }
        if size < self.roll_bytes && self.active.age_ms(clock::now_ms()) < self.roll_ms {
            return Ok(());
        }
        let started = Instant::now();
        let rolled = self.with_filler_detached(|writer| writer.roll(size));
        self.metrics
            .roll_seconds
            .record(started.elapsed().as_secs_f64());
        rolled
    }

    /// Rolls the active segment, `size` bytes long: opens the next one and hands the rolled
    /// one to the syncer to seal (`syncer::seal`: its fdatasync, then its index file). The
    /// writer goes on writing the next segment meanwhile; a seal of a 1 GiB segment, whose
    /// last second of acks=1 writes is not yet synced, took the writer up to a second.
    ///
    /// No ack can depend on the next segment's bytes before the rolled one is durable: the
    /// syncer takes its commands in order, and the writer's own fdatasync waits for a pending
    /// seal first. So after a crash in between, the rolled segment (without an index file) may
    /// have a torn tail only if nothing in the segments after it was acknowledged as durable;
    /// recovery then cuts it and removes them (`recovery`).
    fn roll(&mut self, size: u64) -> Result<(), StorageError> {
        // Zeros filled past its end (`prealloc`) go before the index names its entries.
        self.trim_active(size)?;
        let fs = &*self.state.fs;
        // The new file's name is durable before any ack can depend on bytes in it.
        let next = Arc::new(Segment::create(fs, &self.state.dir, self.active.id + 1)?);
        write_lock(&self.state.segments).insert(next.id, next.clone());
        let rolled = std::mem::replace(&mut self.active, next);
        let entries = std::mem::take(&mut self.active_entries);
        tracing::debug!(
            shard = self.state.id,
            rolled = rolled.id,
            bytes = size,
            "segment rolled"
        );
        let job = SealJob {
            segment: rolled,
            size,
            entries,
        };
        match &self.syncer {
            Some((tx, _)) => match tx.send(SyncCommand::Seal(job)) {
                Ok(()) => self.seal_pending = true,
                Err(returned) => {
                    if let SyncCommand::Seal(job) = returned.0 {
                        syncer::seal(&self.state, job, &self.sync_metrics);
                    }
                }
            },
            None => syncer::seal(&self.state, job, &self.sync_metrics),
        }
        // What was written is the seal's to make durable; the next segment is empty.
        self.dirty_since = None;
        self.roll_bytes = self.limits.segment_bytes;
        self.roll_ms = self.limits.segment_ms;
        Ok(())
    }

    /// Cuts the active segment's file to `size`, its logical end, and makes that durable.
    fn trim_active(&mut self, size: u64) -> Result<(), StorageError> {
        let file = &self.active.file;
        let io = |e| StorageError::io(&self.active.path, e);
        if file.size().map_err(io)? <= size {
            return Ok(());
        }
        file.set_len(size).map_err(io)?;
        self.sync()
    }
}
