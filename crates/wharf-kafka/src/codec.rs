//! Request decoding and response framing with `kafka-protocol` codecs.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::protocol::{Decodable, Encodable};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot decode {api:?} v{version}: {message}")]
    Decode {
        api: ApiKey,
        version: i16,
        message: String,
    },
    #[error("cannot encode {api:?} v{version} response: {message}")]
    Encode {
        api: ApiKey,
        version: i16,
        message: String,
    },
}

pub fn decode<T: Decodable>(api: ApiKey, version: i16, body: &mut Bytes) -> Result<T, CodecError> {
    T::decode(body, version).map_err(|e| CodecError::Decode {
        api,
        version,
        message: e.to_string(),
    })
}

/// A whole response frame: size, header (v0 or flexible v1), body.
pub fn frame<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<BytesMut, CodecError> {
    let err = |e: &dyn std::fmt::Display| CodecError::Encode {
        api,
        version,
        message: e.to_string(),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| err(&e))?;
    body.encode(&mut buf, version).map_err(|e| err(&e))?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}

pub fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Record sets at least this long are not copied into a Fetch answer: they are written to
/// the socket from the bytes storage read (`fetch_frame`). Smaller ones cost less to copy
/// than to give their own piece of a vectored write.
pub const SHARED_RECORDS_MIN: usize = 8 * 1024;

/// A marker stands in for a record set while the rest of a Fetch answer is encoded: a
/// per-process random prefix (no client can know it) and the record set's index.
const MARKER_LEN: usize = 16;

fn marker_prefix() -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    static PREFIX: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    *PREFIX.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        h.finish().to_le_bytes()
    })
}

fn marker(index: usize) -> [u8; MARKER_LEN] {
    let mut m = [0u8; MARKER_LEN];
    m[..8].copy_from_slice(&marker_prefix());
    m[8..].copy_from_slice(&(index as u64).to_le_bytes());
    m
}

/// The length prefix the codec writes before a record set of `len` bytes: INT32 before Fetch
/// v12, an unsigned varint of `len + 1` (COMPACT_RECORDS) from v12 on.
fn records_length(version: i16, len: usize) -> Vec<u8> {
    if version >= 12 {
        let mut v = len as u64 + 1;
        let mut out = Vec::with_capacity(5);
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    } else {
        (len as i32).to_be_bytes().to_vec()
    }
}

/// A whole Fetch answer frame as pieces to write in order, with every record set of at least
/// [`SHARED_RECORDS_MIN`] bytes written from the bytes storage read rather than copied into
/// the frame (the copy was nearly all of a large answer's framing cost). Each such record set
/// is swapped for a marker, the answer is encoded, and the frame is cut at the markers, whose
/// length prefixes are rewritten for the real record sets. If a marker is not found where the
/// codec must have put it, the answer is encoded whole instead (copying, as before).
pub fn fetch_frame(
    version: i16,
    correlation_id: i32,
    mut body: kafka_protocol::messages::FetchResponse,
) -> Result<Vec<Bytes>, CodecError> {
    let api = ApiKey::Fetch;
    let mut shared: Vec<Bytes> = Vec::new();
    for partition in body
        .responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
    {
        if let Some(records) = &mut partition.records {
            if records.len() >= SHARED_RECORDS_MIN {
                let stand_in = Bytes::copy_from_slice(&marker(shared.len()));
                shared.push(std::mem::replace(records, stand_in));
            }
        }
    }
    let framed = frame(api, version, correlation_id, &body)?.freeze();
    if shared.is_empty() {
        return Ok(vec![framed]);
    }
    if let Some(pieces) = cut_at_markers(version, &framed, &shared) {
        return Ok(pieces);
    }
    tracing::warn!(
        version,
        "fetch answer markers not found where expected; answering with a copied frame"
    );
    let mut records = shared.into_iter().enumerate().peekable();
    for partition in body
        .responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
    {
        if let (Some(r), Some((index, _))) = (&mut partition.records, records.peek()) {
            if r[..] == marker(*index)[..] {
                if let Some((_, real)) = records.next() {
                    *r = real;
                }
            }
        }
    }
    Ok(vec![frame(api, version, correlation_id, &body)?.freeze()])
}

/// Splits `framed` at the markers of `shared`, putting each record set and its real length
/// prefix in place of the marker and its prefix; the size prefix is recomputed. `None` unless
/// the markers' random prefix occurs exactly once per marker, in order, each after the length
/// prefix the codec writes for it (so a lookalike inside small records is never cut at).
fn cut_at_markers(version: i16, framed: &Bytes, shared: &[Bytes]) -> Option<Vec<Bytes>> {
    let random = marker_prefix();
    let found: Vec<usize> = framed
        .windows(random.len())
        .enumerate()
        .filter(|(_, w)| *w == random)
        .map(|(at, _)| at)
        .collect();
    if found.len() != shared.len() {
        return None;
    }
    let stand_in_prefix = records_length(version, MARKER_LEN);
    let mut pieces = Vec::with_capacity(shared.len() * 3 + 2);
    pieces.push(Bytes::new()); // the size prefix, set below
    let mut from = 4usize;
    let mut size = 0usize;
    for (index, (&at, records)) in found.iter().zip(shared).enumerate() {
        let prefix_at = at.checked_sub(stand_in_prefix.len())?;
        if prefix_at < from
            || framed.get(at..at + MARKER_LEN)? != marker(index)
            || framed[prefix_at..at] != stand_in_prefix[..]
        {
            return None;
        }
        let before = framed.slice(from..prefix_at);
        let length = Bytes::from(records_length(version, records.len()));
        size += before.len() + length.len() + records.len();
        if !before.is_empty() {
            pieces.push(before);
        }
        pieces.push(length);
        pieces.push(records.clone());
        from = at + MARKER_LEN;
    }
    let rest = framed.slice(from..);
    size += rest.len();
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces[0] = Bytes::copy_from_slice(&i32::try_from(size).ok()?.to_be_bytes());
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};

    fn records(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn response(sets: &[Option<Bytes>]) -> FetchResponse {
        let partitions = sets
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(1_000 + i as i64)
                    .with_records(r.clone())
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(str("orders")))
            .with_partitions(partitions)])
    }

    fn joined(pieces: &[Bytes]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn a_fetch_frame_in_pieces_is_the_copied_frame_byte_for_byte() {
        // Large sets around the varint length boundaries, small ones, none and empty.
        let sets = [
            Some(records(SHARED_RECORDS_MIN, 1)),
            Some(records(100, 2)),
            None,
            Some(records(16_383, 3)),
            Some(records(16_384, 4)),
            Some(Bytes::new()),
            Some(records(2_097_152, 5)),
        ];
        for version in 4..=12 {
            let whole = frame(ApiKey::Fetch, version, 7, &response(&sets)).unwrap();
            let pieces = fetch_frame(version, 7, response(&sets)).unwrap();
            assert_eq!(joined(&pieces), whole.to_vec(), "v{version}");
            // The large sets are the stored bytes themselves, not copies.
            for set in sets
                .iter()
                .flatten()
                .filter(|s| s.len() >= SHARED_RECORDS_MIN)
            {
                assert!(
                    pieces
                        .iter()
                        .any(|p| p.as_ptr() == set.as_ptr() && p.len() == set.len()),
                    "v{version}: a record set of {} bytes was copied",
                    set.len()
                );
            }
        }
    }

    #[test]
    fn a_marker_lookalike_in_small_records_falls_back_to_a_whole_frame() {
        // A small record set holding the first marker with the length prefix the codec
        // writes before it, ahead of the large set the marker stands in for: the answer must
        // not be cut there.
        for version in [4, 11, 12] {
            let mut lookalike = records_length(version, MARKER_LEN);
            lookalike.extend_from_slice(&marker(0));
            let sets = [
                Some(Bytes::from(lookalike)),
                Some(records(SHARED_RECORDS_MIN * 2, 9)),
            ];
            let whole = frame(ApiKey::Fetch, version, 1, &response(&sets)).unwrap();
            let pieces = fetch_frame(version, 1, response(&sets)).unwrap();
            assert_eq!(joined(&pieces), whole.to_vec(), "v{version}");
        }
    }
}
