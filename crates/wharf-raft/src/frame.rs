//! Node-to-node frames: a 4-byte big-endian length, then a body. A body is JSON, except an
//! AppendEntries request, whose record batches travel as raw bytes after a JSON header (JSON
//! would write each byte as a decimal number: ~3.7 times the bytes, and slow to parse).
//! Invariant: no frame longer than the limit is read into memory; a reader stops at the first
//! bad frame.
//!
//! A batches body: `[BLOBS][json_len u32][json][count u32][count × len u32][blobs]` (big-endian),
//! where the JSON is the request with the `batches` of every part of every normal entry empty,
//! and the blobs are those batches in order.

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Entry, EntryPayload};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::types::{NodeId, Part, TypeConfig};

/// The default bound on one frame (a snapshot chunk or an AppendEntries batch).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// The first byte of a batches body (a JSON body starts with `{` or `"`).
const BLOBS: u8 = 1;

/// A request from node `from` to the group `group` on the receiving node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestFrame {
    pub group: u64,
    pub from: NodeId,
    pub rpc: Rpc,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Who are you: the receiving node answers with its card (any group id).
    Hello,
    /// A request for the receiving node's forward handler (any group id): a JSON body the
    /// server's caller defines (the controller's metadata changes, KIP-590's forwarding).
    Forward(String),
    /// A call on the receiving node's broker (any group id), opaque to this crate.
    Call(serde_json::Value),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The receiving node has no such group (or is shutting it down).
    UnknownGroup(u64),
    /// The answer to `Hello`; `None` before the node has set its card.
    Hello(Option<NodeCard>),
    /// The forward handler's answer, or why there is none (no handler set yet).
    Forward(Result<String, String>),
    /// The answer to `Call`: served, or why not.
    Call(Result<(), String>),
}

/// What a node tells its peers about itself: its id and its Kafka listener as clients should
/// be told it (Metadata names every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCard {
    pub node_id: NodeId,
    pub kafka_host: String,
    pub kafka_port: i32,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame body does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("batches body is malformed: {0}")]
    Blobs(&'static str),
}

/// Reads one frame body; `None` at a clean end of stream before a frame starts.
pub(crate) async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(Some(Bytes::from(body)))
}

/// Writes `value` as a JSON frame.
pub(crate) async fn write_frame(
    writer: &mut (impl AsyncWrite + Unpin),
    value: &impl Serialize,
    max: usize,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(value)?;
    write_parts(writer, &body, &[], max).await
}

/// Writes a request; an AppendEntries request's batches go as raw bytes after its header.
pub(crate) async fn write_request(
    writer: &mut (impl AsyncWrite + Unpin),
    mut frame: RequestFrame,
    max: usize,
) -> Result<(), FrameError> {
    let Rpc::Append(append) = &mut frame.rpc else {
        return write_frame(writer, &frame, max).await;
    };
    let blobs: Vec<Bytes> = parts(&mut append.entries)
        .map(|part| std::mem::take(&mut part.batches))
        .collect();
    let json = serde_json::to_vec(&frame)?;
    let too_large = |len: usize| FrameError::TooLarge { len, max };
    let mut head = Vec::with_capacity(9 + json.len() + 4 * blobs.len());
    head.push(BLOBS);
    head.extend_from_slice(
        &u32::try_from(json.len())
            .map_err(|_| too_large(json.len()))?
            .to_be_bytes(),
    );
    head.extend_from_slice(&json);
    head.extend_from_slice(
        &u32::try_from(blobs.len())
            .map_err(|_| too_large(json.len()))?
            .to_be_bytes(),
    );
    for blob in &blobs {
        head.extend_from_slice(
            &u32::try_from(blob.len())
                .map_err(|_| too_large(blob.len()))?
                .to_be_bytes(),
        );
    }
    write_parts(writer, &head, &blobs, max).await
}

/// Writes one frame made of `head` then `blobs`, flushed.
async fn write_parts(
    writer: &mut (impl AsyncWrite + Unpin),
    head: &[u8],
    blobs: &[Bytes],
    max: usize,
) -> Result<(), FrameError> {
    let total = head.len() + blobs.iter().map(Bytes::len).sum::<usize>();
    if total > max {
        return Err(FrameError::TooLarge { len: total, max });
    }
    let len = u32::try_from(total).map_err(|_| FrameError::TooLarge { len: total, max })?;
    if blobs.is_empty() {
        // One write for a small frame.
        let mut out = Vec::with_capacity(4 + head.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(head);
        writer.write_all(&out).await?;
    } else {
        writer.write_all(&len.to_be_bytes()).await?;
        writer.write_all(head).await?;
        for blob in blobs {
            writer.write_all(blob).await?;
        }
    }
    writer.flush().await?;
    Ok(())
}

/// The parts of the normal entries, in order: whose batches travel as blobs.
fn parts(entries: &mut [Entry<TypeConfig>]) -> impl Iterator<Item = &mut Part> {
    entries.iter_mut().flat_map(|e| match &mut e.payload {
        EntryPayload::Normal(request) => request.parts.as_mut_slice(),
        _ => &mut [],
    })
}

/// Decodes a request body (JSON, or a batches body), taking the batches as slices of `body`.
pub(crate) fn decode_request(body: &Bytes) -> Result<RequestFrame, FrameError> {
    let frame = decode_body(body)?;
    if let Rpc::Append(append) = &frame.rpc {
        // An entry with no parts would be stored as no shard entry, which the raft index
        // cannot number: refused like any malformed frame.
        let empty = append.entries.iter().any(
            |e| matches!(&e.payload, EntryPayload::Normal(request) if request.parts.is_empty()),
        );
        if empty {
            return Err(FrameError::Blobs("an entry with no parts"));
        }
    }
    Ok(frame)
}

fn decode_body(body: &Bytes) -> Result<RequestFrame, FrameError> {
    if body.first() != Some(&BLOBS) {
        return Ok(serde_json::from_slice(body)?);
    }
    let mut at: usize = 1;
    let mut take = |n: usize| -> Result<std::ops::Range<usize>, FrameError> {
        let end = at
            .checked_add(n)
            .filter(|&end| end <= body.len())
            .ok_or(FrameError::Blobs("shorter than its lengths say"))?;
        let range = at..end;
        at = end;
        Ok(range)
    };
    let u32_at = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&body[r]);
        u32::from_be_bytes(b) as usize
    };
    let json_len = u32_at(take(4)?);
    let json = take(json_len)?;
    let mut frame: RequestFrame = serde_json::from_slice(&body[json])?;
    let count = u32_at(take(4)?);
    let Rpc::Append(append) = &mut frame.rpc else {
        return Err(FrameError::Blobs(
            "batches body of a request that is not AppendEntries",
        ));
    };
    let mut normals: Vec<&mut Bytes> = parts(&mut append.entries)
        .map(|part| &mut part.batches)
        .collect();
    if normals.len() != count {
        return Err(FrameError::Blobs(
            "blob count differs from the entries' parts",
        ));
    }
    let mut lens = Vec::with_capacity(count);
    for _ in 0..count {
        lens.push(u32_at(take(4)?));
    }
    for (slot, len) in normals.iter_mut().zip(lens) {
        **slot = body.slice(take(len)?);
    }
    if at != body.len() {
        return Err(FrameError::Blobs("bytes after the last blob"));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};

    use super::*;
    use crate::types::Request;

    fn append(batches: &[&[u8]]) -> RequestFrame {
        let mut entries = vec![Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 7),
            payload: EntryPayload::Blank,
        }];
        // One entry of one part, then one with the rest.
        let part = |i: usize, b: &[u8]| Part {
            log_id: 40 + i as u64,
            batches: Bytes::copy_from_slice(b),
            local_ack: 0,
        };
        let mut requests = vec![Request {
            parts: batches.iter().take(1).map(|b| part(0, b)).collect(),
        }];
        requests.push(Request {
            parts: batches
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, b)| part(i, b))
                .collect(),
        });
        for (i, request) in requests.into_iter().enumerate() {
            entries.push(Entry {
                log_id: LogId::new(CommittedLeaderId::new(3, 1), 8 + i as u64),
                payload: EntryPayload::Normal(request),
            });
        }
        RequestFrame {
            group: 5,
            from: 1,
            rpc: Rpc::Append(AppendEntriesRequest {
                vote: Vote::new_committed(3, 1),
                prev_log_id: None,
                leader_commit: None,
                entries,
            }),
        }
    }

    async fn encoded(frame: RequestFrame) -> Vec<u8> {
        let mut out = Vec::new();
        write_request(&mut out, frame, DEFAULT_MAX_FRAME_BYTES)
            .await
            .unwrap();
        out
    }

    fn batches(frame: &RequestFrame) -> Vec<(u64, Vec<u8>)> {
        let Rpc::Append(a) = &frame.rpc else {
            panic!("not an append: {frame:?}")
        };
        a.entries
            .iter()
            .flat_map(|e| match &e.payload {
                EntryPayload::Normal(r) => r.parts.clone(),
                _ => Vec::new(),
            })
            .map(|p| (p.log_id, p.batches.to_vec()))
            .collect()
    }

    #[tokio::test]
    async fn an_append_round_trips_with_its_batches_as_raw_bytes() {
        let big = vec![0xABu8; 100_000];
        let wire = encoded(append(&[b"first", &big, b""])).await;
        // Raw: the frame is the batches plus a small header, not a JSON list of numbers.
        assert!(wire.len() < 100_000 + 1_000, "{} bytes", wire.len());
        let body = read_frame(&mut wire.as_slice(), DEFAULT_MAX_FRAME_BYTES)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(body[0], BLOBS);
        let frame = decode_request(&body).unwrap();
        assert_eq!((frame.group, frame.from), (5, 1));
        assert_eq!(
            batches(&frame),
            vec![(40, b"first".to_vec()), (41, big), (42, Vec::new())]
        );
    }

    #[tokio::test]
    async fn other_requests_stay_json() {
        let wire = encoded(RequestFrame {
            group: 0,
            from: 2,
            rpc: Rpc::Hello,
        })
        .await;
        assert_eq!(wire[4], b'{');
        let body = Bytes::copy_from_slice(&wire[4..]);
        assert!(matches!(decode_request(&body).unwrap().rpc, Rpc::Hello));
    }

    #[tokio::test]
    async fn a_malformed_batches_body_is_an_error_not_a_panic() {
        let wire = encoded(append(&[b"abc", b"defg"])).await;
        let body = Bytes::copy_from_slice(&wire[4..]);
        // Every truncation fails cleanly.
        for cut in 0..body.len() {
            assert!(decode_request(&body.slice(..cut)).is_err(), "cut at {cut}");
        }
        // A trailing byte.
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode_request(&Bytes::from(longer)).is_err());
        // A blob count that differs from the entries (and would ask for a huge allocation).
        let json_len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let mut lying = body.to_vec();
        lying[5 + json_len..9 + json_len].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_request(&Bytes::from(lying)),
            Err(FrameError::Blobs(_))
        ));
        // An entry with no parts.
        let wire = encoded(append(&[])).await;
        assert!(matches!(
            decode_request(&Bytes::copy_from_slice(&wire[4..])),
            Err(FrameError::Blobs("an entry with no parts"))
        ));
        // A blob length past the end.
        let mut past = body.to_vec();
        past[9 + json_len..13 + json_len].copy_from_slice(&1_000u32.to_be_bytes());
        assert!(decode_request(&Bytes::from(past)).is_err());
    }
}
