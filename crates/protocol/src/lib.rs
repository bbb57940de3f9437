//! Gyre's CQL native protocol, versions 3, 4 and 5 (as Cassandra 4.0
//! serves them: v5 is not beta).
//!
//! What it is:
//! - a frame codec as pure functions over bytes ([`decode_frame`] returns
//!   `Ok(None)` until a frame is complete), with v4 lz4 body compression;
//! - v5 framing, also pure: after STARTUP a v5 connection's envelopes
//!   travel in frames with a CRC24-checked header and a CRC32 trailer,
//!   lz4-compressed per frame when negotiated; several envelopes share a
//!   self-contained frame and an envelope over 128 KiB spans several
//!   ([`Deframer`], [`FrameWriter`], [`decode_segment`]);
//! - typed request and response messages ([`Request`], [`Response`]) with
//!   encoders and decoders for each [`ProtocolVersion`] that never panic on
//!   malformed input (v5: `[int]` flags, per-request keyspace,
//!   `now_in_seconds`, result metadata ids, failure reason maps);
//! - a value codec ([`CqlValue`]) for the wire form of every CQL type;
//! - a tokio [`Server`] that handles the connection life cycle (version
//!   negotiation: v3, v4 and v5, OPTIONS, STARTUP, REGISTER, events, back-pressure,
//!   connection limits node-wide and per client IP, request bytes in
//!   flight per node and per client IP, a STARTUP deadline, TLS through
//!   [`ServerTls`], a node-wide request limit answering Overloaded) and
//!   hands QUERY / PREPARE / EXECUTE / BATCH to a [`RequestHandler`],
//!   recording [`ServerMetrics`]; warnings raised while a request runs
//!   ([`client_warn::warn`]) go back in its response.
//!
//! What it is not: it does not parse CQL, knows no schema and executes
//! nothing; prepared-statement ids, paging states and results are the
//! handler's business. Protocols v3, v4 and v5 are spoken: any other
//! version gets the ERROR that makes drivers fall back. A corrupt v5
//! frame gets a protocol ERROR and the connection is closed. With an
//! [`Authenticator`] in the [`ServerConfig`], STARTUP is answered
//! AUTHENTICATE and only AUTH_RESPONSE is served until the authenticator
//! accepts a token (SASL; the mechanism is the authenticator's business).
//! There is no tracing (tracing requests are served untraced).
//!
//! Serving: implement [`RequestHandler`] and run the [`Server`] on a bound
//! listener; keep a clone of `config.events` to push events.
//!
//! ```no_run
//! use std::sync::Arc;
//! use gyre_protocol::*;
//!
//! struct Void;
//!
//! #[async_trait]
//! impl RequestHandler for Void {
//!     async fn handle(&self, _conn: &ConnectionState, _req: HandlerRequest) -> Response {
//!         Response::void()
//!     }
//! }
//!
//! # async fn run() -> gyre_protocol::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9042").await?;
//! let config = ServerConfig::default();
//! let events = config.events.clone();
//! let server = tokio::spawn(Server::run(listener, Arc::new(Void), config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! }));
//! events.send(Event::StatusChange {
//!     change: StatusChangeType::Up,
//!     addr: "127.0.0.2:9042".parse().unwrap(),
//! });
//! # let _ = server.await;
//! # Ok(())
//! # }
//! ```
//!
//! Frames as pure functions over bytes:
//!
//! ```
//! use bytes::BytesMut;
//! use gyre_protocol::{decode_frame, Compression, Request, RequestFrame, DEFAULT_MAX_FRAME_BYTES};
//!
//! let frame = RequestFrame::new(1, Request::Options).to_frame(Compression::None);
//! let mut buf = BytesMut::from(&frame.to_bytes()[..]);
//! let decoded = decode_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
//! let request = RequestFrame::decode(&decoded, Compression::None, DEFAULT_MAX_FRAME_BYTES).unwrap();
//! assert_eq!(request.request, Request::Options);
//! ```

mod budget;
pub mod client_warn;
pub mod cqlshrc;
mod error;
mod frame;
mod framing;
mod limit;
mod metrics;
mod request;
mod response;
mod server;
mod tls;
mod types;
mod value;
mod wire;

pub use async_trait::async_trait;
pub use error::{Error, Result};
pub use frame::{
    decode_frame, flags, lz4_compress, lz4_compress_into, lz4_decompress, Compression, Frame,
    FrameCodec, Opcode, ProtocolVersion, DEFAULT_MAX_FRAME_BYTES, HEADER_LEN, VERSION_REQUEST,
    VERSION_RESPONSE,
};
pub use framing::{
    crc24, crc32, decode_segment, encode_envelope, encode_segment, Deframer, FrameWriter, Segment,
    MAX_PAYLOAD,
};
pub use metrics::{
    Histogram, HistogramSnapshot, ServerMetrics, ServerMetricsSnapshot, BUCKET_BOUNDS_MICROS,
};
pub use request::{
    Batch, BatchStatement, BatchStatementKind, BatchType, Execute, Prepare, Query, QueryParameters,
    Request, RequestFrame, Values,
};
pub use response::{
    CqlError, CqlResult, ErrorKind, Event, EventType, Prepared, PreparedMetadata, Response,
    ResponseFrame, Rows, RowsMetadata, SchemaChange, SchemaChangeTarget, SchemaChangeType,
    StatusChangeType, TopologyChangeType, WriteType,
};
pub use server::{
    supported_options, Authenticator, ConnectionState, EventSender, HandlerRequest, RequestHandler,
    Server, ServerConfig,
};
pub use tls::{
    client_config as tls_client_config, client_config_from_files as tls_client_config_from_files,
    ClientAuth, ServerTls,
};
pub use types::{ColumnSpec, ColumnType, Consistency, DURATION_CLASS, VECTOR_CLASS};
pub use value::{
    date_from_days, date_to_days, CqlDecimal, CqlDuration, CqlValue, CqlVarint, DATE_EPOCH,
};
pub use wire::Value;
