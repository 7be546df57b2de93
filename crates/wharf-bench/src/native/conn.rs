//! One pipelined Kafka connection: requests encoded once ([`Prepared`]) and written with a
//! fresh correlation id each time, responses read back in order. Invariant: the writer numbers
//! requests 0, 1, 2, … and the broker answers in that order, so the reader checks each
//! response's correlation id against its own counter without hearing from the writer.
//!
//! ```text
//! Prepared = head [size: i32][api_key: i16][api_version: i16]   (encoded once)
//!            tail [client_id, tagged fields][request body]       (encoded once)
//! on the wire:  head ++ correlation_id (i32 BE, per send) ++ tail
//! ```

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const CLIENT_ID: &str = "wharf-bench";
/// Largest response frame accepted (a Fetch answers with up to `fetch.max.bytes`).
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Offset of the correlation id in a framed request: size, api_key, api_version.
const CORRELATION_AT: usize = 8;
const SOCKET_BUFFER: usize = 256 * 1024;
/// Longest wait for one answer: Produce asks the broker to answer within 30 s.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A request encoded once, sent any number of times.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub api_key: i16,
    pub version: i16,
    head: Bytes,
    tail: Bytes,
}

impl Prepared {
    /// Encodes `body` at `version` with a request header whose correlation id is left out.
    pub fn encode<R: Request>(body: &R, version: i16) -> anyhow::Result<Prepared> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header
            .encode(&mut frame, R::header_version(version))
            .with_context(|| format!("encoding the header of api_key {} v{version}", R::KEY))?;
        body.encode(&mut frame, version)
            .with_context(|| format!("encoding api_key {} v{version}", R::KEY))?;
        let size = i32::try_from(frame.len() - 4).context("request larger than 2 GiB")?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let mut frame = frame.freeze();
        let head = frame.split_to(CORRELATION_AT);
        let tail = frame.split_off(4);
        Ok(Prepared {
            api_key: R::KEY,
            version,
            head,
            tail,
        })
    }

    /// Bytes on the wire, size prefix included.
    pub fn wire_len(&self) -> usize {
        self.head.len() + 4 + self.tail.len()
    }

    /// The framed request with `correlation_id`, as one buffer (tests and small requests).
    pub fn to_frame(&self, correlation_id: i32) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&correlation_id.to_be_bytes());
        out.extend_from_slice(&self.tail);
        out
    }
}

/// Connects with TCP_NODELAY and splits the stream into its two pipelined halves.
pub async fn connect(bootstrap: &str) -> anyhow::Result<(RequestWriter, ResponseReader)> {
    let stream = TcpStream::connect(bootstrap)
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    Ok((
        RequestWriter {
            stream: BufWriter::with_capacity(SOCKET_BUFFER, write),
            next_correlation_id: 0,
        },
        ResponseReader {
            stream: BufReader::with_capacity(SOCKET_BUFFER, read),
            next_correlation_id: 0,
        },
    ))
}

pub struct RequestWriter {
    stream: BufWriter<OwnedWriteHalf>,
    next_correlation_id: i32,
}

impl RequestWriter {
    /// Queues `request` in the write buffer (large bodies go straight to the socket); call
    /// [`RequestWriter::flush`] before waiting for its answer.
    pub async fn send(&mut self, request: &Prepared) -> anyhow::Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        self.stream.write_all(&request.head).await?;
        self.stream.write_all(&correlation_id.to_be_bytes()).await?;
        self.stream
            .write_all(&request.tail)
            .await
            .with_context(|| format!("sending api_key {} v{}", request.api_key, request.version))?;
        Ok(correlation_id)
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.stream.flush().await.context("flushing requests")
    }
}

pub struct ResponseReader {
    stream: BufReader<OwnedReadHalf>,
    next_correlation_id: i32,
}

impl ResponseReader {
    /// Reads the next response, checks its correlation id, and decodes it as the answer to
    /// `R` at `version`.
    /// Fails when no whole response arrives within [`RESPONSE_TIMEOUT`], so a broker that
    /// stops answering ends the scenario instead of hanging it.
    pub async fn receive<R: Request>(&mut self, version: i16) -> anyhow::Result<R::Response> {
        let frame = tokio::time::timeout(RESPONSE_TIMEOUT, self.read_frame())
            .await
            .with_context(|| {
                format!(
                    "no answer to api_key {} within {RESPONSE_TIMEOUT:?}",
                    R::KEY
                )
            })??;
        let expected = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        decode_response::<R>(frame, version, expected)
    }
}

impl ResponseReader {
    async fn read_frame(&mut self) -> anyhow::Result<Bytes> {
        let size = self
            .stream
            .read_i32()
            .await
            .context("reading a response size")?;
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_FRAME_BYTES)
            .with_context(|| format!("response frame of {size} bytes"))?;
        let mut frame = BytesMut::zeroed(size);
        self.stream
            .read_exact(&mut frame)
            .await
            .context("reading a response")?;
        Ok(frame.freeze())
    }
}

/// Decodes a response frame (size prefix removed) answering request `expected`.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    expected: i32,
) -> anyhow::Result<R::Response> {
    let header_version = <R::Response as HeaderVersion>::header_version(version);
    let header =
        ResponseHeader::decode(&mut frame, header_version).context("decoding a response header")?;
    if header.correlation_id != expected {
        bail!(
            "correlation_id {} where {expected} was due: responses out of order",
            header.correlation_id
        );
    }
    let response = <R::Response as Decodable>::decode(&mut frame, version)
        .with_context(|| format!("decoding the response to api_key {} v{version}", R::KEY))?;
    ensure!(
        frame.is_empty(),
        "{} bytes left after the response to api_key {}",
        frame.len(),
        R::KEY
    );
    Ok(response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Buf;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ApiKey, MetadataRequest, ProduceRequest, ProduceResponse};
    use kafka_protocol::protocol::decode_request_header_from_buffer;

    use super::*;
    use crate::native::{topic_name, METADATA_VERSION, PRODUCE_VERSION};

    #[test]
    fn a_prepared_request_decodes_with_the_correlation_id_of_each_send() {
        let request = MetadataRequest::default().with_topics(None);
        let prepared = Prepared::encode(&request, METADATA_VERSION).unwrap();
        assert_eq!(prepared.api_key, ApiKey::Metadata as i16);
        assert_eq!(prepared.version, METADATA_VERSION);
        for correlation_id in [0, 7, i32::MAX] {
            let mut frame = Bytes::from(prepared.to_frame(correlation_id));
            assert_eq!(frame.len(), prepared.wire_len());
            assert_eq!(frame.get_i32() as usize, frame.len());
            let header = decode_request_header_from_buffer(&mut frame).unwrap();
            assert_eq!(header.correlation_id, correlation_id);
            assert_eq!(header.request_api_version, METADATA_VERSION);
            assert_eq!(header.client_id.as_deref(), Some(CLIENT_ID));
            let decoded = MetadataRequest::decode(&mut frame, METADATA_VERSION).unwrap();
            assert_eq!(decoded, request);
            assert!(frame.is_empty());
        }
    }

    fn produce_response_frame(correlation_id: i32) -> Bytes {
        let response =
            ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                .with_name(topic_name("t"))
                .with_partition_responses(vec![PartitionProduceResponse::default()
                    .with_index(3)
                    .with_base_offset(42)])]);
        let mut frame = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(
                &mut frame,
                <ProduceResponse as HeaderVersion>::header_version(PRODUCE_VERSION),
            )
            .unwrap();
        response.encode(&mut frame, PRODUCE_VERSION).unwrap();
        frame.freeze()
    }

    #[test]
    fn a_response_decodes_when_its_correlation_id_is_due() {
        let response =
            decode_response::<ProduceRequest>(produce_response_frame(5), PRODUCE_VERSION, 5)
                .unwrap();
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!((partition.index, partition.base_offset), (3, 42));
    }

    #[test]
    fn a_response_out_of_order_or_with_trailing_bytes_is_an_error() {
        let error =
            decode_response::<ProduceRequest>(produce_response_frame(6), PRODUCE_VERSION, 5)
                .unwrap_err();
        assert!(error
            .to_string()
            .contains("correlation_id 6 where 5 was due"));
        let mut long = BytesMut::from(&produce_response_frame(5)[..]);
        long.extend_from_slice(&[0]);
        assert!(decode_response::<ProduceRequest>(long.freeze(), PRODUCE_VERSION, 5).is_err());
    }
}
