//! Idempotent producers (ADR 0007): producer id allocation and, per partition log, the
//! state that recognises a retried batch. The rules are the pure [`state`] machine; this
//! module is its driver: locking, waiting for storage, snapshots and log replay.
//!
//! # Layout
//! - `state`: [`PartitionProducers`], the pure per-partition state machine.
//! - `store`: the snapshot file `producer_state.json`.
//! - `error`: [`ProducerError`].
//!
//! ```text
//!  submit_produce ─► lock log state ─► check ─► Append: storage submit, begin(ticket) ─┐
//!                                        │                                            │
//!                                        └─► Duplicate: original offsets or its watch │
//!  spawned task: storage result ─► complete/abort ─► watch ◄──────────────────────────┘
//! ```
//!
//! A batch is checked and handed to storage under its log's lock, so the state's order per
//! producer is the log's order; the storage result is recorded by a spawned task, so it is
//! recorded even when the connection that sent the batch is gone.

mod error;
pub mod state;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use wharf_record::{BatchBuilder, BatchHeader, RecordIter};
use wharf_storage::{AppendInfo, FileSystem, Log, LogId, PendingAppend, StorageError};

pub use error::ProducerError;
pub use state::{BatchIdentity, Check, PartitionProducers, Placement};
use store::{LogSnapshot, SnapshotFile};

use crate::txn::{AbortedTxn, PartitionTxnIndex};
use crate::BrokerError;

/// How often producer state is snapshotted and idle producers expire, at the latest.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);
/// Bytes written (over every shard) after which producer state is snapshotted before
/// [`SNAPSHOT_INTERVAL`] ends. A start after a kill replays every batch written since the last
/// snapshot, so this bounds that replay: at 500 MB/s, 30 s is 15 GB. Kafka bounds it the same
/// way by snapshotting at each segment roll; this is the default segment size.
pub const SNAPSHOT_BYTES: u64 = 1 << 30;

/// When producer state is snapshotted: every `interval`, or once `bytes` were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub interval: Duration,
    pub bytes: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            interval: SNAPSHOT_INTERVAL,
            bytes: SNAPSHOT_BYTES,
        }
    }
}

/// How often the housekeeping thread looks at the bytes written.
const SNAPSHOT_POLL: Duration = Duration::from_secs(1);
/// Producer ids reserved in `meta.json` at a time.
pub(crate) const ID_BLOCK: i64 = 1_000;
/// Bytes read at a time when replaying a log.
const REPLAY_CHUNK: usize = 4 << 20;

type Outcome = Option<Result<AppendInfo, String>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Default)]
struct LogProducers {
    state: PartitionProducers,
    /// Open and aborted transactions: the last stable offset.
    txns: PartitionTxnIndex,
    /// The outcome of each pending batch, by ticket.
    waiting: HashMap<u64, watch::Receiver<Outcome>>,
    /// The last consistent snapshot (no batch pending when taken).
    snapshot: Option<LogSnapshot>,
}

/// An idempotent batch on its way: answered now (a duplicate of a written batch) or when
/// the original write completes.
pub enum Appending {
    Done(AppendInfo),
    Wait {
        outcome: watch::Receiver<Outcome>,
        producer_id: i64,
        first_seq: i32,
    },
}

impl Appending {
    pub async fn wait(self) -> Result<AppendInfo, ProducerError> {
        match self {
            Self::Done(info) => Ok(info),
            Self::Wait {
                mut outcome,
                producer_id,
                first_seq,
            } => {
                let failed = |reason: String| ProducerError::OriginalFailed {
                    producer_id,
                    first_seq,
                    reason,
                };
                let result = match outcome.wait_for(Option::is_some).await {
                    Ok(value) => value.clone(),
                    Err(_) => return Err(failed("its writer stopped".into())),
                };
                match result {
                    Some(Ok(info)) => Ok(info),
                    Some(Err(reason)) => Err(failed(reason)),
                    None => Err(failed("no outcome".into())),
                }
            }
        }
    }
}

/// Every partition's producer state and the producer id allocator.
pub struct Producers {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    expiration_ms: i64,
    logs: Mutex<HashMap<LogId, Arc<Mutex<LogProducers>>>>,
    /// `(next, limit)`: ids below `limit` are reserved in `meta.json`.
    ids: Mutex<(i64, i64)>,
    /// Serialises snapshot writes.
    writing: Mutex<()>,
}

impl Producers {
    /// Loads the snapshot in `data_dir` and replays each log's tail after it.
    pub(crate) fn load(
        fs: Arc<dyn FileSystem>,
        data_dir: &Path,
        expiration_ms: i64,
        logs: &[Log],
    ) -> Result<Self, BrokerError> {
        let path = data_dir.join(store::FILE_NAME);
        let mut file = store::read(&*fs, &path)?;
        let mut map = HashMap::with_capacity(logs.len());
        let mut replayed = 0usize;
        for log in logs {
            let high_watermark = log.high_watermark();
            let log_start = log.log_start_offset();
            let (state, txns, from) = match file.logs.remove(&log.id()) {
                Some(s) if s.offset <= high_watermark => (
                    PartitionProducers::restore(&s.producers),
                    s.transactions,
                    s.offset.max(log_start),
                ),
                Some(s) => {
                    tracing::warn!(
                        log_id = log.id(),
                        snapshot_offset = s.offset,
                        high_watermark,
                        "producer snapshot is past the log end; replaying the whole log"
                    );
                    (
                        PartitionProducers::default(),
                        PartitionTxnIndex::default(),
                        log_start,
                    )
                }
                None => (
                    PartitionProducers::default(),
                    PartitionTxnIndex::default(),
                    log_start,
                ),
            };
            let (mut state, mut txns) = (state, txns);
            replayed += replay(log, from, high_watermark, &mut state, &mut txns)?;
            txns.truncate_before(log_start);
            map.insert(
                log.id(),
                Arc::new(Mutex::new(LogProducers {
                    state,
                    txns,
                    ..LogProducers::default()
                })),
            );
        }
        tracing::info!(logs = logs.len(), replayed, "producer state loaded");
        Ok(Self {
            fs,
            path,
            expiration_ms,
            logs: Mutex::new(map),
            ids: Mutex::new((0, 0)),
            writing: Mutex::new(()),
        })
    }

    /// Rebuilds the producer state of `logs` from their whole retained logs (a node that just
    /// became their leader: the previous leader wrote batches this node's state never saw).
    /// Blocking: reads the logs. Returns how many batches were replayed.
    pub(crate) fn rebuild(&self, logs: &[Log]) -> Result<usize, BrokerError> {
        let mut replayed = 0;
        for log in logs {
            let (mut state, mut txns) =
                (PartitionProducers::default(), PartitionTxnIndex::default());
            let log_start = log.log_start_offset();
            replayed += replay(log, log_start, log.high_watermark(), &mut state, &mut txns)?;
            txns.truncate_before(log_start);
            lock(&self.logs).insert(
                log.id(),
                Arc::new(Mutex::new(LogProducers {
                    state,
                    txns,
                    ..LogProducers::default()
                })),
            );
        }
        Ok(replayed)
    }

    fn log_state(&self, id: LogId) -> Arc<Mutex<LogProducers>> {
        lock(&self.logs).entry(id).or_default().clone()
    }

    /// A new producer id, never handed out before: ids come in blocks of `ID_BLOCK` that
    /// `reserve` reserves durably before use and returns the start of (`meta.json` on a
    /// single node, the controller in a cluster: `Broker::reserve_producer_ids`).
    pub(crate) fn allocate_id(
        &self,
        reserve: impl FnOnce() -> Result<i64, BrokerError>,
    ) -> Result<i64, BrokerError> {
        let mut ids = lock(&self.ids);
        if ids.0 >= ids.1 {
            let start = reserve()?;
            *ids = (start, start + ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Checks `batch` against `log`'s producer state and, if it is new, appends it with
    /// `append` (called at most once, under the log's lock).
    pub(crate) fn submit(
        &self,
        log: &Log,
        batch: BatchIdentity,
        transactional: bool,
        append: impl FnOnce() -> Result<PendingAppend, StorageError>,
    ) -> Result<Appending, BrokerError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| BrokerError::InvalidRequest(format!("no async runtime: {e}")))?;
        let shared = self.log_state(log.id());
        let mut guard = lock(&shared);
        let check = guard.state.check(&batch).map_err(BrokerError::from)?;
        let wait = |outcome| Appending::Wait {
            outcome,
            producer_id: batch.producer_id,
            first_seq: batch.first_seq,
        };
        match check {
            Check::Duplicate(Placement::Written {
                base_offset,
                last_offset,
            }) => Ok(Appending::Done(AppendInfo {
                base_offset,
                last_offset,
                log_start_offset: log.log_start_offset(),
            })),
            Check::Duplicate(Placement::Pending(ticket)) => match guard.waiting.get(&ticket) {
                Some(outcome) => Ok(wait(outcome.clone())),
                None => Err(ProducerError::OriginalFailed {
                    producer_id: batch.producer_id,
                    first_seq: batch.first_seq,
                    reason: "its outcome is lost".into(),
                }
                .into()),
            },
            Check::Append => {
                let high_watermark = log.high_watermark();
                let pending = append()?;
                if transactional {
                    guard.txns.on_submit(batch.producer_id, high_watermark);
                }
                let ticket = guard.state.begin(&batch, now_ms());
                let (tx, rx) = watch::channel(None);
                guard.waiting.insert(ticket, rx.clone());
                drop(guard);
                runtime.spawn(async move {
                    let result = pending.wait().await;
                    {
                        let mut guard = lock(&shared);
                        match &result {
                            Ok(info) => {
                                guard.state.complete(
                                    batch.producer_id,
                                    ticket,
                                    info.base_offset,
                                    info.last_offset,
                                );
                                if transactional {
                                    guard.txns.on_written(batch.producer_id, info.base_offset);
                                }
                            }
                            Err(_) => guard.state.abort(batch.producer_id, ticket),
                        }
                        guard.waiting.remove(&ticket);
                    }
                    tx.send_replace(Some(result.map_err(|e| e.to_string())));
                });
                Ok(wait(rx))
            }
        }
    }

    /// The remembered batches of `producer_id` on `log`, oldest first.
    pub(crate) fn batches_of(&self, log: &Log, producer_id: i64) -> Vec<(i32, i32, Placement)> {
        lock(&self.log_state(log.id()))
            .state
            .batches_of(producer_id)
    }

    /// Replays a batch that was accepted for `log` but stored elsewhere (diverted into
    /// `__wharf_scheduled`), so the producer's sequence continues after it. Only a batch that
    /// would be appended now (the next in sequence, or a producer unknown here) is applied:
    /// one that the log's own batches already passed changes nothing.
    pub(crate) fn replay_diverted(&self, log: &Log, batch: &BatchIdentity, timestamp_ms: i64) {
        let shared = self.log_state(log.id());
        let mut guard = lock(&shared);
        if guard.state.check(batch) == Ok(Check::Append) {
            guard
                .state
                .replay(batch, -1, -1, timestamp_ms.min(now_ms()));
        }
    }

    /// Writes a commit or abort marker of `producer_id` to `log` and waits until it is
    /// durable. The marker's epoch fences older epochs of the producer on this partition.
    pub(crate) async fn write_marker(
        &self,
        log: &Log,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), BrokerError> {
        let now = now_ms();
        let (key, value) = crate::txn::records::encode_marker(commit, 0);
        let mut builder = BatchBuilder::new(now).control().transactional().producer(
            producer_id,
            producer_epoch,
            -1,
        );
        builder.push(Some(&key), Some(&value), &[], now);
        let bytes = bytes::Bytes::from(builder.build());
        let shared = self.log_state(log.id());
        let pending = {
            let mut guard = lock(&shared);
            guard.state.fence(producer_id, producer_epoch, now);
            log.submit(bytes, wharf_storage::Durability::Synced)?
        };
        let info = pending.wait().await?;
        lock(&shared)
            .txns
            .on_marker(producer_id, info.base_offset, commit);
        Ok(())
    }

    /// The last stable offset of `log`: read_committed readers stop here.
    pub fn last_stable_offset(&self, log: &Log) -> i64 {
        let high_watermark = log.high_watermark();
        lock(&self.log_state(log.id()))
            .txns
            .last_stable_offset(high_watermark)
    }

    /// Aborted transactions of `log` overlapping `[from, to)`.
    pub fn aborted(&self, log: &Log, from: i64, to: i64) -> Vec<AbortedTxn> {
        lock(&self.log_state(log.id())).txns.aborted_in(from, to)
    }

    /// Expires idle producers and writes the state of `logs` (every live log; others are
    /// forgotten) to the snapshot file. A log with a batch pending keeps its last snapshot.
    pub(crate) fn snapshot(&self, logs: &[Log]) -> Result<(), BrokerError> {
        let _writing = lock(&self.writing);
        let now = now_ms();
        let mut file = SnapshotFile::default();
        let mut expired = 0usize;
        for log in logs {
            let shared = self.log_state(log.id());
            let mut guard = lock(&shared);
            expired += guard.state.expire(now, self.expiration_ms);
            if !guard.state.has_pending() {
                guard.txns.truncate_before(log.log_start_offset());
                guard.snapshot = Some(LogSnapshot {
                    offset: log.high_watermark(),
                    producers: guard.state.snapshot(),
                    transactions: guard.txns.clone(),
                });
            }
            if let Some(s) = &guard.snapshot {
                file.logs.insert(log.id(), s.clone());
            }
        }
        {
            let live: std::collections::HashSet<LogId> = logs.iter().map(Log::id).collect();
            lock(&self.logs).retain(|id, _| live.contains(id));
        }
        if expired > 0 {
            tracing::info!(expired, "idle producers expired");
        }
        store::write(&*self.fs, &self.path, &file)
    }
}

/// Applies the idempotent batches of `log` in `[from, to)` to `state` and its transactions
/// and markers to `txns`; returns how many batches.
fn replay(
    log: &Log,
    from: i64,
    to: i64,
    state: &mut PartitionProducers,
    txns: &mut PartitionTxnIndex,
) -> Result<usize, BrokerError> {
    let now = now_ms();
    let mut offset = from;
    let mut count = 0;
    while offset < to {
        let read = log.read(offset, REPLAY_CHUNK)?;
        let mut at = 0usize;
        let mut progressed = false;
        while let Some(header) = read
            .records
            .get(at..)
            .and_then(|b| BatchHeader::parse(b).ok())
        {
            at += header.len().max(1);
            if header.last_offset() < offset {
                continue;
            }
            progressed = true;
            offset = header.last_offset() + 1;
            if header.is_control() && header.producer_id() >= 0 {
                let commit = RecordIter::new(&header).ok().and_then(|mut records| {
                    let record = records.next()?.ok()?;
                    crate::txn::records::decode_marker_key(record.key?).ok()
                });
                if let Some(commit) = commit {
                    state.fence(header.producer_id(), header.producer_epoch(), now);
                    txns.on_marker(header.producer_id(), header.base_offset(), commit);
                } else {
                    tracing::warn!(
                        log_id = log.id(),
                        offset = header.base_offset(),
                        "unreadable control batch skipped"
                    );
                }
                continue;
            }
            if header.is_transactional() && header.producer_id() >= 0 {
                txns.on_data(header.producer_id(), header.base_offset());
            }
            if header.producer_id() >= 0 && !header.is_control() {
                let batch = BatchIdentity::new(
                    header.producer_id(),
                    header.producer_epoch(),
                    header.base_sequence(),
                    header.last_offset_delta(),
                );
                let ts = header.max_timestamp().min(now);
                state.replay(&batch, header.base_offset(), header.last_offset(), ts);
                count += 1;
            }
        }
        if !progressed {
            break;
        }
    }
    Ok(count)
}

/// Whether producer state is due for a snapshot, `since` after the last one began, with
/// `written` bytes written meanwhile, when the last one took `took`. A snapshot that the bytes
/// call for waits ten times its predecessor's duration, so a large state (many idempotent
/// producers on many partitions) is snapshotted at most a tenth of the time.
fn snapshot_due(policy: SnapshotPolicy, since: Duration, written: u64, took: Duration) -> bool {
    since >= policy.interval || (written >= policy.bytes && since >= took * 10)
}

/// Starts the thread that snapshots producer state as `policy` says; it stops when the
/// returned sender is used or dropped, or the broker is gone.
pub(crate) fn spawn_housekeeping(
    broker: std::sync::Weak<crate::Broker>,
    policy: SnapshotPolicy,
) -> Result<std::sync::mpsc::Sender<()>, BrokerError> {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    let (stop, stopped) = channel::<()>();
    // When the last snapshot began, the bytes written then, and how long it took.
    let mut last = (
        std::time::Instant::now(),
        broker.upgrade().map_or(0, |b| b.storage().written_bytes()),
        Duration::ZERO,
    );
    std::thread::Builder::new()
        .name("wharf-producers".into())
        .spawn(move || loop {
            match stopped.recv_timeout(SNAPSHOT_POLL.min(policy.interval)) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let Some(broker) = broker.upgrade() else {
                return;
            };
            let written = broker.storage().written_bytes();
            let due = snapshot_due(
                policy,
                last.0.elapsed(),
                written.saturating_sub(last.1),
                last.2,
            );
            if !due {
                continue;
            }
            let started = std::time::Instant::now();
            let outcome = broker.snapshot_producers();
            last = (started, written, started.elapsed());
            match outcome {
                Ok(()) => {
                    tracing::debug!(millis = last.2.as_millis(), "producer state snapshotted");
                }
                Err(error) => tracing::warn!(%error, "producer snapshot failed"),
            }
        })
        .map_err(|e| ProducerError::Store {
            path: "producer housekeeping thread".into(),
            reason: e.to_string(),
        })?;
    Ok(stop)
}

#[cfg(test)]
mod tests;
