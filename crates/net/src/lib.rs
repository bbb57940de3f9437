//! Gyre's internode messaging.
//!
//! A [`Messenger`] per node sends requests (matched to their responses by
//! request id, each with its own timeout) and one-way messages to other nodes,
//! and routes what it receives to per-verb [`Handler`]s. Payloads are opaque
//! bytes plus a caller-chosen [`Verb`]: gossip, the coordinator and streaming
//! serialize their own messages.
//!
//! Two transports sit behind the [`Transport`] trait:
//! - [`TcpTransport`]: length-prefixed frames with a protocol version byte and
//!   a CRC32 ([`frame`](decode_frame) codec), a handshake carrying the sender's
//!   listen address, host id and version, up to three one-way connections per
//!   peer (urgent, small, large) so big payloads never delay small ones,
//!   bounded send queues, and reconnection with exponential backoff. A
//!   request frame carries the time its requester still waits, which the
//!   receiver turns into [`Inbound::deadline`] (no clock is compared
//!   between nodes), so a busy node can skip requests nobody waits for.
//!   Malformed input closes that one connection with a logged error.
//! - [`SimNetwork`]: an in-process network for whole-cluster tests, with seeded
//!   message drops, delays, partitions and healing.
//!
//! Any messenger also applies runtime [`FaultRules`] (partition peers, drop a
//! fraction, add latency) to both directions, for chaos testing, and keeps
//! per-verb counters ([`Messenger::stats`]).
//!
//! It is not a serialization layer, not a failure detector (gossip decides
//! who is up), and not a reliable queue: messages can be lost (peer down,
//! queue full, expired before being written, fault rules) and requests then
//! time out. Limits: one frame is at most [`NetConfig::max_frame_size`]
//! (16 MiB by default) and is held whole in memory on both ends; there is no
//! compression; only protocol version 2 is spoken, so a version mismatch
//! closes the connection rather than negotiating down.
//!
//! With [`NetConfig::tls`] ([`InternodeTls`]), every connection is mutual TLS
//! against the cluster CA, each certificate checked against the address its
//! holder speaks for; without it, a peer is held to the address it connects
//! from. Either way the handshake's cluster name must match.
//!
//! ```no_run
//! # async fn demo() -> gyre_net::Result<()> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use gyre_net::{Messenger, NetConfig, Verb};
//!
//! const ECHO: Verb = Verb(1);
//! let a = Messenger::bind_tcp(NetConfig::new("127.0.0.1:0".parse().unwrap())).await?;
//! let b = Messenger::bind_tcp(NetConfig::new("127.0.0.2:0".parse().unwrap())).await?;
//! b.register(ECHO, |msg: gyre_net::Inbound| {
//!     if let Some(r) = msg.responder {
//!         let _ = r.respond(msg.payload);
//!     }
//! });
//! let reply = a.request(b.local_addr(), ECHO, Bytes::from("hi"), Duration::from_secs(1)).await?;
//! assert_eq!(reply, "hi");
//! # Ok(())
//! # }
//! ```

mod error;
mod faults;
mod frame;
mod messenger;
mod sim;
mod stats;
mod tcp;
mod tls;
mod transport;

pub use error::{Error, Result};
pub use faults::{FaultRules, LinkFaults};
pub use frame::{
    decode_frame, encode_frame, encode_parts, encoded_len, ConnectionClass, Frame, FrameKind,
    Handshake, DEFAULT_MAX_FRAME_SIZE, FLAG_ERROR, FRAME_HEADER_LEN, FRAME_TRAILER_LEN,
    PROTOCOL_VERSION,
};
pub use messenger::{Handler, Inbound, Messenger, Responder};
pub use sim::{SimNetwork, SimStats, SimTransport};
pub use stats::{NetStats, VerbStats};
pub use tcp::{NetConfig, TcpTransport};
pub use tls::InternodeTls;
pub use transport::{
    InboundSink, Message, NodeAddr, Priority, SendOptions, Transport, TransportStats, Verb,
};
