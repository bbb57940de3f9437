//! The crate's one error type.

/// Everything that can go wrong while decoding, encoding or serving frames.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer violated the protocol: malformed body, unknown opcode, bad
    /// flag combination, request out of order. Maps to CQL error 0x000A.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The frame header names a protocol version other than 3, 4 or 5.
    /// `stream` is read from the raw header so the error reply can carry it.
    #[error(
        "Invalid or unsupported protocol version ({version}); supported versions are (3/v3, 4/v4, 5/v5)"
    )]
    UnsupportedVersion { version: u8, stream: i16 },
    /// The header announces a body larger than the configured limit (or a
    /// negative length). The stream cannot be resynchronised afterwards.
    #[error("frame body of {length} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        length: i64,
        max: usize,
        stream: i16,
    },
    /// A v5 frame is corrupt (CRC24 of its header or CRC32 of its payload
    /// wrong) or its payload does not hold whole envelopes as its flag
    /// says. The byte stream cannot be trusted afterwards.
    #[error("corrupt frame: {0}")]
    Framing(String),
    /// A compressed body could not be decompressed.
    #[error("compression error: {0}")]
    Compression(String),
    /// A CQL value does not match the type it is decoded as.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// A TLS certificate, key or CA could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Socket I/O failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn protocol(msg: impl Into<String>) -> Self {
        Error::Protocol(msg.into())
    }

    pub(crate) fn value(msg: impl Into<String>) -> Self {
        Error::InvalidValue(msg.into())
    }
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;
