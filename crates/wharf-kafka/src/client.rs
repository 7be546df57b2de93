//! A small async Kafka client for admin tools (the `wharf topic` CLI): one connection, one
//! request in flight at a time, every codec from `kafka-protocol`.
//!
//! Invariant: a request is only ever encoded at a version both this client and the broker
//! support, as learnt from the `ApiVersions` exchange made by [`Client::connect`].
//!
//! ```text
//! connect ── ApiVersions v3 ──▶ broker
//!         ◀── error 35 (UNSUPPORTED_VERSION)? ── retry ApiVersions v0
//! send    ── [size: i32 BE][RequestHeader][body] ──▶
//!         ◀── [size: i32 BE][ResponseHeader][body] ──  (correlation id checked)
//! ```

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

/// Largest response frame the client accepts.
pub const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

const CLIENT_ID: &str = "wharf-cli";
const UNSUPPORTED_VERSION: i16 = 35;
const API_VERSIONS_PREFERRED: i16 = 3;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o with the broker failed")]
    Io(#[from] std::io::Error),
    #[error("api_key {api_key} v{version}: encode failed: {message}")]
    Encode {
        api_key: i16,
        version: i16,
        message: String,
    },
    #[error("api_key {api_key} v{version}: decode failed: {message}")]
    Decode {
        api_key: i16,
        version: i16,
        message: String,
    },
    #[error("api_key {api_key}: no version supported by both the broker and this client")]
    UnsupportedApi { api_key: i16 },
    #[error("ApiVersions: broker returned error code {error_code}")]
    ApiVersions { error_code: i16 },
    #[error("correlation_id mismatch: sent {expected}, received {actual}")]
    CorrelationMismatch { expected: i32, actual: i32 },
    #[error("response frame of {size} bytes exceeds the {max} byte limit")]
    FrameTooLarge { size: i64, max: usize },
}

/// Versions the broker advertises for one API.
#[derive(Debug, Clone, Copy)]
struct BrokerRange {
    min: i16,
    max: i16,
}

pub struct Client {
    stream: TcpStream,
    next_correlation_id: i32,
    broker_versions: HashMap<i16, BrokerRange>,
}

impl Client {
    /// Connects and learns the broker's API versions (`ApiVersions` v3, or v0 for old brokers).
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            next_correlation_id: 0,
            broker_versions: HashMap::new(),
        };
        let response = client.api_versions(API_VERSIONS_PREFERRED).await?;
        let response = match response {
            Some(response) => response,
            None => client
                .api_versions(0)
                .await?
                .ok_or(ClientError::ApiVersions {
                    error_code: UNSUPPORTED_VERSION,
                })?,
        };
        if response.error_code != 0 {
            return Err(ClientError::ApiVersions {
                error_code: response.error_code,
            });
        }
        client.broker_versions = response
            .api_keys
            .iter()
            .map(|api| {
                (
                    api.api_key,
                    BrokerRange {
                        min: api.min_version,
                        max: api.max_version,
                    },
                )
            })
            .collect();
        debug!(apis = client.broker_versions.len(), "connected to {addr}");
        Ok(client)
    }

    /// The version [`Client::send`] would use for `key`, or `None` if the broker and this
    /// client share no version of it.
    pub fn version_for(&self, key: ApiKey) -> Option<i16> {
        let broker = self.broker_versions.get(&(key as i16))?;
        let ours = key.valid_versions();
        let max = broker
            .max
            .min(ours.max)
            .min(version_cap(key).unwrap_or(ours.max));
        let min = broker.min.max(ours.min);
        (min <= max).then_some(max)
    }

    /// Sends `request` at the highest mutually supported version and decodes its response.
    pub async fn send<R: Request>(&mut self, request: R) -> Result<R::Response, ClientError> {
        let api_key = R::KEY;
        let key =
            ApiKey::try_from(api_key).map_err(|()| ClientError::UnsupportedApi { api_key })?;
        let version = self
            .version_for(key)
            .ok_or(ClientError::UnsupportedApi { api_key })?;
        let mut body = self.round_trip(key, version, &request).await?;
        R::Response::decode(&mut body, version).map_err(|err| ClientError::Decode {
            api_key,
            version,
            message: err.to_string(),
        })
    }

    /// Returns `None` when the broker rejects `version` with `UNSUPPORTED_VERSION`; it then
    /// answers in the v0 layout, which the v3 decoder cannot read.
    async fn api_versions(
        &mut self,
        version: i16,
    ) -> Result<Option<ApiVersionsResponse>, ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut body = self
            .round_trip(ApiKey::ApiVersions, version, &request)
            .await?;
        let error_code = match body.get(..2) {
            Some(&[high, low]) => Some(i16::from_be_bytes([high, low])),
            _ => None,
        };
        if error_code == Some(UNSUPPORTED_VERSION) && version != 0 {
            debug!(
                version,
                "broker does not support ApiVersions v{version}, retrying v0"
            );
            return Ok(None);
        }
        ApiVersionsResponse::decode(&mut body, version)
            .map(Some)
            .map_err(|err| ClientError::Decode {
                api_key: ApiKey::ApiVersions as i16,
                version,
                message: err.to_string(),
            })
    }

    /// Writes one request frame and reads its response frame; returns the response body.
    async fn round_trip<M: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &M,
    ) -> Result<Bytes, ClientError> {
        let api_key = key as i16;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let encode_error = |message: String| ClientError::Encode {
            api_key,
            version,
            message,
        };

        let header = RequestHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        header
            .encode(&mut frame, key.request_header_version(version))
            .map_err(|err| encode_error(err.to_string()))?;
        body.encode(&mut frame, version)
            .map_err(|err| encode_error(err.to_string()))?;
        let size = i32::try_from(frame.len() - 4)
            .map_err(|_| encode_error("request too large".to_owned()))?;
        frame[..4].copy_from_slice(&size.to_be_bytes());

        debug!(
            api_key,
            api_version = version,
            correlation_id,
            "sending request"
        );
        self.stream.write_all(&frame).await?;

        let size = self.stream.read_i32().await?;
        let len = usize::try_from(size)
            .ok()
            .filter(|len| *len <= MAX_FRAME_BYTES)
            .ok_or(ClientError::FrameTooLarge {
                size: size.into(),
                max: MAX_FRAME_BYTES,
            })?;
        let mut response = vec![0; len];
        self.stream.read_exact(&mut response).await?;
        let mut response = Bytes::from(response);

        let header_version = key.response_header_version(version);
        let header = ResponseHeader::decode(&mut response, header_version).map_err(|err| {
            ClientError::Decode {
                api_key,
                version,
                message: format!("response header: {err}"),
            }
        })?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::CorrelationMismatch {
                expected: correlation_id,
                actual: header.correlation_id,
            });
        }
        Ok(response)
    }
}

/// Highest version of each API whose fields this client's callers know how to fill; APIs not
/// listed use the newest version `kafka-protocol` knows.
fn version_cap(key: ApiKey) -> Option<i16> {
    match key {
        ApiKey::ApiVersions => Some(API_VERSIONS_PREFERRED),
        ApiKey::Metadata => Some(12),
        ApiKey::CreateTopics => Some(7),
        ApiKey::DeleteTopics => Some(6),
        ApiKey::CreatePartitions => Some(3),
        ApiKey::DescribeConfigs => Some(4),
        ApiKey::IncrementalAlterConfigs => Some(1),
        ApiKey::ListOffsets => Some(9),
        _ => None,
    }
}
