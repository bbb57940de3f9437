use std::net::SocketAddr;
use std::time::Duration;

use crate::transport::Verb;

/// Everything that can go wrong in `gyre-net`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("request {verb} to {peer} timed out after {timeout:?}")]
    Timeout {
        peer: SocketAddr,
        verb: Verb,
        timeout: Duration,
    },
    #[error("send queue to {peer} is full")]
    QueueFull { peer: SocketAddr },
    #[error("payload of {size} bytes exceeds the maximum frame size of {max} bytes")]
    PayloadTooLarge { size: usize, max: usize },
    #[error("{peer} answered with an error: {message}")]
    Remote { peer: SocketAddr, message: String },
    #[error("messenger is shut down")]
    Shutdown,
    #[error("handshake with {peer} failed: {reason}")]
    Handshake { peer: SocketAddr, reason: String },
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge { size: usize, max: usize },
    #[error(
        "unsupported internode protocol version {0} (this node speaks version {v}; every node of a cluster must run the same Gyre build)",
        v = crate::frame::PROTOCOL_VERSION
    )]
    UnsupportedVersion(u8),
    #[error("frame checksum mismatch (expected {expected:#010x}, got {actual:#010x})")]
    BadChecksum { expected: u32, actual: u32 },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("connection closed mid-frame")]
    Truncated,
    #[error("internode TLS: {0}")]
    Tls(String),
    #[error("invalid fault rules: {0}")]
    InvalidFaults(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// True for errors caused by bytes a peer sent us that break the protocol.
    pub fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            Error::FrameTooLarge { .. }
                | Error::UnsupportedVersion(_)
                | Error::BadChecksum { .. }
                | Error::Malformed(_)
                | Error::Truncated
                | Error::Handshake { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
