//! Bytes of `__wharf_scheduled` records. The key names a waiting record by its id; the value
//! is the record and where and when it goes; a record without a value (tombstone) says the
//! waiting record was delivered or discarded. Replay applies records in log order; the last
//! one per key wins.
//!
//! Layout (big-endian; `str` is i16 length + UTF-8, `bytes` is i32 length or -1 for null):
//!
//! ```text
//! key    i16 0 | id u64
//! value  i16 0 | kind i8 (0 delay, 1 half) | due_ms i64 | topic str | partition i32
//!        | timestamp i64 | key bytes | value bytes | headers i32 n × (name bytes | value bytes)
//!        | origin producer_id i64 (-1: none) | epoch i16 | first_seq i32 | last_seq i32
//!        | half only: txn_id str | group str | checks i32
//! ```

use thiserror::Error;

use super::core::{Entry, Half};
use crate::producer::BatchIdentity;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed __wharf_scheduled record: {reason} at byte {at}")]
pub struct ScheduledRecordError {
    pub reason: &'static str,
    pub at: usize,
}

pub fn encode_key(id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.extend_from_slice(&i16::try_from(len).unwrap_or(i16::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes().get(..len).unwrap_or_default());
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.extend_from_slice(&i32::try_from(b.len()).unwrap_or(i32::MAX).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

pub fn encode_value(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entry.value.as_ref().map_or(0, Vec::len));
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.push(u8::from(entry.half.is_some()));
    out.extend_from_slice(&entry.due_ms.to_be_bytes());
    put_str(&mut out, &entry.topic);
    out.extend_from_slice(&entry.partition.to_be_bytes());
    out.extend_from_slice(&entry.timestamp.to_be_bytes());
    put_bytes(&mut out, entry.key.as_deref());
    put_bytes(&mut out, entry.value.as_deref());
    out.extend_from_slice(
        &i32::try_from(entry.headers.len())
            .unwrap_or(i32::MAX)
            .to_be_bytes(),
    );
    for (name, value) in &entry.headers {
        put_bytes(&mut out, Some(name));
        put_bytes(&mut out, value.as_deref());
    }
    let origin = entry.origin.unwrap_or(BatchIdentity {
        producer_id: -1,
        epoch: -1,
        first_seq: -1,
        last_seq: -1,
    });
    out.extend_from_slice(&origin.producer_id.to_be_bytes());
    out.extend_from_slice(&origin.epoch.to_be_bytes());
    out.extend_from_slice(&origin.first_seq.to_be_bytes());
    out.extend_from_slice(&origin.last_seq.to_be_bytes());
    if let Some(half) = &entry.half {
        put_str(&mut out, &half.txn_id);
        put_str(&mut out, &half.group);
        out.extend_from_slice(&half.checks.to_be_bytes());
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, reason: &'static str) -> Result<&'a [u8], ScheduledRecordError> {
        let err = ScheduledRecordError {
            reason,
            at: self.at,
        };
        let end = self.at.checked_add(n).ok_or(err.clone())?;
        let slice = self.bytes.get(self.at..end).ok_or(err)?;
        self.at = end;
        Ok(slice)
    }
    fn array<const N: usize>(
        &mut self,
        reason: &'static str,
    ) -> Result<[u8; N], ScheduledRecordError> {
        let at = self.at;
        self.take(N, reason)?
            .try_into()
            .map_err(|_| ScheduledRecordError { reason, at })
    }
    fn i16(&mut self, reason: &'static str) -> Result<i16, ScheduledRecordError> {
        Ok(i16::from_be_bytes(self.array(reason)?))
    }
    fn i32(&mut self, reason: &'static str) -> Result<i32, ScheduledRecordError> {
        Ok(i32::from_be_bytes(self.array(reason)?))
    }
    fn i64(&mut self, reason: &'static str) -> Result<i64, ScheduledRecordError> {
        Ok(i64::from_be_bytes(self.array(reason)?))
    }
    fn str(&mut self, reason: &'static str) -> Result<String, ScheduledRecordError> {
        let at = self.at;
        let len =
            usize::try_from(self.i16(reason)?).map_err(|_| ScheduledRecordError { reason, at })?;
        let bytes = self.take(len, reason)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ScheduledRecordError { reason, at })
    }
    fn bytes(&mut self, reason: &'static str) -> Result<Option<Vec<u8>>, ScheduledRecordError> {
        let len = self.i32(reason)?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        Ok(Some(self.take(len, reason)?.to_vec()))
    }
}

pub fn decode_key(bytes: &[u8]) -> Result<u64, ScheduledRecordError> {
    let mut r = Reader { bytes, at: 0 };
    if r.i16("key version")? != KEY_VERSION {
        return Err(ScheduledRecordError {
            reason: "unknown key version",
            at: 0,
        });
    }
    Ok(u64::from_be_bytes(r.array("id")?))
}

pub fn decode_value(id: u64, bytes: &[u8]) -> Result<Entry, ScheduledRecordError> {
    let mut r = Reader { bytes, at: 0 };
    if r.i16("value version")? != VALUE_VERSION {
        return Err(ScheduledRecordError {
            reason: "unknown value version",
            at: 0,
        });
    }
    let [kind] = r.array::<1>("kind")?;
    let due_ms = r.i64("due_ms")?;
    let topic = r.str("topic")?;
    let partition = r.i32("partition")?;
    let timestamp = r.i64("timestamp")?;
    let key = r.bytes("key")?;
    let value = r.bytes("value")?;
    let count = r.i32("headers")?;
    let mut headers = Vec::new();
    for _ in 0..count.max(0) {
        let at = r.at;
        let name = r.bytes("header name")?.ok_or(ScheduledRecordError {
            reason: "null header name",
            at,
        })?;
        headers.push((name, r.bytes("header value")?));
    }
    let producer_id = r.i64("origin producer_id")?;
    let epoch = r.i16("origin epoch")?;
    let first_seq = r.i32("origin first_seq")?;
    let last_seq = r.i32("origin last_seq")?;
    let origin = (producer_id >= 0).then_some(BatchIdentity {
        producer_id,
        epoch,
        first_seq,
        last_seq,
    });
    let half = match kind {
        0 => None,
        1 => Some(Half {
            txn_id: r.str("txn_id")?,
            group: r.str("group")?,
            checks: r.i32("checks")?,
        }),
        _ => {
            return Err(ScheduledRecordError {
                reason: "unknown kind",
                at: 2,
            })
        }
    };
    Ok(Entry {
        id,
        due_ms,
        topic,
        partition,
        timestamp,
        key,
        value,
        headers,
        origin,
        half,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(half: Option<Half>) -> Entry {
        Entry {
            id: 42,
            due_ms: 1_234,
            topic: "orders".into(),
            partition: 3,
            timestamp: 999,
            key: Some(b"k".to_vec()),
            value: None,
            headers: vec![(b"h".to_vec(), Some(b"v".to_vec())), (b"n".to_vec(), None)],
            origin: Some(BatchIdentity::new(7, 1, 10, 2)),
            half,
        }
    }

    #[test]
    fn entries_round_trip() {
        for e in [
            entry(None),
            entry(Some(Half {
                txn_id: "t".into(),
                group: "g".into(),
                checks: 2,
            })),
        ] {
            assert_eq!(decode_key(&encode_key(e.id)), Ok(42));
            assert_eq!(decode_value(42, &encode_value(&e)), Ok(e.clone()));
            let bytes = encode_value(&e);
            for cut in 0..bytes.len() {
                assert!(decode_value(42, &bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }
}
