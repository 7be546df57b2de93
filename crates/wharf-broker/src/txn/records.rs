//! Bytes of `__transaction_state` records and of commit/abort control records. A
//! transaction-state record's key is its transactional id; a record without a value is a
//! tombstone. Replay applies records in log order; the last one per key wins.
//!
//! Layout (big-endian; strings are i16 length + UTF-8):
//!
//! ```text
//! key    i16 0 | transactional_id
//! value  i16 0 | producer_id i64 | producer_epoch i16 | timeout_ms i32 | state i8
//!        | partitions i32 n × (topic | partition i32) | groups i32 n × group
//!        | start_ms i64 | update_ms i64
//!        | offsets i32 n × (group | topic | partition i32 | offset i64 | leader_epoch i32
//!                           | metadata (i16 -1: null))
//! marker key    i16 0 (version) | i16 type (0 abort, 1 commit)        (Kafka's control record)
//! marker value  i16 0 (version) | coordinator_epoch i32
//! ```

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::{TxnMetadata, TxnOffset, TxnPartition, TxnState};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;
const MARKER_VERSION: i16 = 0;
/// Kafka's control record types.
pub const MARKER_ABORT: i16 = 0;
pub const MARKER_COMMIT: i16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed transaction record: {reason} at byte {at}")]
pub struct TxnRecordError {
    pub reason: &'static str,
    pub at: usize,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.extend_from_slice(&i16::try_from(len).unwrap_or(i16::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes().get(..len).unwrap_or_default());
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
}

pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 2 + transactional_id.len());
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_str(&mut out, transactional_id);
    out
}

pub fn encode_value(meta: &TxnMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&meta.producer_id.to_be_bytes());
    out.extend_from_slice(&meta.producer_epoch.to_be_bytes());
    out.extend_from_slice(&meta.timeout_ms.to_be_bytes());
    out.extend_from_slice(&meta.state.code().to_be_bytes());
    put_len(&mut out, meta.partitions.len());
    for p in &meta.partitions {
        put_str(&mut out, &p.topic);
        out.extend_from_slice(&p.partition.to_be_bytes());
    }
    put_len(&mut out, meta.groups.len());
    for g in &meta.groups {
        put_str(&mut out, g);
    }
    out.extend_from_slice(&meta.start_ms.to_be_bytes());
    out.extend_from_slice(&meta.update_ms.to_be_bytes());
    put_len(&mut out, meta.offsets.len());
    for ((group, topic, partition), o) in &meta.offsets {
        put_str(&mut out, group);
        put_str(&mut out, topic);
        out.extend_from_slice(&partition.to_be_bytes());
        out.extend_from_slice(&o.offset.to_be_bytes());
        out.extend_from_slice(&o.leader_epoch.to_be_bytes());
        match &o.metadata {
            Some(m) => put_str(&mut out, m),
            None => out.extend_from_slice(&(-1i16).to_be_bytes()),
        }
    }
    out
}

/// A control record's key and value for a commit or abort marker.
pub fn encode_marker(commit: bool, coordinator_epoch: i32) -> (Vec<u8>, Vec<u8>) {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&MARKER_VERSION.to_be_bytes());
    key.extend_from_slice(&(if commit { MARKER_COMMIT } else { MARKER_ABORT }).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&MARKER_VERSION.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    (key, value)
}

/// Whether a control record key is a commit (`true`) or an abort (`false`) marker.
pub fn decode_marker_key(key: &[u8]) -> Result<bool, TxnRecordError> {
    let mut c = Cursor { bytes: key, at: 0 };
    let _version = c.i16()?;
    match c.i16()? {
        MARKER_COMMIT => Ok(true),
        MARKER_ABORT => Ok(false),
        _ => Err(TxnRecordError {
            reason: "unknown control record type",
            at: 2,
        }),
    }
}

pub fn decode_key(key: &[u8]) -> Result<String, TxnRecordError> {
    let mut c = Cursor { bytes: key, at: 0 };
    if c.i16()? != KEY_VERSION {
        return Err(TxnRecordError {
            reason: "unknown key version",
            at: 0,
        });
    }
    c.str()
}

pub fn decode_value(transactional_id: &str, value: &[u8]) -> Result<TxnMetadata, TxnRecordError> {
    let mut c = Cursor {
        bytes: value,
        at: 0,
    };
    if c.i16()? != VALUE_VERSION {
        return Err(TxnRecordError {
            reason: "unknown value version",
            at: 0,
        });
    }
    let producer_id = c.i64()?;
    let producer_epoch = c.i16()?;
    let timeout_ms = c.i32()?;
    let at = c.at;
    let state = TxnState::from_code(i8::from_be_bytes(c.array()?)).ok_or(TxnRecordError {
        reason: "unknown transaction state",
        at,
    })?;
    let mut partitions = BTreeSet::new();
    for _ in 0..c.count()? {
        let topic = c.str()?;
        let partition = c.i32()?;
        partitions.insert(TxnPartition { topic, partition });
    }
    let mut groups = BTreeSet::new();
    for _ in 0..c.count()? {
        groups.insert(c.str()?);
    }
    let start_ms = c.i64()?;
    let update_ms = c.i64()?;
    let mut offsets = BTreeMap::new();
    for _ in 0..c.count()? {
        let group = c.str()?;
        let topic = c.str()?;
        let partition = c.i32()?;
        let offset = c.i64()?;
        let leader_epoch = c.i32()?;
        let metadata = c.nullable_str()?;
        offsets.insert(
            (group, topic, partition),
            TxnOffset {
                offset,
                leader_epoch,
                metadata,
            },
        );
    }
    Ok(TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        groups,
        offsets,
        start_ms,
        update_ms,
    })
}

/// A bounds-checked reader over stored bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TxnRecordError> {
        let slice = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or(TxnRecordError {
                reason: "truncated",
                at: self.at,
            })?;
        self.at += n;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TxnRecordError> {
        let at = self.at;
        self.take(N)?.try_into().map_err(|_| TxnRecordError {
            reason: "truncated",
            at,
        })
    }
    fn i16(&mut self) -> Result<i16, TxnRecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, TxnRecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, TxnRecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn count(&mut self) -> Result<usize, TxnRecordError> {
        let at = self.at;
        usize::try_from(self.i32()?).map_err(|_| TxnRecordError {
            reason: "negative count",
            at,
        })
    }
    fn nullable_str(&mut self) -> Result<Option<String>, TxnRecordError> {
        let at = self.at;
        if self.i16()? < 0 {
            return Ok(None);
        }
        self.at = at;
        self.str().map(Some)
    }
    fn str(&mut self) -> Result<String, TxnRecordError> {
        let at = self.at;
        let len = usize::try_from(self.i16()?).map_err(|_| TxnRecordError {
            reason: "null string",
            at,
        })?;
        let at = self.at;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| TxnRecordError {
            reason: "string is not UTF-8",
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips() {
        let meta = TxnMetadata {
            transactional_id: "tx-1".into(),
            producer_id: 4242,
            producer_epoch: 7,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [
                TxnPartition::new("orders", 0),
                TxnPartition::new("orders", 3),
            ]
            .into_iter()
            .collect(),
            groups: ["app".to_string()].into_iter().collect(),
            offsets: [
                (
                    ("app".to_string(), "in".to_string(), 2),
                    TxnOffset {
                        offset: 17,
                        leader_epoch: -1,
                        metadata: Some("m".into()),
                    },
                ),
                (
                    ("app".to_string(), "in".to_string(), 3),
                    TxnOffset {
                        offset: 4,
                        leader_epoch: 1,
                        metadata: None,
                    },
                ),
            ]
            .into_iter()
            .collect(),
            start_ms: 1_000,
            update_ms: 2_000,
        };
        let key = encode_key("tx-1");
        let id = decode_key(&key).unwrap();
        assert_eq!(decode_value(&id, &encode_value(&meta)).unwrap(), meta);
    }

    #[test]
    fn truncated_values_are_errors_not_panics() {
        let meta = TxnMetadata {
            transactional_id: "t".into(),
            producer_id: 1,
            producer_epoch: 0,
            timeout_ms: 1,
            state: TxnState::Ongoing,
            partitions: [TxnPartition::new("a", 0)].into_iter().collect(),
            groups: BTreeSet::new(),
            offsets: BTreeMap::new(),
            start_ms: 0,
            update_ms: 0,
        };
        let bytes = encode_value(&meta);
        for len in 0..bytes.len() {
            assert!(decode_value("t", &bytes[..len]).is_err(), "prefix {len}");
        }
    }

    #[test]
    fn markers_use_kafkas_control_record_layout() {
        let (key, value) = encode_marker(true, 3);
        assert_eq!(key, vec![0, 0, 0, 1]);
        assert_eq!(value, vec![0, 0, 0, 0, 0, 3]);
        assert!(decode_marker_key(&key).unwrap());
        assert!(!decode_marker_key(&encode_marker(false, 0).0).unwrap());
        assert!(decode_marker_key(&[0, 0, 0, 9]).is_err());
        assert!(decode_marker_key(&[0]).is_err());
    }
}
