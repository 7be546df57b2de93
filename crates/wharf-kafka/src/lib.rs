//! The Kafka front end: listener, connections, framing, one file per API, the error-code
//! mapping and the ApiVersions table. The only crate that uses `kafka-protocol`.
//!
//! # Layout
//! - `listener`: accepts connections (bounded), hands each to `connection`.
//! - `connection`: frames in, requests served in request order (Produce and Fetch may
//!   overlap each other, nothing else overlaps), responses out in request order.
//! - `dispatch`: api key and version → `api/<name>.rs`.
//! - `versions`: the API versions Wharf implements, and so advertises.
//! - `rejection`: requests refused before a handler runs: counted, summarised in the log.
//! - `errors`: `BrokerError` → Kafka error code, one exhaustive match.
//! - `client`: a small protocol client: one connection, one request in flight.
//! - `admin`: the CLI's typed admin API over `client` (topics, groups, transactions, quotas).
//!
//! ```text
//!  socket ─► reader: frame, header, wait for its turn ─► spawn handler ─► oneshot ─┐
//!                      │ (in order)                                                 ▼
//!                      └──────────────────────────────────► writer: await replies in
//!                                                           request order ─► socket
//! ```

pub mod admin;
mod api;
pub mod client;
mod codec;
mod connection;
mod dispatch;
mod errors;
mod fetch_session;
mod listener;
mod rejection;
mod throttle;
mod versions;

pub use client::{Client, ClientError};
pub use connection::handle_frame;
pub use dispatch::Answer;
pub use listener::{serve, ListenerConfig};
pub use rejection::ProtocolError;
pub use versions::SUPPORTED_APIS;
