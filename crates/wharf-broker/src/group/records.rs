//! The records of `__consumer_offsets`: keys and values as bytes. A key names what it sets —
//! one committed offset (group, topic, partition) or one group's metadata (group) — and a
//! record without a value (a tombstone) deletes it. Replay applies records in log order; the
//! last one for a key wins.
//!
//! Layout (big-endian; strings are i16 length + UTF-8, -1 for null; bytes are i32 length):
//!
//! ```text
//! key    offset: i16 1 | group | topic | partition i32
//!        group:  i16 2 | group
//! value  offset: i16 0 | offset i64 | leader_epoch i32 | metadata (nullable) | commit_ms i64
//!        group:  i16 0 | protocol_type (nullable) | generation i32 | protocol (nullable)
//!                | leader (nullable) | state_since_ms i64 | members i32 count, each:
//!                  member_id | instance_id (nullable) | client_id | client_host
//!                  | session_timeout_ms i32 | rebalance_timeout_ms i32 | metadata bytes
//!                  | assignment bytes
//! ```

use bytes::Bytes;
use thiserror::Error;

const KEY_OFFSET: i16 = 1;
const KEY_GROUP: i16 = 2;
const VALUE_VERSION: i16 = 0;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed __consumer_offsets record: {reason} at byte {at}")]
pub struct RecordFormatError {
    pub reason: &'static str,
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

/// A member of a stable group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as stored: members only when the group was stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: Option<String>,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_since_ms: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordValue {
    Offset(OffsetValue),
    Group(GroupValue),
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            let len = s.len().min(i16::MAX as usize);
            out.extend_from_slice(&(len as i16).to_be_bytes());
            out.extend_from_slice(s.as_bytes().get(..len).unwrap_or_default());
        }
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

pub fn encode_key(key: &RecordKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            out.extend_from_slice(&KEY_OFFSET.to_be_bytes());
            put_str(&mut out, Some(group));
            put_str(&mut out, Some(topic));
            out.extend_from_slice(&partition.to_be_bytes());
        }
        RecordKey::Group { group } => {
            out.extend_from_slice(&KEY_GROUP.to_be_bytes());
            put_str(&mut out, Some(group));
        }
    }
    out
}

pub fn encode_value(value: &RecordValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    match value {
        RecordValue::Offset(v) => {
            out.extend_from_slice(&v.offset.to_be_bytes());
            out.extend_from_slice(&v.leader_epoch.to_be_bytes());
            put_str(&mut out, v.metadata.as_deref());
            out.extend_from_slice(&v.commit_ms.to_be_bytes());
        }
        RecordValue::Group(g) => {
            put_str(&mut out, g.protocol_type.as_deref());
            out.extend_from_slice(&g.generation.to_be_bytes());
            put_str(&mut out, g.protocol.as_deref());
            put_str(&mut out, g.leader.as_deref());
            out.extend_from_slice(&g.state_since_ms.to_be_bytes());
            out.extend_from_slice(&(g.members.len() as i32).to_be_bytes());
            for m in &g.members {
                put_str(&mut out, Some(&m.member_id));
                put_str(&mut out, m.group_instance_id.as_deref());
                put_str(&mut out, Some(&m.client_id));
                put_str(&mut out, Some(&m.client_host));
                out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
                out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
                put_bytes(&mut out, &m.metadata);
                put_bytes(&mut out, &m.assignment);
            }
        }
    }
    out
}

/// A bounds-checked reader over stored bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordFormatError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let slice = end
            .and_then(|e| self.bytes.get(self.at..e))
            .ok_or(RecordFormatError {
                reason: "truncated",
                at: self.at,
            })?;
        self.at += n;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordFormatError> {
        let at = self.at;
        self.take(N)?.try_into().map_err(|_| RecordFormatError {
            reason: "truncated",
            at,
        })
    }
    fn i16(&mut self) -> Result<i16, RecordFormatError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, RecordFormatError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, RecordFormatError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn nullable_str(&mut self) -> Result<Option<String>, RecordFormatError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let at = self.at;
        let raw = self.take(len as usize)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| RecordFormatError {
                reason: "string is not UTF-8",
                at,
            })
    }
    fn str(&mut self) -> Result<String, RecordFormatError> {
        let at = self.at;
        self.nullable_str()?.ok_or(RecordFormatError {
            reason: "null string",
            at,
        })
    }
    fn bytes(&mut self) -> Result<Bytes, RecordFormatError> {
        let at = self.at;
        let len = usize::try_from(self.i32()?).map_err(|_| RecordFormatError {
            reason: "negative length",
            at,
        })?;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
}

pub fn decode_key(bytes: &[u8]) -> Result<RecordKey, RecordFormatError> {
    let mut c = Cursor { bytes, at: 0 };
    match c.i16()? {
        KEY_OFFSET => Ok(RecordKey::Offset {
            group: c.str()?,
            topic: c.str()?,
            partition: c.i32()?,
        }),
        KEY_GROUP => Ok(RecordKey::Group { group: c.str()? }),
        _ => Err(RecordFormatError {
            reason: "unknown key version",
            at: 0,
        }),
    }
}

/// Decodes the value stored under `key`.
pub fn decode_value(key: &RecordKey, bytes: &[u8]) -> Result<RecordValue, RecordFormatError> {
    let mut c = Cursor { bytes, at: 0 };
    if c.i16()? != VALUE_VERSION {
        return Err(RecordFormatError {
            reason: "unknown value version",
            at: 0,
        });
    }
    match key {
        RecordKey::Offset { .. } => Ok(RecordValue::Offset(OffsetValue {
            offset: c.i64()?,
            leader_epoch: c.i32()?,
            metadata: c.nullable_str()?,
            commit_ms: c.i64()?,
        })),
        RecordKey::Group { .. } => {
            let protocol_type = c.nullable_str()?;
            let generation = c.i32()?;
            let protocol = c.nullable_str()?;
            let leader = c.nullable_str()?;
            let state_since_ms = c.i64()?;
            let count = c.i32()?.max(0);
            let mut members = Vec::new();
            for _ in 0..count {
                members.push(MemberValue {
                    member_id: c.str()?,
                    group_instance_id: c.nullable_str()?,
                    client_id: c.str()?,
                    client_host: c.str()?,
                    session_timeout_ms: c.i32()?,
                    rebalance_timeout_ms: c.i32()?,
                    metadata: c.bytes()?,
                    assignment: c.bytes()?,
                });
            }
            Ok(RecordValue::Group(GroupValue {
                protocol_type,
                generation,
                protocol,
                leader,
                state_since_ms,
                members,
            }))
        }
    }
}

/// The `__consumer_offsets` partition holding `group`: Java's `String.hashCode` of the id,
/// made non-negative, modulo the partition count — stable across restarts and versions.
pub fn partition_for(group: &str, partitions: usize) -> usize {
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (hash & i32::MAX) as usize % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
        };
        let value = RecordValue::Offset(OffsetValue {
            offset: 42,
            leader_epoch: -1,
            metadata: Some("checkpoint é".into()),
            commit_ms: 1_700_000_000_000,
        });
        assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        assert_eq!(decode_value(&key, &encode_value(&value)).unwrap(), value);
        let key = RecordKey::Group { group: "g".into() };
        let value = RecordValue::Group(GroupValue {
            protocol_type: Some("consumer".into()),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_since_ms: 5,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 6000,
                rebalance_timeout_ms: 9000,
                metadata: Bytes::from_static(b"meta"),
                assignment: Bytes::from_static(b"assign"),
            }],
        });
        assert_eq!(decode_value(&key, &encode_value(&value)).unwrap(), value);
    }

    #[test]
    fn truncated_or_unknown_bytes_are_errors_not_panics() {
        let key = RecordKey::Group { group: "g".into() };
        let full = encode_value(&RecordValue::Group(GroupValue {
            protocol_type: None,
            generation: 1,
            protocol: None,
            leader: None,
            state_since_ms: 0,
            members: Vec::new(),
        }));
        for len in 0..full.len() {
            assert!(decode_value(&key, &full[..len]).is_err());
        }
        assert!(decode_key(&[0, 9, 0, 0]).is_err());
        assert!(decode_key(&[0, 1, 0, 200]).is_err());
    }

    #[test]
    fn partition_follows_java_string_hash() {
        // "g".hashCode() == 103; "consumer-group".hashCode() is negative in Java.
        assert_eq!(partition_for("g", 8), 103 % 8);
        let p = partition_for("consumer-group", 8);
        assert!(p < 8);
        assert_eq!(partition_for("consumer-group", 8), p);
    }
}
