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
//!        consumer group (KIP-848): i16 1 | group_epoch i32 | assignment_epoch i32 | assignor
//!                | subscribed i32 count of (topic | partitions i32) | members i32 count, each:
//!                  member_id | instance_id (nullable) | rack_id (nullable) | client_id
//!                  | client_host | rebalance_timeout_ms i32 | topics i32 count of topic
//!                  | regex (nullable) | assignor (nullable) | epoch i32 | previous_epoch i32
//!                  | assigned | revoking | target   (each: i32 count of topic | i32 count
//!                  of partition i32)
//! ```

use bytes::Bytes;
use thiserror::Error;

const KEY_OFFSET: i16 = 1;
const KEY_GROUP: i16 = 2;
const VALUE_VERSION: i16 = 0;
/// The group key's value for a consumer-protocol (KIP-848) group.
const VALUE_VERSION_CONSUMER_GROUP: i16 = 1;

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

/// A consumer-protocol group member as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub assigned: Vec<(String, Vec<i32>)>,
    pub revoking: Vec<(String, Vec<i32>)>,
    pub target: Vec<(String, Vec<i32>)>,
}

/// A consumer-protocol (KIP-848) group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupValue {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub subscribed: Vec<(String, i32)>,
    pub members: Vec<ConsumerMemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordValue {
    Offset(OffsetValue),
    Group(GroupValue),
    ConsumerGroup(ConsumerGroupValue),
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    put_i32(out, i32::try_from(n).unwrap_or(i32::MAX));
}

fn put_assignment(out: &mut Vec<u8>, a: &[(String, Vec<i32>)]) {
    put_len(out, a.len());
    for (topic, partitions) in a {
        put_str(out, Some(topic));
        put_len(out, partitions.len());
        for p in partitions {
            put_i32(out, *p);
        }
    }
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
    let version = match value {
        RecordValue::ConsumerGroup(_) => VALUE_VERSION_CONSUMER_GROUP,
        _ => VALUE_VERSION,
    };
    out.extend_from_slice(&version.to_be_bytes());
    match value {
        RecordValue::ConsumerGroup(g) => {
            put_i32(&mut out, g.group_epoch);
            put_i32(&mut out, g.assignment_epoch);
            put_str(&mut out, Some(&g.assignor));
            put_len(&mut out, g.subscribed.len());
            for (topic, n) in &g.subscribed {
                put_str(&mut out, Some(topic));
                put_i32(&mut out, *n);
            }
            put_len(&mut out, g.members.len());
            for m in &g.members {
                put_str(&mut out, Some(&m.member_id));
                put_str(&mut out, m.instance_id.as_deref());
                put_str(&mut out, m.rack_id.as_deref());
                put_str(&mut out, Some(&m.client_id));
                put_str(&mut out, Some(&m.client_host));
                put_i32(&mut out, m.rebalance_timeout_ms);
                put_len(&mut out, m.topics.len());
                for t in &m.topics {
                    put_str(&mut out, Some(t));
                }
                put_str(&mut out, m.regex.as_deref());
                put_str(&mut out, m.assignor.as_deref());
                put_i32(&mut out, m.epoch);
                put_i32(&mut out, m.previous_epoch);
                put_assignment(&mut out, &m.assigned);
                put_assignment(&mut out, &m.revoking);
                put_assignment(&mut out, &m.target);
            }
        }
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
    let version = c.i16()?;
    if version == VALUE_VERSION_CONSUMER_GROUP && matches!(key, RecordKey::Group { .. }) {
        return decode_consumer_group(&mut c).map(RecordValue::ConsumerGroup);
    }
    if version != VALUE_VERSION {
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

fn decode_assignment(c: &mut Cursor<'_>) -> Result<Vec<(String, Vec<i32>)>, RecordFormatError> {
    let topics = c.i32()?.max(0);
    let mut out = Vec::new();
    for _ in 0..topics {
        let topic = c.str()?;
        let n = c.i32()?.max(0);
        let mut partitions = Vec::new();
        for _ in 0..n {
            partitions.push(c.i32()?);
        }
        out.push((topic, partitions));
    }
    Ok(out)
}

fn decode_consumer_group(c: &mut Cursor<'_>) -> Result<ConsumerGroupValue, RecordFormatError> {
    let group_epoch = c.i32()?;
    let assignment_epoch = c.i32()?;
    let assignor = c.str()?;
    let n = c.i32()?.max(0);
    let mut subscribed = Vec::new();
    for _ in 0..n {
        subscribed.push((c.str()?, c.i32()?));
    }
    let n = c.i32()?.max(0);
    let mut members = Vec::new();
    for _ in 0..n {
        let member_id = c.str()?;
        let instance_id = c.nullable_str()?;
        let rack_id = c.nullable_str()?;
        let client_id = c.str()?;
        let client_host = c.str()?;
        let rebalance_timeout_ms = c.i32()?;
        let topic_count = c.i32()?.max(0);
        let mut topics = Vec::new();
        for _ in 0..topic_count {
            topics.push(c.str()?);
        }
        members.push(ConsumerMemberValue {
            member_id,
            instance_id,
            rack_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            topics,
            regex: c.nullable_str()?,
            assignor: c.nullable_str()?,
            epoch: c.i32()?,
            previous_epoch: c.i32()?,
            assigned: decode_assignment(c)?,
            revoking: decode_assignment(c)?,
            target: decode_assignment(c)?,
        });
    }
    Ok(ConsumerGroupValue {
        group_epoch,
        assignment_epoch,
        assignor,
        subscribed,
        members,
    })
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
        let value = RecordValue::ConsumerGroup(ConsumerGroupValue {
            group_epoch: 7,
            assignment_epoch: 6,
            assignor: "uniform".into(),
            subscribed: vec![("t".into(), 4)],
            members: vec![ConsumerMemberValue {
                member_id: "m1".into(),
                instance_id: Some("i".into()),
                rack_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                topics: vec!["t".into()],
                regex: Some("t.*".into()),
                assignor: None,
                epoch: 6,
                previous_epoch: 5,
                assigned: vec![("t".into(), vec![0, 1])],
                revoking: vec![("t".into(), vec![2])],
                target: vec![("t".into(), vec![0, 1, 3])],
            }],
        });
        let bytes = encode_value(&value);
        assert_eq!(decode_value(&key, &bytes).unwrap(), value);
        for cut in 0..bytes.len() {
            assert!(decode_value(&key, &bytes[..cut]).is_err(), "cut at {cut}");
        }
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
