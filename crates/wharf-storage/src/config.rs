use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::fs::{FileSystem, RealFs};

/// [`StorageConfig::preallocate_bytes`] unless set: off. A window such as 8 MiB turns it
/// on; on this VM it showed no consistent gain (ADR 0021).
pub const DEFAULT_PREALLOCATE_BYTES: u64 = 0;

/// [`StorageConfig::sync_min_interval`] unless set: while the disk is busy, at most 500
/// rounds of fdatasyncs per second per shard (ADR 0023).
pub const DEFAULT_SYNC_MIN_INTERVAL: Duration = Duration::from_millis(2);

/// Storage-wide settings.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// Number of shard logs (each with its own writer thread and fdatasync).
    pub shards: usize,
    /// A segment rolls when it reaches this size (or a smaller per-log `segment.bytes`).
    pub segment_bytes: u64,
    /// A non-empty segment rolls after this long (or a smaller per-log `segment.ms`).
    pub segment_ms: i64,
    /// Data appended without `Durability::Synced` is handed to the shard's syncer for an
    /// fdatasync at least this often (ADR 0022).
    pub flush_interval: Duration,
    /// While the disk is busy (a group was already waiting when the last round of fdatasyncs
    /// ended), a shard's syncer starts the next round no sooner than this after the last one
    /// started: groups handed over meanwhile share it (a commit delay, like PostgreSQL's
    /// `commit_delay`). Fewer flushes per acked record keep a disk with a flush budget from
    /// stalling (ADR 0023). A round after a quiet spell starts at once. Zero: no pacing.
    pub sync_min_interval: Duration,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// Cap on bytes drained into one group commit.
    pub max_group_bytes: usize,
    /// Recovery cuts a segment at damage that is not a torn tail (valid entries follow it,
    /// or it is in a sealed segment) instead of refusing to start. Loses what follows.
    pub truncate_damaged: bool,
    /// How far ahead of its writer each shard's active segment is zero-filled and synced, so
    /// fdatasyncs of appends land on blocks already allocated (ADR 0021); 0 turns it off.
    pub preallocate_bytes: u64,
    /// Byte budget of sealed-segment indexes loaded from their index files (ADR 0018); the
    /// least recently used go first. Only the active segments' indexes are always in memory.
    pub sealed_index_cache_bytes: u64,
    /// Where files live: the operating system's, or a simulated disk in tests.
    pub fs: Arc<dyn FileSystem>,
    /// Test hook: the filler (`prealloc`) sleeps this long between claiming a piece and
    /// writing its zeros, widening the race the writer's wait closes. Zero in production.
    pub prealloc_claim_delay: Duration,
    /// Test hook: the cleaner aborts the process right after this step of a segment swap
    /// (kill -9 tests of compaction). Never set in production.
    pub cleaner_abort_at: Option<crate::SwapStep>,
}

impl StorageConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            shards: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            flush_interval: Duration::from_secs(1),
            sync_min_interval: DEFAULT_SYNC_MIN_INTERVAL,
            retention_check_interval: Duration::from_secs(30),
            max_group_bytes: 16 << 20,
            truncate_damaged: false,
            preallocate_bytes: DEFAULT_PREALLOCATE_BYTES,
            sealed_index_cache_bytes: 64 << 20,
            fs: RealFs::shared(),
            prealloc_claim_delay: Duration::ZERO,
            cleaner_abort_at: None,
        }
    }
}

/// Per-log settings (Kafka's topic configs that storage acts on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogConfig {
    /// -1: keep forever.
    pub retention_ms: i64,
    /// -1: no size limit.
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// `cleanup.policy` holds `delete`: retention by time and size applies.
    pub delete: bool,
    /// `cleanup.policy` holds `compact`: the cleaner keeps the latest record per key.
    pub compact: bool,
    /// `delete.retention.ms`: how long a tombstone (null value) is kept.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: the share of not-yet-cleaned bytes that starts a clean.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record younger than this is never compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            delete: true,
            compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}
