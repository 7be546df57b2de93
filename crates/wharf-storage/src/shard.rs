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

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use wharf_record::{set_base_offset, BatchHeader};

use crate::envelope::{self, ENVELOPE_LEN};
use crate::log::{write_lock, AppendInfo, Durability, IndexEntry, LogShared};
use crate::segment::{self, Segment, SegmentEntry};
use crate::StorageError;

pub(crate) struct AppendRequest {
    pub log: Arc<LogShared>,
    pub batches: Bytes,
    pub durability: Durability,
    pub reply: oneshot::Sender<Result<AppendInfo, StorageError>>,
}

pub(crate) enum Command {
    Append(AppendRequest),
    /// fdatasync now, then reply.
    Flush(oneshot::Sender<Result<(), StorageError>>),
    Stop,
}

/// State of a shard shared with readers and housekeeping.
pub(crate) struct ShardState {
    pub id: usize,
    pub dir: PathBuf,
    /// All segments by id; the last one is the active one.
    pub segments: RwLock<std::collections::BTreeMap<u64, Arc<Segment>>>,
    pub poisoned: AtomicBool,
    pub group_commits: AtomicU64,
    pub fsyncs: AtomicU64,
}

impl ShardState {
    pub fn active_id(&self) -> Option<u64> {
        self.segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .next_back()
            .copied()
    }
}

#[derive(Clone)]
pub(crate) struct ShardHandle {
    pub state: Arc<ShardState>,
    /// Unbounded: appends are submitted from async workers, which must never block on a full
    /// queue. Memory is bounded upstream (per-connection in-flight requests and bytes).
    tx: Sender<Command>,
}

impl ShardHandle {
    pub fn send(&self, request: AppendRequest) -> Result<(), StorageError> {
        if self.state.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned {
                shard_id: self.state.id,
            });
        }
        self.tx
            .send(Command::Append(request))
            .map_err(|_| StorageError::ShutDown)
    }

    pub async fn flush(&self) -> Result<(), StorageError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(reply))
            .map_err(|_| StorageError::ShutDown)?;
        rx.await.map_err(|_| StorageError::ShutDown)?
    }

    pub fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
    }
}

pub(crate) struct Limits {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub flush_interval: Duration,
    pub max_group_bytes: usize,
}

struct Staged {
    request: AppendRequest,
    entries: Vec<SegmentEntry>,
}

/// Histograms of one shard's writer, registered once (the `shard` label is fixed).
struct WriterMetrics {
    /// Appends (produce requests' partitions) covered by one group commit.
    group_commit_appends: metrics::Histogram,
    group_commit_bytes: metrics::Histogram,
    fdatasync_seconds: metrics::Histogram,
}

impl WriterMetrics {
    fn new(shard: usize) -> Self {
        let label = shard.to_string();
        Self {
            group_commit_appends: metrics::histogram!("wharf_storage_group_commit_appends", "shard" => label.clone()),
            group_commit_bytes: metrics::histogram!("wharf_storage_group_commit_bytes", "shard" => label.clone()),
            fdatasync_seconds: metrics::histogram!("wharf_storage_fdatasync_duration_seconds", "shard" => label),
        }
    }
}

/// A count as a histogram sample (exact below 2^32; saturating above).
fn metric_value(n: usize) -> f64 {
    u32::try_from(n).map_or(f64::from(u32::MAX), f64::from)
}

struct Writer {
    state: Arc<ShardState>,
    metrics: WriterMetrics,
    active: Arc<Segment>,
    /// Entries of the active segment, written to its index file when it is sealed.
    active_entries: Vec<SegmentEntry>,
    limits: Limits,
    buf: Vec<u8>,
    dirty_since: Option<Instant>,
    roll_bytes: u64,
    roll_ms: i64,
    roll_failed_at: Option<Instant>,
}

/// Starts the writer thread of a shard whose segments were recovered into `state`.
pub(crate) fn spawn(
    state: Arc<ShardState>,
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
    let (tx, rx) = mpsc::channel();
    let mut writer = Writer {
        metrics: WriterMetrics::new(state.id),
        state: state.clone(),
        active,
        active_entries,
        roll_bytes: limits.segment_bytes,
        roll_ms: limits.segment_ms,
        limits,
        buf: Vec::new(),
        dirty_since: None,
        roll_failed_at: None,
    };
    let thread = std::thread::Builder::new()
        .name(format!("wharf-shard-{}", state.id))
        .spawn(move || writer.run(&rx))
        .map_err(|e| StorageError::io(&state.dir, e))?;
    Ok((ShardHandle { state, tx }, thread))
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Command>) {
        let tick = Duration::from_millis(50);
        let mut group: Vec<AppendRequest> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<Result<(), StorageError>>> = Vec::new();
        loop {
            let mut stop = false;
            match rx.recv_timeout(tick) {
                Ok(cmd) => stop |= Self::take(cmd, &mut group, &mut flushes),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            let mut bytes: usize = group.iter().map(|r| r.batches.len()).sum();
            while !stop && bytes < self.limits.max_group_bytes {
                match rx.try_recv() {
                    Ok(cmd) => {
                        stop |= Self::take(cmd, &mut group, &mut flushes);
                        bytes = group.iter().map(|r| r.batches.len()).sum();
                    }
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit_group(std::mem::take(&mut group));
            }
            let flush_due = self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= self.limits.flush_interval);
            if !flushes.is_empty() || flush_due || (stop && self.dirty_since.is_some()) {
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

    fn take(
        cmd: Command,
        group: &mut Vec<AppendRequest>,
        flushes: &mut Vec<oneshot::Sender<Result<(), StorageError>>>,
    ) -> bool {
        match cmd {
            Command::Append(r) => group.push(r),
            Command::Flush(reply) => flushes.push(reply),
            Command::Stop => return true,
        }
        false
    }

    fn poisoned(&self) -> Option<StorageError> {
        self.state
            .poisoned
            .load(Ordering::Acquire)
            .then_some(StorageError::Poisoned {
                shard_id: self.state.id,
            })
    }

    /// One group commit: offsets, one write, at most one fdatasync, then acks.
    fn commit_group(&mut self, group: Vec<AppendRequest>) {
        if let Some(e) = self.poisoned() {
            let message = e.to_string();
            for r in group {
                let _ = r.reply.send(Err(StorageError::WriteFailed {
                    shard_id: self.state.id,
                    message: message.clone(),
                }));
            }
            return;
        }
        let start = self.active.size();
        self.buf.clear();
        let mut staged: Vec<Staged> = Vec::with_capacity(group.len());
        // Offsets handed out in this group but not yet published.
        let mut next: HashMap<u64, i64> = HashMap::new();
        let mut sync = false;
        for request in group {
            if request.log.deleted.load(Ordering::Acquire) {
                let _ = request.reply.send(Err(StorageError::UnknownLog {
                    log_id: request.log.id,
                }));
                continue;
            }
            let log_id = request.log.id;
            let mut offset = *next
                .entry(log_id)
                .or_insert_with(|| request.log.next_offset.load(Ordering::Acquire));
            // The batches are copied once, into the group's write buffer; the broker-owned
            // base offsets are written there, after the envelope header's place.
            let header_at = self.buf.len();
            let envelope_at = start + header_at as u64;
            self.buf.extend_from_slice(&[0u8; ENVELOPE_LEN]);
            let body_at = self.buf.len();
            self.buf.extend_from_slice(&request.batches);
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
                set_base_offset(&mut self.buf[body_at + at..], offset);
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
                self.buf.truncate(header_at);
                let source = wharf_record::RecordError::InvalidLength {
                    length: request.batches.len() as i32,
                };
                let _ = request
                    .reply
                    .send(Err(StorageError::InvalidBatch { log_id, source }));
                continue;
            }
            next.insert(log_id, offset);
            let (header, body) = self.buf[header_at..].split_at_mut(ENVELOPE_LEN);
            envelope::write_header(header, log_id, body);
            sync |= request.durability == Durability::Synced;
            let cfg = request.log.config();
            self.roll_bytes = self.roll_bytes.min(cfg.segment_bytes.max(1));
            self.roll_ms = self.roll_ms.min(cfg.segment_ms.max(1));
            staged.push(Staged { request, entries });
        }
        if staged.is_empty() {
            return;
        }
        self.state.group_commits.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .group_commit_appends
            .record(metric_value(staged.len()));
        self.metrics
            .group_commit_bytes
            .record(metric_value(self.buf.len()));
        if let Err(error) = self.active.file.write_all_at(&self.buf, start) {
            tracing::error!(shard = self.state.id, segment = %self.active.path.display(), %error, "write failed");
            // Undo a partial write so the segment holds whole entries only.
            if let Err(e) = self.active.file.set_len(start) {
                tracing::error!(shard = self.state.id, %e, "cannot truncate after failed write; shard poisoned");
                self.state.poisoned.store(true, Ordering::Release);
            }
            let message = error.to_string();
            for s in staged {
                let _ = s.request.reply.send(Err(StorageError::WriteFailed {
                    shard_id: self.state.id,
                    message: message.clone(),
                }));
            }
            return;
        }
        self.active
            .size
            .store(start + self.buf.len() as u64, Ordering::Release);
        self.dirty_since.get_or_insert_with(Instant::now);
        if sync {
            if let Err(error) = self.sync() {
                let message = error.to_string();
                for s in staged {
                    let _ = s.request.reply.send(Err(StorageError::WriteFailed {
                        shard_id: self.state.id,
                        message: message.clone(),
                    }));
                }
                return;
            }
        }
        for s in staged {
            self.publish(&s);
            let log = &s.request.log;
            let info = AppendInfo {
                base_offset: s.entries.first().map_or(0, |e| e.base_offset),
                last_offset: s.entries.last().map_or(0, |e| e.last_offset),
                log_start_offset: log.log_start.load(Ordering::Acquire),
            };
            self.active_entries.extend_from_slice(&s.entries);
            let _ = s.request.reply.send(Ok(info));
        }
    }

    /// Makes staged entries visible: index first, then the high watermark, then wake fetchers.
    fn publish(&self, staged: &Staged) {
        let log = &staged.request.log;
        let Some(last) = staged.entries.last() else {
            return;
        };
        {
            let mut index = write_lock(&log.index);
            for e in &staged.entries {
                index.push_back(IndexEntry {
                    base_offset: e.base_offset,
                    last_offset: e.last_offset,
                    max_timestamp: e.max_timestamp,
                    segment: self.active.clone(),
                    position: e.position,
                    len: e.len,
                });
                log.bytes.fetch_add(u64::from(e.len), Ordering::AcqRel);
            }
        }
        self.active.note_offset(log.id, last.last_offset);
        log.next_offset
            .store(last.last_offset + 1, Ordering::Release);
        log.wake();
    }

    /// fdatasync of the active segment; a failure poisons the shard.
    fn sync(&mut self) -> Result<(), StorageError> {
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        self.state.fsyncs.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let synced = self.active.file.sync_data();
        self.metrics
            .fdatasync_seconds
            .record(started.elapsed().as_secs_f64());
        match synced {
            Ok(()) => {
                self.dirty_since = None;
                Ok(())
            }
            Err(error) => {
                tracing::error!(shard = self.state.id, segment = %self.active.path.display(), %error, "fdatasync failed; shard poisoned");
                self.state.poisoned.store(true, Ordering::Release);
                Err(StorageError::io(&self.active.path, error))
            }
        }
    }

    /// Seals the active segment and opens a new one when it is large or old enough.
    fn maybe_roll(&mut self) -> Result<(), StorageError> {
        let size = self.active.size();
        if size == 0 || self.poisoned().is_some() {
            return Ok(());
        }
        let age_ms = self.active.created.elapsed().as_millis() as i64;
        if size < self.roll_bytes && age_ms < self.roll_ms {
            return Ok(());
        }
        if self.dirty_since.is_some() {
            self.sync()?;
        }
        segment::write_index(&self.state.dir, self.active.id, &self.active_entries)?;
        let next = Arc::new(Segment::create(&self.state.dir, self.active.id + 1)?);
        sync_dir(&self.state.dir)?;
        self.active.sealed.store(true, Ordering::Release);
        write_lock(&self.state.segments).insert(next.id, next.clone());
        tracing::debug!(
            shard = self.state.id,
            sealed = self.active.id,
            bytes = size,
            "segment rolled"
        );
        self.active = next;
        self.active_entries.clear();
        self.roll_bytes = self.limits.segment_bytes;
        self.roll_ms = self.limits.segment_ms;
        Ok(())
    }
}

pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}
