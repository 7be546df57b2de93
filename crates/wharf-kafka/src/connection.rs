//! One client connection. The reader parses frames and spawns a handler per request; the
//! writer sends responses strictly in request order. A malformed frame, an unknown API or an
//! unsupported version closes this connection only.
//!
//! Invariant (Kafka's contract): request effects on one connection follow request order.
//! Produce and Fetch may overlap each other (produces reach storage in request order when
//! dispatched; a fetch may park); any other request starts only after every earlier request
//! on the connection has completed, and later requests start only after it has completed.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{
    mpsc, oneshot, watch, Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, Semaphore,
};
use tracing::Instrument;
use wharf_broker::{stage, Broker};

use crate::dispatch::Answer;
use crate::fetch_session::FetchSessions;
use crate::rejection::{ProtocolError, Rejections};
use crate::throttle::Mute;
use crate::{dispatch, versions, ListenerConfig};

pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    config: Arc<ListenerConfig>,
    rejections: Arc<Rejections>,
    sessions: Arc<FetchSessions>,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("connection", %peer);
    async move {
        tracing::debug!("connected");
        let (mut reader, mut writer) = stream.into_split();
        let budget = config.max_in_flight_bytes.clamp(1, u32::MAX as usize);
        let in_flight_bytes = Arc::new(Semaphore::new(budget));
        // Each answer comes with the API it answers and when it was ready (`stage`).
        let (tx, mut rx) =
            mpsc::channel::<(ApiKey, oneshot::Receiver<(Answer, Option<Instant>)>)>(
                config.max_in_flight,
            );
        // Set when the writer gives up (a malformed request, a failed write): the reader stops.
        let closed = Arc::new(Notify::new());
        let writer_closed = closed.clone();
        let writer_rejections = rejections.clone();
        let write_task = tokio::spawn(async move {
            while let Some((api, reply)) = rx.recv().await {
                match reply.await {
                    Ok((Answer::Frame(frame), ready)) => {
                        if let Err(error) = writer.write_all(&frame).await {
                            tracing::debug!(%error, "write failed");
                            break;
                        }
                        response_written(api, ready);
                    }
                    Ok((Answer::Pieces(pieces), ready)) => {
                        if let Err(error) = write_pieces(&mut writer, pieces).await {
                            tracing::debug!(%error, "write failed");
                            break;
                        }
                        response_written(api, ready);
                    }
                    Ok((Answer::Nothing, _)) => {}
                    Ok((Answer::Rejected(error), _)) => {
                        writer_rejections.record(peer.ip(), &error, Instant::now());
                        break;
                    }
                    Ok((Answer::Close, _)) | Err(_) => break,
                }
            }
            let _ = writer.shutdown().await;
            writer_closed.notify_one();
        });
        // Pipelined requests hold it shared, every other request exclusively (see the top).
        let order = Arc::new(RwLock::new(()));
        let mut frames = FrameReader::new();
        let mute = Arc::new(Mute::default());
        loop {
            // A throttled client (quota) is not read from until its throttle time is over.
            tokio::select! {
                () = mute.wait() => {}
                _ = shutdown.changed() => break,
            }
            let frame = tokio::select! {
                f = tokio::time::timeout(config.idle_timeout, frames.next(&mut reader, config.max_frame_bytes)) => f,
                _ = shutdown.changed() => break,
                () = closed.notified() => break,
            };
            let (frame, received) = match frame {
                Err(_) => {
                    tracing::info!(timeout_s = config.idle_timeout.as_secs(), "closing idle or stalled connection");
                    break;
                }
                Ok(Ok(Some(f))) => (f, stage::now()),
                Ok(Ok(None)) => break,
                Ok(Err(FrameError::Io(error))) => {
                    tracing::debug!(%error, "read failed");
                    break;
                }
                Ok(Err(FrameError::Protocol(error))) => {
                    rejections.record(peer.ip(), &error, Instant::now());
                    break;
                }
            };
            let cost = u32::try_from(frame.len().min(budget)).unwrap_or(u32::MAX);
            let request = match parse_header(frame, &mute, Some(peer), received) {
                Ok(r) => r,
                Err(error) => {
                    rejections.record(peer.ip(), &error, Instant::now());
                    break;
                }
            };
            let (reply_tx, reply_rx) = oneshot::channel();
            if tx.send((request.api, reply_rx)).await.is_err() {
                break;
            }
            // Requests hold their bytes of the connection's budget until answered.
            let Ok(bytes_permit) = in_flight_bytes.clone().acquire_many_owned(cost).await else { break };
            let turn = tokio::select! {
                t = Turn::take(&order, request.api) => t,
                _ = shutdown.changed() => break,
                () = closed.notified() => break,
            };
            let reply = dispatch::start(&broker, &sessions, request);
            tokio::spawn(async move {
                let answer = reply.await;
                let _ = reply_tx.send((answer, stage::now()));
                drop(turn);
                drop(bytes_permit);
            });
        }
        drop(tx);
        let _ = write_task.await;
        tracing::debug!("disconnected");
    }
    .instrument(span)
    .await;
}

/// Writes `pieces` in order with vectored writes (at most 64 pieces a call).
async fn write_pieces<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut pieces: Vec<Bytes>,
) -> std::io::Result<()> {
    pieces.retain(|p| !p.is_empty());
    let mut first = 0;
    while first < pieces.len() {
        let slices: Vec<std::io::IoSlice<'_>> = pieces[first..]
            .iter()
            .take(64)
            .map(|p| std::io::IoSlice::new(p))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let len = pieces[first].len();
            if written >= len {
                written -= len;
                first += 1;
            } else {
                pieces[first].advance(written);
                written = 0;
            }
        }
    }
    Ok(())
}

/// Response writes of produces and fetches (`stage` "response_write"): from the answer
/// being ready to its bytes written to the socket, waiting for earlier answers included.
static RESPONSE_WRITE: LazyLock<[metrics::Histogram; 2]> = LazyLock::new(|| {
    [
        stage::produce_histogram("response_write"),
        stage::fetch_histogram("response_write"),
    ]
});

fn response_written(api: ApiKey, ready: Option<Instant>) {
    match api {
        ApiKey::Produce => stage::record_since(&RESPONSE_WRITE[0], ready),
        ApiKey::Fetch => stage::record_since(&RESPONSE_WRITE[1], ready),
        _ => {}
    }
}

/// A request's place in the connection's order, held until the request has completed.
enum Turn {
    Shared { _guard: OwnedRwLockReadGuard<()> },
    Exclusive { _guard: OwnedRwLockWriteGuard<()> },
}

impl Turn {
    /// Waits until a request of `api` may start. The lock is fair, so a request waiting for
    /// exclusive use also holds back every request read after it.
    async fn take(order: &Arc<RwLock<()>>, api: ApiKey) -> Turn {
        if pipelined(api) {
            Turn::Shared {
                _guard: order.clone().read_owned().await,
            }
        } else {
            Turn::Exclusive {
                _guard: order.clone().write_owned().await,
            }
        }
    }
}

/// Requests whose overlap a client cannot observe: produces are handed to storage in
/// request order when dispatched, and a fetch may wait for data that later produces bring.
fn pipelined(api: ApiKey) -> bool {
    matches!(api, ApiKey::Produce | ApiKey::Fetch)
}

/// Reads size-prefixed frames into one growing buffer: no zeroing, fewer reads when
/// requests are pipelined, and an allocation reused once the frames cut from it are dropped.
struct FrameReader {
    buf: BytesMut,
}

const READ_CHUNK: usize = 64 * 1024;

/// Why no frame could be read.
enum FrameError {
    Io(std::io::Error),
    Protocol(ProtocolError),
}

impl FrameReader {
    fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Reads until `want` bytes are buffered; `false` at end of stream.
    async fn fill(
        &mut self,
        reader: &mut tokio::net::tcp::OwnedReadHalf,
        want: usize,
    ) -> Result<bool, std::io::Error> {
        while self.buf.len() < want {
            self.buf.reserve((want - self.buf.len()).max(READ_CHUNK));
            if reader.read_buf(&mut self.buf).await? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The next frame (without its size prefix); `None` at a clean end of stream.
    async fn next(
        &mut self,
        reader: &mut tokio::net::tcp::OwnedReadHalf,
        max: usize,
    ) -> Result<Option<BytesMut>, FrameError> {
        if !self.fill(reader, 4).await.map_err(FrameError::Io)? {
            return if self.buf.is_empty() {
                Ok(None)
            } else {
                Err(FrameError::Protocol(ProtocolError::Truncated {
                    have: self.buf.len(),
                    want: 4,
                }))
            };
        }
        let size = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = match usize::try_from(size) {
            Ok(len) if (8..=max).contains(&len) => len,
            _ => return Err(FrameError::Protocol(ProtocolError::FrameSize { size, max })),
        };
        if !self.fill(reader, 4 + len).await.map_err(FrameError::Io)? {
            return Err(FrameError::Protocol(ProtocolError::Truncated {
                have: self.buf.len() - 4,
                want: len,
            }));
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(len)))
    }
}

/// A request whose header is parsed; `body` is what follows it.
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
    /// The connection's mute: a throttled client's next request waits for it.
    pub mute: Arc<Mute>,
    /// The client's address (none when served without a socket).
    pub peer: Option<SocketAddr>,
    /// When its frame was read whole (`stage`; `None` when stamps are off).
    pub received: Option<Instant>,
}

/// Parses the header of a frame of at least 8 bytes.
fn parse_header(
    frame: BytesMut,
    mute: &Arc<Mute>,
    peer: Option<SocketAddr>,
    received: Option<Instant>,
) -> Result<Request, ProtocolError> {
    let mut bytes = frame.freeze();
    let api_key = i16::from_be_bytes([bytes[0], bytes[1]]);
    let version = i16::from_be_bytes([bytes[2], bytes[3]]);
    let api = ApiKey::try_from(api_key).map_err(|()| ProtocolError::UnknownApi { api_key })?;
    let Some((min, max)) = versions::supported(api) else {
        return Err(ProtocolError::NotImplemented { api_key, api });
    };
    let header_version = if api == ApiKey::ApiVersions && !(min..=max).contains(&version) {
        // An ApiVersions request newer than we know: answer v0 with UNSUPPORTED_VERSION.
        1
    } else if (min..=max).contains(&version) {
        api.request_header_version(version)
    } else {
        return Err(ProtocolError::UnsupportedVersion {
            api,
            version,
            min,
            max,
        });
    };
    let header =
        RequestHeader::decode(&mut bytes, header_version).map_err(|e| ProtocolError::Header {
            api,
            version,
            message: e.to_string(),
        })?;
    Ok(Request {
        api,
        version,
        header,
        body: bytes,
        mute: mute.clone(),
        peer,
        received,
    })
}

/// Serves one request frame (the bytes after the size prefix) without a socket: the whole
/// path a connection runs — header parsing, version checks, dispatch — for fuzzing and tests.
/// `Err` is what would close the connection.
pub async fn handle_frame(broker: &Arc<Broker>, frame: BytesMut) -> Result<Answer, String> {
    if frame.len() < 8 {
        return Err(format!("frame of {} bytes is too short", frame.len()));
    }
    let request =
        parse_header(frame, &Arc::new(Mute::default()), None, None).map_err(|e| e.to_string())?;
    let sessions = Arc::new(FetchSessions::new(crate::fetch_session::DEFAULT_CAPACITY));
    Ok(dispatch::start(broker, &sessions, request).await)
}
