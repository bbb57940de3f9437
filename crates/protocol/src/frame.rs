//! Frame header and body framing (spec sections 1, 2 and 5), as pure
//! functions over byte buffers in the style of mini-redis: decoding says
//! "incomplete" by returning `Ok(None)` and never touches a socket.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};

/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 9;
/// Default body limit: Cassandra's `native_transport_max_frame_size`
/// (16 MiB), well under the spec's 256 MiB ceiling.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// A partial frame's buffer grows by at most this much ahead of the bytes
/// that arrived, so a header claiming a large body reserves nothing until
/// the body actually comes.
pub(crate) const MAX_RESERVE_AHEAD: usize = 64 * 1024;
/// Version byte of a v4 request.
pub const VERSION_REQUEST: u8 = 0x04;
/// Version byte of a v4 response.
pub const VERSION_RESPONSE: u8 = 0x84;

/// A native protocol version this crate speaks. The first frame of a
/// connection sets it for the connection's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ProtocolVersion {
    /// v3, for old clients: no warnings or custom payloads, no partition
    /// key indexes in PREPARED, the types v4 added sent as custom types.
    V3,
    #[default]
    V4,
    /// v5 as Cassandra 4.0 serves it (not beta): after STARTUP, envelopes
    /// travel inside CRC-checked frames (see `framing`).
    V5,
}

impl ProtocolVersion {
    /// The version of a request or response version byte, if served.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b & 0x7F {
            3 => Some(ProtocolVersion::V3),
            4 => Some(ProtocolVersion::V4),
            5 => Some(ProtocolVersion::V5),
            _ => None,
        }
    }

    /// The version number (4 or 5).
    pub fn number(self) -> u8 {
        match self {
            ProtocolVersion::V3 => 3,
            ProtocolVersion::V4 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The version byte of a request.
    pub fn request_byte(self) -> u8 {
        self.number()
    }

    /// The version byte of a response.
    pub fn response_byte(self) -> u8 {
        0x80 | self.number()
    }

    /// True from v5 on: flags of QUERY, EXECUTE and BATCH are `[int]`s,
    /// PREPARE has flags, results carry metadata ids, failures reason maps.
    pub fn is_v5(self) -> bool {
        self >= ProtocolVersion::V5
    }

    /// True for v3: the v4 additions are left out.
    pub fn is_v3(self) -> bool {
        self == ProtocolVersion::V3
    }
}

/// Frame flag bits (spec section 2.2).
pub mod flags {
    /// The body is compressed with the negotiated algorithm.
    pub const COMPRESSION: u8 = 0x01;
    /// Tracing requested (request) or tracing id present (response).
    pub const TRACING: u8 = 0x02;
    /// A `[bytes map]` custom payload precedes the message.
    pub const CUSTOM_PAYLOAD: u8 = 0x04;
    /// A `[string list]` of warnings precedes the message (responses).
    pub const WARNING: u8 = 0x08;
    /// v5: the client opts in to a beta protocol version. Gyre's v5 is not
    /// beta (as in Cassandra 4.0), so the flag is accepted and ignored.
    pub const USE_BETA: u8 = 0x10;
}

/// Message opcodes (spec section 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Error = 0x00,
    Startup = 0x01,
    Ready = 0x02,
    Authenticate = 0x03,
    Options = 0x05,
    Supported = 0x06,
    Query = 0x07,
    Result = 0x08,
    Prepare = 0x09,
    Execute = 0x0A,
    Register = 0x0B,
    Event = 0x0C,
    Batch = 0x0D,
    AuthChallenge = 0x0E,
    AuthResponse = 0x0F,
    AuthSuccess = 0x10,
}

impl TryFrom<u8> for Opcode {
    type Error = Error;

    fn try_from(b: u8) -> Result<Self> {
        Ok(match b {
            0x00 => Opcode::Error,
            0x01 => Opcode::Startup,
            0x02 => Opcode::Ready,
            0x03 => Opcode::Authenticate,
            0x05 => Opcode::Options,
            0x06 => Opcode::Supported,
            0x07 => Opcode::Query,
            0x08 => Opcode::Result,
            0x09 => Opcode::Prepare,
            0x0A => Opcode::Execute,
            0x0B => Opcode::Register,
            0x0C => Opcode::Event,
            0x0D => Opcode::Batch,
            0x0E => Opcode::AuthChallenge,
            0x0F => Opcode::AuthResponse,
            0x10 => Opcode::AuthSuccess,
            other => return Err(Error::protocol(format!("unknown opcode 0x{other:02x}"))),
        })
    }
}

/// Frame-body compression negotiated in STARTUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    /// v4 lz4: a 4-byte big-endian uncompressed length, then an lz4 block.
    Lz4,
}

/// A raw frame: header fields and the (possibly compressed) body.
///
/// The opcode stays a raw byte so that an unknown opcode is still a
/// well-delimited frame whose stream id can be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub version: u8,
    pub flags: u8,
    pub stream: i16,
    pub opcode: u8,
    pub body: Bytes,
}

impl Frame {
    /// True for response frames (direction bit set).
    pub fn is_response(&self) -> bool {
        self.version & 0x80 != 0
    }

    /// Appends the encoded frame to `dst`. Bodies over `i32::MAX` cannot be
    /// represented; callers keep bodies under the frame limit.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(HEADER_LEN + self.body.len());
        dst.put_u8(self.version);
        dst.put_u8(self.flags);
        dst.put_i16(self.stream);
        dst.put_u8(self.opcode);
        dst.put_u32(self.body.len() as u32);
        dst.put_slice(&self.body);
    }

    /// The encoded frame as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_LEN + self.body.len());
        self.encode(&mut b);
        b.freeze()
    }

    /// The protocol version of the version byte (4 unless it is 5).
    pub fn protocol_version(&self) -> ProtocolVersion {
        ProtocolVersion::from_byte(self.version).unwrap_or_default()
    }

    /// Returns the body with compression undone, per the frame's flag.
    ///
    /// A compressed frame on a connection that did not negotiate
    /// compression is a protocol error. In v5 the flag is deprecated and
    /// ignored: compression belongs to the outer frames.
    pub fn decompressed_body(
        &self,
        compression: Compression,
        max_frame_bytes: usize,
    ) -> Result<Bytes> {
        if self.flags & flags::COMPRESSION == 0 || self.protocol_version().is_v5() {
            return Ok(self.body.clone());
        }
        match compression {
            Compression::None => Err(Error::protocol(
                "compressed frame received but no compression was negotiated",
            )),
            Compression::Lz4 => lz4_decompress(&self.body, max_frame_bytes),
        }
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed), the
/// frame when complete (its bytes are consumed), or an error when the header
/// is unacceptable: [`Error::UnsupportedVersion`] as soon as the first four
/// bytes are in (so the reply can carry the stream id), and
/// [`Error::FrameTooLarge`] for a length over `max_frame_bytes` or negative.
/// After an error the buffer is left as it was; the connection cannot be
/// resynchronised and should be closed.
pub fn decode_frame(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Frame>> {
    let Some(body_len) = envelope_length(buf, max_frame_bytes)? else {
        return Ok(None);
    };
    if buf.len() < HEADER_LEN + body_len {
        // Grow with what arrives (the buffer doubles as it fills), never
        // from the header's claim alone: a hostile header costs nothing.
        buf.reserve((HEADER_LEN + body_len - buf.len()).min(MAX_RESERVE_AHEAD));
        return Ok(None);
    }
    let (version, flags, opcode) = (buf[0], buf[1], buf[4]);
    let stream = i16::from_be_bytes([buf[2], buf[3]]);
    buf.advance(HEADER_LEN);
    let body = buf.split_to(body_len).freeze();
    Ok(Some(Frame {
        version,
        flags,
        stream,
        opcode,
        body,
    }))
}

/// The body length of the envelope whose header starts `buf`: `Ok(None)`
/// while fewer than [`HEADER_LEN`] bytes are there, and the errors of
/// [`decode_frame`] (checked as soon as their bytes are in).
pub(crate) fn envelope_length(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let version = buf[0];
    let stream = i16::from_be_bytes([buf[2], buf[3]]);
    if ProtocolVersion::from_byte(version).is_none() {
        return Err(Error::UnsupportedVersion {
            version: version & 0x7F,
            stream,
        });
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
    match usize::try_from(length) {
        Ok(n) if n <= max_frame_bytes => Ok(Some(n)),
        _ => Err(Error::FrameTooLarge {
            length: i64::from(length),
            max: max_frame_bytes,
            stream,
        }),
    }
}

/// Compresses a body in the v4 lz4 format.
pub fn lz4_compress(body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    lz4_compress_into(body, &mut out);
    out.freeze()
}

/// [`lz4_compress`], appending to `dst` without an intermediate buffer.
pub fn lz4_compress_into(body: &[u8], dst: &mut BytesMut) {
    dst.put_u32(body.len() as u32);
    let start = dst.len();
    dst.resize(
        start + lz4_flex::block::get_maximum_output_size(body.len()),
        0,
    );
    match lz4_flex::block::compress_into(body, &mut dst[start..]) {
        Ok(n) => dst.truncate(start + n),
        Err(_) => {
            // Cannot happen with the maximum output size reserved.
            dst.truncate(start);
            dst.put_slice(&lz4_flex::block::compress(body));
        }
    }
}

/// Undoes [`lz4_compress`], refusing to inflate past `max_frame_bytes`.
pub fn lz4_decompress(body: &[u8], max_frame_bytes: usize) -> Result<Bytes> {
    if body.len() < 4 {
        return Err(Error::Compression(
            "lz4 body shorter than its length prefix".into(),
        ));
    }
    let len = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if len > max_frame_bytes {
        return Err(Error::Compression(format!(
            "lz4 body inflates to {len} bytes, over the limit of {max_frame_bytes}"
        )));
    }
    if len == 0 {
        return Ok(Bytes::new());
    }
    let out = lz4_flex::block::decompress(&body[4..], len)
        .map_err(|e| Error::Compression(format!("lz4: {e}")))?;
    if out.len() != len {
        return Err(Error::Compression(format!(
            "lz4 body inflated to {} bytes, header said {len}",
            out.len()
        )));
    }
    Ok(Bytes::from(out))
}

/// A `tokio_util` codec over [`decode_frame`] / [`Frame::encode`]; after
/// [`FrameCodec::enable_v5_framing`] it decodes envelopes out of v5 frames.
#[derive(Debug)]
pub struct FrameCodec {
    max_frame_bytes: usize,
    v5: Option<crate::framing::Deframer>,
}

impl FrameCodec {
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameCodec {
            max_frame_bytes,
            v5: None,
        }
    }

    /// Switches decoding to v5 frames (lz4-compressed ones with `lz4`),
    /// as a v5 connection does after STARTUP.
    pub fn enable_v5_framing(&mut self, lz4: bool) {
        self.v5 = Some(crate::framing::Deframer::new(lz4, self.max_frame_bytes));
    }

    /// True once v5 framing is on.
    pub fn is_framed(&self) -> bool {
        self.v5.is_some()
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>> {
        match &mut self.v5 {
            Some(deframer) => deframer.decode(src),
            None => decode_frame(src, self.max_frame_bytes),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && !self.v5.as_ref().is_some_and(|d| d.is_mid_envelope()) => {
                Ok(None)
            }
            None => Err(Error::Framing(
                "connection closed in the middle of a frame".into(),
            )),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<()> {
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reserves_nothing_for_the_body_it_claims() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x04, 0, 0, 1, 0x07]);
        buf.extend_from_slice(&(15u32 << 20).to_be_bytes());
        buf.extend_from_slice(&[0u8; 100]);
        assert!(decode_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES)
            .expect("test value")
            .is_none());
        assert!(
            buf.capacity() <= 2 * MAX_RESERVE_AHEAD,
            "a 15 MiB claim reserved {} bytes",
            buf.capacity()
        );
        // Over the limit: refused from the header alone.
        let mut huge = BytesMut::new();
        huge.extend_from_slice(&[0x04, 0, 0, 1, 0x07]);
        huge.extend_from_slice(&(256u32 << 20).to_be_bytes());
        assert!(matches!(
            decode_frame(&mut huge, DEFAULT_MAX_FRAME_BYTES),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    fn frame(body: &'static [u8]) -> Frame {
        Frame {
            version: 4,
            flags: 0,
            stream: 7,
            opcode: 0x05,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn round_trip_and_incomplete() {
        let f = frame(b"hello");
        let bytes = f.to_bytes();
        for cut in 0..bytes.len() {
            let mut b = BytesMut::from(&bytes[..cut]);
            assert!(
                decode_frame(&mut b, 1024).expect("test value").is_none(),
                "cut at {cut}"
            );
            assert_eq!(b.len(), cut);
        }
        let mut b = BytesMut::from(&bytes[..]);
        b.extend_from_slice(&[4, 0]);
        assert_eq!(decode_frame(&mut b, 1024).expect("test value"), Some(f));
        assert_eq!(&b[..], &[4, 0]);
    }

    #[test]
    fn unsupported_version_reads_stream() {
        let mut b = BytesMut::from(&[0x42, 0x00, 0x01, 0x02][..]);
        match decode_frame(&mut b, 1024) {
            Err(Error::UnsupportedVersion {
                version: 0x42,
                stream: 0x0102,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let mut b = BytesMut::from(&[0x06, 0x00, 0xff, 0xff][..]);
        assert!(matches!(
            decode_frame(&mut b, 1024),
            Err(Error::UnsupportedVersion {
                version: 6,
                stream: -1
            })
        ));
        let mut b = BytesMut::from(&[0x02, 0x00, 0x00, 0x01][..]);
        assert!(matches!(
            decode_frame(&mut b, 1024),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
        let mut b = BytesMut::from(&[0x03, 0x00, 0x00, 0x01][..]);
        assert!(decode_frame(&mut b, 1024).expect("test value").is_none());
        let mut b = BytesMut::from(&[0x05, 0x00, 0x00, 0x01][..]);
        assert!(decode_frame(&mut b, 1024).expect("test value").is_none());
    }

    #[test]
    fn oversized_and_negative_lengths() {
        let mut b = BytesMut::from(&[4, 0, 0, 3, 7, 0, 0, 4, 1][..]);
        assert!(matches!(
            decode_frame(&mut b, 1024),
            Err(Error::FrameTooLarge { stream: 3, .. })
        ));
        let mut b = BytesMut::from(&[4, 0, 0, 3, 7, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode_frame(&mut b, 1024),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn lz4_round_trip_and_bounds() {
        let body = b"select * from system.local where key = 'local'".repeat(20);
        let c = lz4_compress(&body);
        assert!(c.len() < body.len());
        assert_eq!(
            &lz4_decompress(&c, 1 << 20).expect("test value")[..],
            &body[..]
        );
        assert!(lz4_decompress(&c, 10).is_err());
        assert!(lz4_decompress(&c[..3], 1 << 20).is_err());
        assert!(lz4_decompress(&c[..c.len() - 3], 1 << 20).is_err());
        assert_eq!(&lz4_compress(b"")[..4], &[0, 0, 0, 0]);
        assert!(lz4_decompress(&[0, 0, 0, 0], 10)
            .expect("test value")
            .is_empty());
    }

    #[test]
    fn compressed_flag_without_negotiation_is_an_error() {
        let mut f = frame(b"x");
        f.flags = flags::COMPRESSION;
        assert!(f.decompressed_body(Compression::None, 1024).is_err());
    }
}
