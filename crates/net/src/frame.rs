//! Wire format. Pure functions over bytes so they can be tested without sockets.
//!
//! ```text
//! 0      4        5     6      7      9          17        21             21+len   25+len
//! | len  | version| kind| flags| verb | request id | timeout | payload ...  | crc32  |
//! ```
//! All integers are big-endian. `len` is the payload length; the CRC32 covers
//! every byte from `version` to the end of the payload. `timeout` is how many
//! microseconds the requester still waits for the answer when the frame is
//! written (0: no deadline, as for responses and one-way messages). It is
//! relative so that clock skew between nodes does not matter: the receiver
//! turns it into a deadline of its own clock when the bytes arrive.
//!
//! Version 2 added `timeout`; a node speaking version 1 is refused at the
//! handshake with [`Error::UnsupportedVersion`] (every node of a cluster runs
//! the same build).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::transport::Verb;

/// Protocol version written in every frame header and the handshake.
pub const PROTOCOL_VERSION: u8 = 2;
/// Bytes before the payload.
pub const FRAME_HEADER_LEN: usize = 21;
/// Bytes after the payload (the CRC32).
pub const FRAME_TRAILER_LEN: usize = 4;
/// Default cap on one encoded frame.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;
/// Response flag: the payload is a UTF-8 error message, not a result.
pub const FLAG_ERROR: u8 = 0b0000_0001;
/// Request flag: the payload's last 16 bytes are the trace session id of
/// the client request it serves (see `gyre_common::trace`).
pub const FLAG_TRACED: u8 = 0b0000_0010;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Handshake = 0,
    Request = 1,
    Response = 2,
    OneWay = 3,
}

impl FrameKind {
    fn from_u8(b: u8) -> Result<Self> {
        Ok(match b {
            0 => FrameKind::Handshake,
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::OneWay,
            other => return Err(Error::Malformed(format!("unknown frame kind {other}"))),
        })
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub flags: u8,
    pub verb: Verb,
    pub id: u64,
    /// For a request: how long the requester still waits for its answer,
    /// at microsecond resolution, at most about 71 minutes.
    pub timeout: Option<Duration>,
    pub payload: Bytes,
}

/// The header's encoding of `timeout`: microseconds, saturating, never 0
/// for a deadline (0 means none).
fn timeout_micros(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => 0,
        Some(t) => u32::try_from(t.as_micros()).unwrap_or(u32::MAX).max(1),
    }
}

/// Size of the encoded frame for a payload of `payload_len` bytes.
pub fn encoded_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len + FRAME_TRAILER_LEN
}

/// Header and trailer of `frame`, so a writer can send a big payload without copying it.
pub fn encode_parts(frame: &Frame) -> ([u8; FRAME_HEADER_LEN], [u8; FRAME_TRAILER_LEN]) {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let len = u32::try_from(frame.payload.len()).unwrap_or(u32::MAX);
    header[0..4].copy_from_slice(&len.to_be_bytes());
    header[4] = PROTOCOL_VERSION;
    header[5] = frame.kind as u8;
    header[6] = frame.flags;
    header[7..9].copy_from_slice(&frame.verb.0.to_be_bytes());
    header[9..17].copy_from_slice(&frame.id.to_be_bytes());
    header[17..21].copy_from_slice(&timeout_micros(frame.timeout).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[4..]);
    crc.update(&frame.payload);
    (header, crc.finalize().to_be_bytes())
}

/// Appends the encoded `frame` to `dst`.
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) {
    let (header, trailer) = encode_parts(frame);
    dst.reserve(encoded_len(frame.payload.len()));
    dst.put_slice(&header);
    dst.put_slice(&frame.payload);
    dst.put_slice(&trailer);
}

/// Decodes one frame from the front of `buf`.
///
/// `Ok(None)` means "incomplete, read more". Checks are ordered so that a bad
/// length or version fails as soon as its bytes arrive, before buffering a
/// whole (possibly huge) frame.
pub fn decode_frame(buf: &mut BytesMut, max_frame_size: usize) -> Result<Option<Frame>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let total = encoded_len(len);
    if total > max_frame_size {
        return Err(Error::FrameTooLarge {
            size: total,
            max: max_frame_size,
        });
    }
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[4] != PROTOCOL_VERSION {
        return Err(Error::UnsupportedVersion(buf[4]));
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let bytes = buf.split_to(total).freeze();
    let body_end = total - FRAME_TRAILER_LEN;
    let expected = u32::from_be_bytes([
        bytes[body_end],
        bytes[body_end + 1],
        bytes[body_end + 2],
        bytes[body_end + 3],
    ]);
    let actual = crc32fast::hash(&bytes[4..body_end]);
    if expected != actual {
        return Err(Error::BadChecksum { expected, actual });
    }
    let mut header = &bytes[5..FRAME_HEADER_LEN];
    let kind = FrameKind::from_u8(header.get_u8())?;
    let flags = header.get_u8();
    let verb = Verb(header.get_u16());
    let id = header.get_u64();
    let timeout = match header.get_u32() {
        0 => None,
        us => Some(Duration::from_micros(u64::from(us))),
    };
    Ok(Some(Frame {
        kind,
        flags,
        verb,
        id,
        timeout,
        payload: bytes.slice(FRAME_HEADER_LEN..body_end),
    }))
}

/// Which of a peer's connections a frame travels on. Separate connections keep
/// big payloads (streaming) and bursts from delaying small or urgent messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionClass {
    Urgent = 0,
    Small = 1,
    Large = 2,
}

/// First frame on every connection, both ways: who is speaking and for which class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub host_id: Uuid,
    /// The sender's internode listen address (not the socket's ephemeral one).
    pub addr: SocketAddr,
    pub class: ConnectionClass,
    /// The sender's cluster name: a connection between clusters is
    /// refused before any message crosses it.
    pub cluster: String,
}

/// Longest cluster name a handshake carries.
const MAX_CLUSTER_NAME: usize = 1024;

impl Handshake {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(40);
        b.put_slice(self.host_id.as_bytes());
        b.put_u8(self.class as u8);
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                b.put_u8(4);
                b.put_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                b.put_u8(6);
                b.put_slice(&ip.octets());
            }
        }
        b.put_u16(self.addr.port());
        let name = &self.cluster.as_bytes()[..self.cluster.len().min(MAX_CLUSTER_NAME)];
        b.put_u16(name.len() as u16);
        b.put_slice(name);
        b.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<Self> {
        let short = || Error::Malformed("short handshake".into());
        if b.remaining() < 18 {
            return Err(short());
        }
        let mut id = [0u8; 16];
        b.copy_to_slice(&mut id);
        let class = match b.get_u8() {
            0 => ConnectionClass::Urgent,
            1 => ConnectionClass::Small,
            2 => ConnectionClass::Large,
            other => {
                return Err(Error::Malformed(format!(
                    "unknown connection class {other}"
                )))
            }
        };
        let ip = match b.get_u8() {
            4 if b.remaining() >= 6 => {
                let mut o = [0u8; 4];
                b.copy_to_slice(&mut o);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            6 if b.remaining() >= 18 => {
                let mut o = [0u8; 16];
                b.copy_to_slice(&mut o);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            4 | 6 => return Err(short()),
            other => return Err(Error::Malformed(format!("unknown address family {other}"))),
        };
        let port = b.get_u16();
        if b.remaining() < 2 {
            return Err(short());
        }
        let n = b.get_u16() as usize;
        if n > MAX_CLUSTER_NAME || b.remaining() != n {
            return Err(Error::Malformed("bad cluster name in handshake".into()));
        }
        let cluster = String::from_utf8(b[..n].to_vec())
            .map_err(|_| Error::Malformed("cluster name is not UTF-8".into()))?;
        Ok(Handshake {
            host_id: Uuid::from_bytes(id),
            addr: SocketAddr::new(ip, port),
            class,
            cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sample(len: usize) -> Frame {
        Frame {
            kind: FrameKind::Request,
            flags: FLAG_ERROR,
            verb: Verb(513),
            id: 0x0102_0304_0506_0708,
            timeout: Some(Duration::from_micros(1_500_000)),
            payload: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
        }
    }

    #[test]
    fn roundtrip_and_incomplete_at_every_prefix() {
        let frame = sample(100);
        let mut enc = BytesMut::new();
        encode_frame(&frame, &mut enc);
        assert_eq!(enc.len(), encoded_len(100));
        for cut in 0..enc.len() {
            let mut partial = BytesMut::from(&enc[..cut]);
            assert!(
                decode_frame(&mut partial, 1 << 20).unwrap().is_none(),
                "prefix {cut}"
            );
        }
        // Two frames back to back decode one at a time.
        let mut two = enc.clone();
        two.extend_from_slice(&enc);
        assert_eq!(decode_frame(&mut two, 1 << 20).unwrap().unwrap(), frame);
        assert_eq!(decode_frame(&mut two, 1 << 20).unwrap().unwrap(), frame);
        assert!(two.is_empty());
    }

    #[test]
    fn timeout_roundtrips_saturates_and_none_is_zero() {
        let decode = |timeout| {
            let mut enc = BytesMut::new();
            encode_frame(
                &Frame {
                    timeout,
                    ..sample(1)
                },
                &mut enc,
            );
            decode_frame(&mut enc, 1 << 20).unwrap().unwrap().timeout
        };
        assert_eq!(decode(None), None);
        let t = Some(Duration::from_millis(2_000));
        assert_eq!(decode(t), t);
        // Sub-microsecond remainders are cut; a deadline never becomes "none".
        assert_eq!(decode(Some(Duration::ZERO)), Some(Duration::from_micros(1)));
        assert_eq!(
            decode(Some(Duration::from_secs(1 << 40))),
            Some(Duration::from_micros(u64::from(u32::MAX)))
        );
    }

    #[test]
    fn parts_match_whole_encoding() {
        let frame = sample(70_000);
        let (h, t) = encode_parts(&frame);
        let mut enc = BytesMut::new();
        encode_frame(&frame, &mut enc);
        assert_eq!(&enc[..FRAME_HEADER_LEN], &h);
        assert_eq!(&enc[enc.len() - 4..], &t);
    }

    #[test]
    fn rejects_bad_crc_version_and_size() {
        let mut enc = BytesMut::new();
        encode_frame(&sample(10), &mut enc);
        let mut bad = enc.clone();
        bad[FRAME_HEADER_LEN + 3] ^= 0xff;
        assert!(matches!(
            decode_frame(&mut bad, 1 << 20),
            Err(Error::BadChecksum { .. })
        ));

        let mut bad = enc.clone();
        bad[4] = 99;
        assert!(matches!(
            decode_frame(&mut bad, 1 << 20),
            Err(Error::UnsupportedVersion(99))
        ));
        // The version is rejected as soon as its byte arrives.
        let mut bad = BytesMut::from(&bad[..5]);
        assert!(matches!(
            decode_frame(&mut bad, 1 << 20),
            Err(Error::UnsupportedVersion(99))
        ));

        let mut huge = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode_frame(&mut huge, 1 << 20),
            Err(Error::FrameTooLarge { .. })
        ));
        let mut small_max = enc.clone();
        assert!(matches!(
            decode_frame(&mut small_max, 20),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn unknown_kind_with_valid_crc_is_malformed() {
        let mut enc = BytesMut::new();
        encode_frame(&sample(3), &mut enc);
        enc[5] = 42;
        let crc = crc32fast::hash(&enc[4..enc.len() - 4]);
        let n = enc.len();
        enc[n - 4..].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_frame(&mut enc, 1 << 20),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let len = rng.gen_range(0..64);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if rng.gen_bool(0.5) && junk.len() > 4 {
                junk[4] = PROTOCOL_VERSION;
                junk[0..4].copy_from_slice(&(rng.gen_range(0u32..40)).to_be_bytes());
            }
            let mut buf = BytesMut::from(&junk[..]);
            let _ = decode_frame(&mut buf, 1 << 16);
            let _ = Handshake::decode(&junk);
        }
    }

    #[test]
    fn handshake_roundtrip_v4_v6() {
        for addr in ["127.0.0.2:7000", "[::1]:9042"] {
            let hs = Handshake {
                host_id: Uuid::new_v4(),
                addr: addr.parse().unwrap(),
                class: ConnectionClass::Large,
                cluster: "Test Cluster".into(),
            };
            assert_eq!(Handshake::decode(&hs.encode()).unwrap(), hs);
            let enc = hs.encode();
            assert!(Handshake::decode(&enc[..enc.len() - 1]).is_err());
        }
    }
}
