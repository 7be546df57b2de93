//! Frames on the wire, through the `amq-protocol` codec: the reader checks a frame's size
//! against the negotiated `frame_max` before reading its payload, so a hostile length never
//! allocates; parsing and encoding are amq-protocol's.

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use amq_protocol::protocol::AMQPClass;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::CodecError;

/// The protocol header a 0-9-1 client sends first (and the server answers a wrong one with).
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// Frame type, channel, size before the payload; the end octet after it.
const FRAME_OVERHEAD: usize = 8;
const FRAME_END: u8 = 206;

/// Reads the 8-byte protocol header; `Err(bytes)` when it is not AMQP 0-9-1.
pub async fn read_protocol_header<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Result<(), [u8; 8]>> {
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).await?;
    Ok(if header == PROTOCOL_HEADER {
        Ok(())
    } else {
        Err(header)
    })
}

/// Reads one frame of at most `frame_max` bytes (payload plus 8 bytes of framing).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame_max: usize,
) -> Result<AMQPFrame, CodecError> {
    let mut head = [0u8; 7];
    reader.read_exact(&mut head).await.map_err(CodecError::Io)?;
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    if size + FRAME_OVERHEAD > frame_max {
        return Err(CodecError::TooLarge {
            size: size + FRAME_OVERHEAD,
            frame_max,
        });
    }
    let mut frame = Vec::with_capacity(size + FRAME_OVERHEAD);
    frame.extend_from_slice(&head);
    frame.resize(size + FRAME_OVERHEAD, 0);
    reader
        .read_exact(&mut frame[7..])
        .await
        .map_err(CodecError::Io)?;
    if frame.last() != Some(&FRAME_END) {
        return Err(CodecError::Malformed("frame end octet is not 0xCE".into()));
    }
    match parse_frame(frame.as_slice()) {
        Ok(([], parsed)) => Ok(parsed),
        Ok(_) => Err(CodecError::Malformed("trailing bytes in frame".into())),
        Err(error) => Err(CodecError::Malformed(format!("{error}"))),
    }
}

/// Appends the encoding of `frame` to `out`.
pub fn encode(frame: &AMQPFrame, out: &mut Vec<u8>) {
    let buffer = std::mem::take(out);
    match gen_frame(frame)(WriteContext::from(buffer)) {
        Ok(context) => *out = context.write,
        // Only a frame the server built can get here, and all of them encode.
        Err(error) => tracing::error!(%error, "encoding a frame failed"),
    }
}

/// Appends a method frame.
pub fn method(channel: u16, class: AMQPClass, out: &mut Vec<u8>) {
    encode(&AMQPFrame::Method(channel, class), out);
}

/// Appends a method with content: the method, its header and body frames within `frame_max`.
pub fn content(
    channel: u16,
    class: AMQPClass,
    properties: &AMQPProperties,
    body: &[u8],
    frame_max: usize,
    out: &mut Vec<u8>,
) {
    method(channel, class, out);
    encode(
        &AMQPFrame::Header(
            channel,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: properties.clone(),
            },
        ),
        out,
    );
    for chunk in body.chunks(frame_max.saturating_sub(FRAME_OVERHEAD).max(1)) {
        encode(&AMQPFrame::Body(channel, chunk.to_vec()), out);
    }
}

/// The properties encoded as in a content header (kept in a record header).
pub fn encode_properties(properties: &AMQPProperties) -> Vec<u8> {
    gen_properties(properties)(WriteContext::from(Vec::new()))
        .map(|c| c.write)
        .unwrap_or_default()
}

/// Properties decoded from [`encode_properties`] bytes.
pub fn decode_properties(bytes: &[u8]) -> Option<AMQPProperties> {
    parse_properties(bytes).ok().map(|(_, p)| p)
}
