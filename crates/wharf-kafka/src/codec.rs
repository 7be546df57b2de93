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
