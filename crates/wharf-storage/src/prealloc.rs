//! Zero-filling the active segment ahead of its writer (ADR 0021). On ext4, an fdatasync
//! after writes that grow a file also commits the new size and block allocation to the
//! journal; after writes over blocks already written and synced, it flushes the data alone,
//! 1.6–3.6× faster (`bench/results/2026-11-28-fdatasync-files.md`). A filler thread per
//! shard writes zeros a window ahead of the writer's end and syncs them, so the acks=all
//! path's fdatasyncs land on blocks already there.
//!
//! ```text
//!  segment: [ entries ......... | zeros, synced ......... | (not yet) ]
//!                               ^ writer's end            ^ filled    ^ end + window
//! ```
//!
//! Invariants:
//! - Zeros never land on an entry. The filler writes only at or after the writer's end,
//!   read under the lock when it claims a piece, and the writer waits for a claimed piece its
//!   write would touch (one piece at most, and only when it has caught up with the filler).
//! - Bytes past a segment's logical end are zeros, or a torn write no ack depends on.
//!   Recovery takes an all-zero tail for the clean end and trims it; a roll trims the segment
//!   it seals before writing its index.
//! - The filler syncs through its own file handle: a writeback error is reported to every
//!   handle open at the time, so the writer's and syncer's fdatasyncs still see one the
//!   filler's call reported. A failed fdatasync of the filler poisons the shard all the same.

use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::fs::StorageFile;
use crate::segment::Segment;
use crate::shard::ShardState;

/// Bytes written per claimed piece: what the writer waits for at most.
const PIECE: u64 = 256 << 10;
/// Bytes zero-filled between the filler's fdatasyncs.
const ROUND: u64 = 1 << 20;
/// How long the filler rests after a failed write (a full disk, say).
const PAUSE: Duration = Duration::from_secs(1);

/// One shard's fill state, shared by its writer and its filler thread.
pub(crate) struct Prealloc {
    /// How far past the writer's end to fill; 0 turns filling off.
    window: u64,
    /// Test hook: a sleep between claiming a piece and writing it.
    claim_delay: Duration,
    state: Mutex<Fill>,
    changed: Condvar,
}

struct Fill {
    /// The segment being filled: the active one, or `None` while the writer seals or cuts it.
    segment: Option<Arc<Segment>>,
    /// The writer's end: nothing below it is ever zeroed.
    end: u64,
    /// Up to here the file holds entries or zeros already synced.
    filled: u64,
    /// Not filled past: the segment's roll size.
    limit: u64,
    /// The piece being written.
    busy: Option<Range<u64>>,
    /// No filling before this (after a failed write).
    paused_until: Option<Instant>,
    /// A refill is under way: it started when the zeros ahead fell below half the window and
    /// goes on to the whole window, so the filler works in a few large rounds, not after
    /// every append.
    refilling: bool,
    stop: bool,
}

impl Prealloc {
    pub(crate) fn new(window: u64, claim_delay: Duration) -> Self {
        Self {
            window,
            claim_delay,
            state: Mutex::new(Fill {
                segment: None,
                end: 0,
                filled: 0,
                limit: 0,
                busy: None,
                paused_until: None,
                refilling: false,
                stop: false,
            }),
            changed: Condvar::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.window > 0
    }

    fn lock(&self) -> MutexGuard<'_, Fill> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Fill>) -> MutexGuard<'a, Fill> {
        self.changed
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writer: it is about to write `[start, end)` of the active segment, which rolls at
    /// `limit`. Returns once no zeros can land there.
    pub(crate) fn reserve(&self, start: u64, end: u64, limit: u64) {
        if !self.enabled() {
            return;
        }
        let mut fill = self.lock();
        while fill
            .busy
            .as_ref()
            .is_some_and(|b| b.start < end && start < b.end)
        {
            fill = self.wait(fill);
        }
        fill.end = fill.end.max(end);
        fill.limit = limit;
        if !fill.refilling && self.due(&mut fill) {
            self.changed.notify_all();
        }
    }

    /// Whether the filler has work: starts a refill when the zeros ahead of the writer fall
    /// below half the window (or the rest up to the roll size is all that is left to fill),
    /// and ends it once the window is full.
    fn due(&self, fill: &mut Fill) -> bool {
        let target = (fill.end + self.window).min(fill.limit);
        let from = fill.filled.max(fill.end);
        if from >= target {
            fill.refilling = false;
        } else if from - fill.end < self.window / 2 || target == fill.limit {
            fill.refilling = true;
        }
        fill.refilling
    }

    /// The writer: stop filling `segment` (before it is sealed, trimmed or cut). Returns once
    /// no piece is being written.
    pub(crate) fn detach(&self) {
        if !self.enabled() {
            return;
        }
        let mut fill = self.lock();
        while fill.busy.is_some() {
            fill = self.wait(fill);
        }
        fill.segment = None;
    }

    /// The writer: fill `segment` (now the active one) from its end `end`.
    pub(crate) fn attach(&self, segment: Arc<Segment>, end: u64, limit: u64) {
        if !self.enabled() {
            return;
        }
        let mut fill = self.lock();
        fill.segment = Some(segment);
        fill.end = end;
        fill.filled = end;
        fill.limit = limit;
        fill.refilling = false;
        self.changed.notify_all();
    }

    /// Ends the filler thread.
    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// The first piece of a round, claimed (waits for work); `None` once stopped.
    fn claim_first(&self) -> Option<(Arc<Segment>, Range<u64>)> {
        let mut fill = self.lock();
        loop {
            if fill.stop {
                return None;
            }
            let paused = fill.paused_until.is_some_and(|t| Instant::now() < t);
            if let (Some(segment), false) = (fill.segment.clone(), paused) {
                let at = fill.filled;
                if self.due(&mut fill) {
                    if let Some(piece) = self.next_piece(&mut fill, at, u64::MAX) {
                        return Some((segment, piece));
                    }
                }
            }
            let (guard, _) = self
                .changed
                .wait_timeout(fill, PAUSE)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            fill = guard;
        }
    }

    /// The round's next piece of `segment` from `at`, claimed; `None` when the round is done,
    /// the writer overtook it, or `segment` is no longer the one filled.
    fn claim_next(&self, segment: &Arc<Segment>, at: u64, round_end: u64) -> Option<Range<u64>> {
        let mut fill = self.lock();
        if fill.stop
            || !fill
                .segment
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, segment))
        {
            return None;
        }
        self.next_piece(&mut fill, at, round_end)
    }

    /// Claims the piece from `at` (or the writer's end, if past it) up to the window, the
    /// limit, `round_end` and one `PIECE`.
    fn next_piece(&self, fill: &mut Fill, at: u64, round_end: u64) -> Option<Range<u64>> {
        let from = at.max(fill.end);
        let to = (fill.end + self.window)
            .min(fill.limit)
            .min(round_end)
            .min(from + PIECE);
        (to > from).then(|| {
            fill.busy = Some(from..to);
            from..to
        })
    }

    fn release(&self) {
        self.lock().busy = None;
        self.changed.notify_all();
    }

    fn pause(&self) {
        self.lock().paused_until = Some(Instant::now() + PAUSE);
    }

    /// Zeros up to `upto` of `segment` are synced.
    fn filled(&self, segment: &Arc<Segment>, upto: u64) {
        let mut fill = self.lock();
        if fill
            .segment
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, segment))
        {
            fill.filled = fill.filled.max(upto);
        }
    }
}

/// Releases a claimed piece however the filler thread ends, so the writer never waits for
/// a piece no thread is writing.
struct ReleaseOnExit<'a>(&'a Prealloc);

impl Drop for ReleaseOnExit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The filler thread of one shard: rounds of pieces of zeros, one fdatasync per round.
pub(crate) fn run(prealloc: &Prealloc, state: &ShardState) {
    let _release = ReleaseOnExit(prealloc);
    let zeros = vec![0u8; PIECE as usize];
    let filled_bytes = metrics::counter!("wharf_storage_preallocated_bytes_total", "shard" => state.id.to_string());
    // The filler's own handle on the segment it fills.
    let mut handle: Option<(Arc<Segment>, Arc<dyn StorageFile>)> = None;
    loop {
        let Some((segment, first)) = prealloc.claim_first() else {
            return;
        };
        let file = match &handle {
            Some((s, file)) if Arc::ptr_eq(s, &segment) => file.clone(),
            _ => match state.fs.open(&segment.path, false) {
                Ok(file) => {
                    handle = Some((segment.clone(), file.clone()));
                    file
                }
                Err(error) => {
                    prealloc.release();
                    tracing::warn!(shard = state.id, segment = %segment.path.display(), %error, "cannot open the active segment to preallocate it; retrying later");
                    prealloc.pause();
                    continue;
                }
            },
        };
        let round_end = first.start + ROUND;
        let mut piece = first;
        let mut wrote_upto = None;
        loop {
            let len = usize::try_from(piece.end - piece.start).unwrap_or(0);
            if !prealloc.claim_delay.is_zero() {
                std::thread::sleep(prealloc.claim_delay);
            }
            let wrote = file.write_all_at(&zeros[..len], piece.start);
            prealloc.release();
            if let Err(error) = wrote {
                tracing::warn!(shard = state.id, segment = %segment.path.display(), %error, "cannot preallocate the active segment; appends grow it meanwhile");
                prealloc.pause();
                break;
            }
            filled_bytes.increment(len as u64);
            wrote_upto = Some(piece.end);
            match prealloc.claim_next(&segment, piece.end, round_end) {
                Some(next) => piece = next,
                None => break,
            }
        }
        let Some(upto) = wrote_upto else { continue };
        if let Err(error) = file.sync_data() {
            tracing::error!(shard = state.id, segment = %segment.path.display(), %error, "fdatasync of preallocated bytes failed; shard poisoned");
            state.poison();
            return;
        }
        prealloc.filled(&segment, upto);
    }
}
