//! Bytes of `__wharf_cursors` records: one record per change of a cursor, holding its whole
//! state (a snapshot); replay keeps the last one per key; a tombstone deletes the cursor.
//! Acquired offsets are stored as available at once: locks do not survive a restart, their
//! delivery counts do.
//!
//! Layout (big-endian; `str` is i16 length + UTF-8):
//!
//! ```text
//! key    i16 0 | owner str | topic str | partition i32
//! value  i16 0 | start i64 | next i64 | totals 8 × u64
//!        | runs i32 n × (first i64 | last i64 | state i8 | delivery_count u16 | at_ms i64)
//!        | dead i32 n × (offset i64 | delivery_count u16 | reason u8 | begun_at i64)
//! state  0 available (from at_ms) | 1 acknowledged | 2 archived | 3 gap
//! ```

use super::core::{ArchiveReason, Cursor, CursorTotals, DeadPending, Slot, SlotState};
use super::error::CursorError;
use super::CursorKey;

const VERSION: i16 = 0;

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.extend_from_slice(&i16::try_from(len).unwrap_or(i16::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes().get(..len).unwrap_or_default());
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes());
}

pub fn encode_key(key: &CursorKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.owner.len() + key.topic.len());
    out.extend_from_slice(&VERSION.to_be_bytes());
    put_str(&mut out, &key.owner);
    put_str(&mut out, &key.topic);
    out.extend_from_slice(&key.partition.to_be_bytes());
    out
}

/// The stored form of a slot: (state code, at_ms).
fn stored(state: &SlotState) -> (u8, i64) {
    match state {
        SlotState::Available { at_ms } => (0, *at_ms),
        SlotState::Acquired { .. } => (0, 0),
        SlotState::Acknowledged => (1, 0),
        SlotState::Archived => (2, 0),
        SlotState::Gap => (3, 0),
    }
}

pub fn encode_value(cursor: &Cursor) -> Vec<u8> {
    let mut runs: Vec<(i64, i64, u8, u16, i64)> = Vec::new();
    for (offset, slot) in cursor.slots() {
        let (code, at) = stored(&slot.state);
        match runs.last_mut() {
            Some(run)
                if run.1 + 1 == offset
                    && run.2 == code
                    && run.3 == slot.delivery_count
                    && run.4 == at =>
            {
                run.1 = offset;
            }
            _ => runs.push((offset, offset, code, slot.delivery_count, at)),
        }
    }
    let mut out = Vec::with_capacity(96 + runs.len() * 27);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&cursor.start.to_be_bytes());
    out.extend_from_slice(&cursor.next.to_be_bytes());
    let t = cursor.totals;
    for n in [
        t.acquired,
        t.accepted,
        t.released,
        t.rejected,
        t.lock_expiries,
        t.redelivered,
        t.archived,
        t.dead_lettered,
    ] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    put_len(&mut out, runs.len());
    for (first, last, code, count, at) in runs {
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&last.to_be_bytes());
        out.push(code);
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&at.to_be_bytes());
    }
    put_len(&mut out, cursor.dead.len());
    for (offset, d) in &cursor.dead {
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&d.delivery_count.to_be_bytes());
        out.push(d.reason.code());
        out.extend_from_slice(&d.begun_at.to_be_bytes());
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CursorError> {
        let slice = self
            .at
            .checked_add(N)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or_else(|| CursorError::State(format!("{what} cut at byte {}", self.at)))?;
        self.at += N;
        slice
            .try_into()
            .map_err(|_| CursorError::State(format!("{what} at byte {}", self.at)))
    }
    fn u8(&mut self, what: &str) -> Result<u8, CursorError> {
        Ok(u8::from_be_bytes(self.take(what)?))
    }
    fn u16(&mut self, what: &str) -> Result<u16, CursorError> {
        Ok(u16::from_be_bytes(self.take(what)?))
    }
    fn i16(&mut self, what: &str) -> Result<i16, CursorError> {
        Ok(i16::from_be_bytes(self.take(what)?))
    }
    fn i32(&mut self, what: &str) -> Result<i32, CursorError> {
        Ok(i32::from_be_bytes(self.take(what)?))
    }
    fn i64(&mut self, what: &str) -> Result<i64, CursorError> {
        Ok(i64::from_be_bytes(self.take(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, CursorError> {
        Ok(u64::from_be_bytes(self.take(what)?))
    }
    fn str(&mut self, what: &str) -> Result<String, CursorError> {
        let len = usize::try_from(self.i16(what)?)
            .map_err(|_| CursorError::State(format!("{what}: negative length")))?;
        let bytes = self
            .at
            .checked_add(len)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or_else(|| CursorError::State(format!("{what} cut at byte {}", self.at)))?;
        self.at += len;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| CursorError::State(format!("{what}: not UTF-8")))
    }
    fn version(&mut self) -> Result<(), CursorError> {
        match self.i16("version")? {
            VERSION => Ok(()),
            v => Err(CursorError::State(format!("unknown version {v}"))),
        }
    }
}

pub fn decode_key(bytes: &[u8]) -> Result<CursorKey, CursorError> {
    let mut r = Reader { bytes, at: 0 };
    r.version()?;
    Ok(CursorKey {
        owner: r.str("owner")?,
        topic: r.str("topic")?,
        partition: r.i32("partition")?,
    })
}

/// At most this many offsets in one stored cursor (a malformed run cannot allocate more).
const MAX_SLOTS: i64 = 1 << 22;

pub fn decode_value(bytes: &[u8]) -> Result<Cursor, CursorError> {
    let mut r = Reader { bytes, at: 0 };
    r.version()?;
    let mut cursor = Cursor::new(r.i64("start")?);
    cursor.next = r.i64("next")?;
    let mut n = [0u64; 8];
    for v in &mut n {
        *v = r.u64("totals")?;
    }
    cursor.totals = CursorTotals {
        acquired: n[0],
        accepted: n[1],
        released: n[2],
        rejected: n[3],
        lock_expiries: n[4],
        redelivered: n[5],
        archived: n[6],
        dead_lettered: n[7],
    };
    let mut slots = 0i64;
    for _ in 0..r.i32("runs")?.max(0) {
        let first = r.i64("run first")?;
        let last = r.i64("run last")?;
        let code = r.u8("run state")?;
        let delivery_count = r.u16("run delivery count")?;
        let at_ms = r.i64("run at_ms")?;
        slots = slots.saturating_add(last.saturating_sub(first).saturating_add(1));
        if last < first || first < cursor.start || last >= cursor.next || slots > MAX_SLOTS {
            return Err(CursorError::State(format!("bad run {first}..={last}")));
        }
        let state = match code {
            0 => SlotState::Available { at_ms },
            1 => SlotState::Acknowledged,
            2 => SlotState::Archived,
            3 => SlotState::Gap,
            c => return Err(CursorError::State(format!("unknown slot state {c}"))),
        };
        for offset in first..=last {
            cursor.slots.insert(
                offset,
                Slot {
                    state: state.clone(),
                    delivery_count,
                },
            );
        }
    }
    for _ in 0..r.i32("dead")?.max(0) {
        let offset = r.i64("dead offset")?;
        let delivery_count = r.u16("dead delivery count")?;
        let reason = ArchiveReason::from_code(r.u8("dead reason")?)
            .ok_or_else(|| CursorError::State("unknown archive reason".into()))?;
        let begun_at = r.i64("dead begun_at")?;
        cursor.dead.insert(
            offset,
            DeadPending {
                delivery_count,
                reason,
                begun_at,
            },
        );
    }
    Ok(cursor)
}
