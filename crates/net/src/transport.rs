use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::frame::{Frame, FrameKind};

/// A node's internode address: the socket address of its listener.
pub type NodeAddr = SocketAddr;

/// What a message means, chosen by the caller (gossip, coordinator, ...).
/// `gyre-net` never interprets it; it only keys handlers and stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Verb(pub u16);

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "verb {}", self.0)
    }
}

/// How urgently a message must travel; picks the TCP connection it uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Small messages on the shared small connection; payloads above the
    /// large-message threshold move to the large connection automatically.
    #[default]
    Normal,
    /// Own connection, never queued behind normal traffic (gossip, failure detection).
    Urgent,
    /// Always the large connection (streaming, repair).
    Bulk,
}

/// One message as transports carry it. `from` is filled by the receiving side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeAddr,
    pub kind: FrameKind,
    pub flags: u8,
    pub verb: Verb,
    pub id: u64,
    /// For a request: when its requester stops waiting for the answer, on
    /// this node's clock. A frame carries it as the time left when the
    /// frame is written, and the receiver adds it to the time the bytes
    /// arrived, so clocks of different nodes are never compared.
    pub deadline: Option<Instant>,
    pub payload: Bytes,
}

impl Message {
    /// The frame for this message written at `now`.
    pub fn to_frame(&self, now: Instant) -> Frame {
        Frame {
            kind: self.kind,
            flags: self.flags,
            verb: self.verb,
            id: self.id,
            timeout: self.deadline.map(|d| d.saturating_duration_since(now)),
            payload: self.payload.clone(),
        }
    }

    /// The message of a frame whose bytes arrived at `received`.
    pub fn from_frame(from: NodeAddr, f: Frame, received: Instant) -> Self {
        Message {
            from,
            kind: f.kind,
            flags: f.flags,
            verb: f.verb,
            id: f.id,
            deadline: f.timeout.map(|t| received + t),
            payload: f.payload,
        }
    }
}

/// Per-send metadata for a transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct SendOptions {
    pub priority: Priority,
    /// A queued message not yet written by then is dropped: nobody waits for it any more.
    pub expires_at: Option<Instant>,
}

/// Where a transport delivers every received message. Called on the
/// transport's own tasks, so it must not block.
pub type InboundSink = Arc<dyn Fn(Message) + Send + Sync>;

/// Counters of the transport itself (connections, protocol errors, queues).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportStats {
    pub connections_opened: u64,
    pub connect_failures: u64,
    pub inbound_connections: u64,
    /// Connections closed because the peer sent malformed bytes.
    pub protocol_errors: u64,
    /// Sends refused because the per-connection queue was full.
    pub queue_full: u64,
    /// Queued messages dropped because their deadline passed before they were written.
    pub expired: u64,
    /// Messages dropped by the network itself (simulated drops, partitions, unknown peers).
    pub network_dropped: u64,
}

/// Moves messages between nodes. [`crate::TcpTransport`] is the real one,
/// [`crate::SimNetwork`] runs a cluster inside one process.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// The address peers use to reach this node.
    fn local_addr(&self) -> NodeAddr;
    /// Begins receiving; called once by the messenger that owns the transport.
    fn start(&self, sink: InboundSink) -> Result<()>;
    /// Queues `msg` for `to` without blocking. `Ok` means queued, not delivered.
    fn send(&self, to: NodeAddr, msg: Message, opts: SendOptions) -> Result<()>;
    /// Stops all tasks and connections; later sends fail with `Error::Shutdown`.
    fn shutdown(&self);
    /// Waits until everything `shutdown` stopped has finished (listener closed).
    async fn wait_closed(&self);
    fn stats(&self) -> TransportStats;
    /// Host id a peer announced in its last handshake, if this transport has one.
    fn peer_host_id(&self, _peer: NodeAddr) -> Option<uuid::Uuid> {
        None
    }
}
