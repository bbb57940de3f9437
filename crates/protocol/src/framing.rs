//! Protocol v5 framing (spec sections 2.1 to 2.3): after STARTUP, the
//! envelopes (v4-style frames with version byte 5) travel inside outer
//! frames with a CRC24-protected header and a CRC32 trailer, optionally
//! lz4-compressed per frame. All integers of the outer framing are
//! little-endian.
//!
//! A *self-contained* frame holds one or more whole envelopes; an envelope
//! larger than [`MAX_PAYLOAD`] is cut into a sequence of frames that are
//! not self-contained and carry nothing else. Pure functions over bytes, as
//! in `frame.rs`: [`decode_segment`] says "incomplete" with `Ok(None)`,
//! [`Deframer`] turns frames back into envelopes and [`FrameWriter`] packs
//! envelopes into frames straight in an output buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::frame::{envelope_length, Frame, HEADER_LEN};

/// Largest payload of one frame (17 bits of length).
pub const MAX_PAYLOAD: usize = (1 << 17) - 1;
const CRC24_INIT: u32 = 0x0087_5060;
const CRC24_POLY: u32 = 0x0197_4F0B;
/// Cassandra seeds the payload CRC32 with these bytes.
const CRC32_SEED: [u8; 4] = [0xFA, 0x2D, 0x55, 0xCA];
const SELF_CONTAINED_PLAIN: u64 = 1 << 17;
const SELF_CONTAINED_LZ4: u64 = 1 << 34;
const LENGTH_MASK: u64 = (1 << 17) - 1;

/// CRC24 of a frame header's 3 (plain) or 5 (lz4) bytes, as Cassandra's
/// `Crc.crc24`: bytes in wire order, each fed in at bit 16. One table
/// lookup per byte instead of eight shifts.
pub fn crc24(header: &[u8]) -> u32 {
    let mut crc = CRC24_INIT;
    for &b in header {
        crc = (crc << 8) ^ CRC24_TABLE[(((crc >> 16) ^ u32::from(b)) & 0xFF) as usize];
    }
    crc & 0x00FF_FFFF
}

/// `CRC24_TABLE[i]`: the bitwise CRC24 step applied to `i << 16`.
const CRC24_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 16;
        let mut bit = 0;
        while bit < 8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= CRC24_POLY;
            }
            bit += 1;
        }
        table[i] = crc & 0x00FF_FFFF;
        i += 1;
    }
    table
};

/// CRC32 of a frame payload, as Cassandra's `Crc.crc32`: the standard CRC32
/// over four seed bytes followed by the payload.
pub fn crc32(payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(CRC32_OF_SEED);
    h.update(payload);
    h.finalize()
}

/// The CRC32 of [`CRC32_SEED`] alone, where every payload's CRC starts.
const CRC32_OF_SEED: u32 = {
    // Bitwise (reflected polynomial), at compile time.
    let mut crc = !0u32;
    let mut i = 0;
    while i < CRC32_SEED.len() {
        crc ^= CRC32_SEED[i] as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        i += 1;
    }
    !crc
};

fn header_len(lz4: bool) -> usize {
    if lz4 {
        5
    } else {
        3
    }
}

fn read_le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

fn put_le(dst: &mut [u8], mut v: u64) {
    for b in dst {
        *b = v as u8;
        v >>= 8;
    }
}

/// One decoded frame: its payload (decompressed) and whether it holds
/// whole envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub self_contained: bool,
    pub payload: Bytes,
}

/// Decodes one frame from the front of `buf`: `Ok(None)` (nothing consumed)
/// until it is complete, then the frame with its bytes consumed.
///
/// Errors ([`Error::Framing`] for a CRC mismatch, [`Error::Compression`]
/// for a payload that does not inflate to its announced length) leave the
/// stream unusable: the caller closes the connection. Lengths are 17-bit,
/// so no frame asks for more than 128 KiB.
pub fn decode_segment(buf: &mut BytesMut, lz4: bool) -> Result<Option<Segment>> {
    let hlen = header_len(lz4);
    if buf.len() < hlen + 3 {
        return Ok(None);
    }
    let header = read_le(&buf[..hlen]);
    let expected = read_le(&buf[hlen..hlen + 3]) as u32;
    let actual = crc24(&buf[..hlen]);
    if actual != expected {
        return Err(Error::Framing(format!(
            "CRC24 mismatch in frame header: received {expected:06x}, computed {actual:06x}"
        )));
    }
    let payload_len = (header & LENGTH_MASK) as usize;
    let (uncompressed_len, self_contained) = if lz4 {
        (
            ((header >> 17) & LENGTH_MASK) as usize,
            header & SELF_CONTAINED_LZ4 != 0,
        )
    } else {
        (0, header & SELF_CONTAINED_PLAIN != 0)
    };
    let total = hlen + 3 + payload_len + 4;
    if buf.len() < total {
        buf.reserve((total - buf.len()).min(crate::frame::MAX_RESERVE_AHEAD));
        return Ok(None);
    }
    buf.advance(hlen + 3);
    let payload = buf.split_to(payload_len).freeze();
    let expected = buf.get_u32_le();
    let actual = crc32(&payload);
    if actual != expected {
        return Err(Error::Framing(format!(
            "CRC32 mismatch in frame payload: received {expected:08x}, computed {actual:08x}"
        )));
    }
    let payload = if uncompressed_len > 0 {
        let out = lz4_flex::block::decompress(&payload, uncompressed_len)
            .map_err(|e| Error::Compression(format!("lz4 frame payload: {e}")))?;
        if out.len() != uncompressed_len {
            return Err(Error::Compression(format!(
                "lz4 frame payload inflated to {} bytes, header said {uncompressed_len}",
                out.len()
            )));
        }
        Bytes::from(out)
    } else {
        payload
    };
    Ok(Some(Segment {
        self_contained,
        payload,
    }))
}

/// Appends one frame holding `payload` (at most [`MAX_PAYLOAD`] bytes).
/// With lz4 the payload is compressed unless that does not make it
/// smaller, in which case it is sent as is (uncompressed length 0).
pub fn encode_segment(payload: &[u8], self_contained: bool, lz4: bool, dst: &mut BytesMut) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let hlen = header_len(lz4);
    let start = dst.len();
    dst.put_bytes(0, hlen + 3);
    let body_start = dst.len();
    let mut uncompressed_len = 0u64;
    if lz4 && !payload.is_empty() {
        dst.resize(
            body_start + lz4_flex::block::get_maximum_output_size(payload.len()),
            0,
        );
        match lz4_flex::block::compress_into(payload, &mut dst[body_start..]) {
            Ok(n) if n < payload.len() => {
                dst.truncate(body_start + n);
                uncompressed_len = payload.len() as u64;
            }
            _ => {
                dst.truncate(body_start);
                dst.put_slice(payload);
            }
        }
    } else {
        dst.put_slice(payload);
    }
    let len = (dst.len() - body_start) as u64;
    let header = if lz4 {
        len | (uncompressed_len << 17)
            | if self_contained {
                SELF_CONTAINED_LZ4
            } else {
                0
            }
    } else {
        len | if self_contained {
            SELF_CONTAINED_PLAIN
        } else {
            0
        }
    };
    put_le(&mut dst[start..start + hlen], header);
    let crc = u64::from(crc24(&dst[start..start + hlen]));
    put_le(&mut dst[start + hlen..body_start], crc);
    let crc = crc32(&dst[body_start..]);
    dst.put_u32_le(crc);
}

/// Appends `envelope` as frames: one self-contained frame if it fits,
/// else a sequence of frames that are not.
pub fn encode_envelope(envelope: &[u8], lz4: bool, dst: &mut BytesMut) {
    if envelope.len() <= MAX_PAYLOAD {
        encode_segment(envelope, true, lz4, dst);
    } else {
        for chunk in envelope.chunks(MAX_PAYLOAD) {
            encode_segment(chunk, false, lz4, dst);
        }
    }
}

/// Turns v5 frames back into envelopes, with bounded memory: a multi-frame
/// envelope is accumulated only up to its announced length, which must be
/// within the envelope limit.
///
/// A self-contained frame's envelopes are handed out one by one straight
/// from its payload (each body a slice of the read buffer: no copy, no
/// allocation, no queue), so the envelopes a client packs into one frame
/// cost one CRC check between them.
#[derive(Debug)]
pub struct Deframer {
    lz4: bool,
    max_envelope_body: usize,
    /// What is left of the current self-contained frame's payload: whole
    /// envelopes not handed out yet.
    current: Bytes,
    /// The part received so far of an envelope cut into several frames.
    large: BytesMut,
}

impl Deframer {
    pub fn new(lz4: bool, max_envelope_body: usize) -> Self {
        Deframer {
            lz4,
            max_envelope_body,
            current: Bytes::new(),
            large: BytesMut::new(),
        }
    }

    /// The next envelope, decoding frames from `buf` as needed: `Ok(None)`
    /// when more bytes are needed. An error means the connection must be
    /// closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>> {
        loop {
            if !self.current.is_empty() {
                return self.next_envelope().map(Some);
            }
            let Some(segment) = decode_segment(buf, self.lz4)? else {
                return Ok(None);
            };
            if segment.self_contained {
                if !self.large.is_empty() {
                    return Err(Error::Framing(
                        "self-contained frame inside a multi-frame envelope".into(),
                    ));
                }
                self.current = segment.payload;
            } else if let Some(envelope) = self.accumulate(&segment.payload)? {
                return Ok(Some(envelope));
            }
        }
    }

    /// True while part of a multi-frame envelope has arrived.
    pub fn is_mid_envelope(&self) -> bool {
        !self.large.is_empty()
    }

    /// Cuts the first envelope off the current self-contained payload.
    fn next_envelope(&mut self) -> Result<Frame> {
        let payload = &self.current;
        let len = envelope_length(payload, self.max_envelope_body)?.ok_or_else(|| {
            Error::Framing("self-contained frame ends inside an envelope header".into())
        })?;
        let total = HEADER_LEN + len;
        if payload.len() < total {
            return Err(Error::Framing(format!(
                "self-contained frame ends inside an envelope ({} of {} body bytes)",
                payload.len() - HEADER_LEN,
                len
            )));
        }
        // The frame's last envelope takes the payload's reference, so the
        // read buffer is not held past the requests that use it.
        let envelope = if payload.len() == total {
            std::mem::take(&mut self.current)
        } else {
            self.current.split_to(total)
        };
        Ok(envelope_frame(envelope))
    }

    /// Adds one frame of a multi-frame envelope; the envelope once whole.
    fn accumulate(&mut self, part: &[u8]) -> Result<Option<Frame>> {
        if part.is_empty() {
            return Err(Error::Framing(
                "empty frame in a multi-frame envelope".into(),
            ));
        }
        // Check the header (and so the announced length) before storing
        // more than its 9 bytes.
        let head = HEADER_LEN.saturating_sub(self.large.len()).min(part.len());
        self.large.extend_from_slice(&part[..head]);
        let Some(len) = envelope_length(&self.large, self.max_envelope_body)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + len;
        if self.large.len() + part.len() - head > total {
            return Err(Error::Framing(format!(
                "multi-frame envelope of {total} bytes overrun by its frames"
            )));
        }
        self.large.extend_from_slice(&part[head..]);
        if self.large.len() == total {
            let envelope = std::mem::take(&mut self.large).freeze();
            return Ok(Some(envelope_frame(envelope)));
        }
        Ok(None)
    }
}

/// A [`Frame`] over a whole envelope (header checked by the caller); the
/// body is the same buffer advanced past the header.
fn envelope_frame(mut envelope: Bytes) -> Frame {
    let (version, flags, opcode) = (envelope[0], envelope[1], envelope[4]);
    let stream = i16::from_be_bytes([envelope[2], envelope[3]]);
    envelope.advance(HEADER_LEN);
    Frame {
        version,
        flags,
        stream,
        opcode,
        body: envelope,
    }
}

/// Packs envelopes into frames as they are encoded, straight into an
/// output buffer: consecutive envelopes share a self-contained frame up to
/// [`MAX_PAYLOAD`]; a larger envelope gets a sequence of its own.
///
/// Without compression the payload is written in place after a reserved
/// header; with lz4 it gathers in the writer's own buffer and is compressed
/// into the output when the frame closes. Call [`FrameWriter::finish`]
/// before writing the output buffer.
#[derive(Debug)]
pub struct FrameWriter {
    lz4: bool,
    /// Plain: where the open frame's header starts in the output buffer.
    open: Option<usize>,
    /// Lz4: the open frame's uncompressed payload.
    payload: BytesMut,
}

impl FrameWriter {
    pub fn new(lz4: bool) -> Self {
        FrameWriter {
            lz4,
            open: None,
            payload: BytesMut::new(),
        }
    }

    /// Appends the envelope that `write` encodes (into the buffer it is
    /// given, which it must only append to) to the open frame, closing
    /// frames as the payload limit requires.
    pub fn push<F: FnOnce(&mut BytesMut)>(&mut self, dst: &mut BytesMut, write: F) {
        if self.lz4 {
            let start = self.payload.len();
            write(&mut self.payload);
            if self.payload.len() > MAX_PAYLOAD {
                let envelope = self.payload.split_off(start);
                if start > 0 {
                    encode_segment(&self.payload, true, true, dst);
                    self.payload.clear();
                }
                if envelope.len() <= MAX_PAYLOAD {
                    self.payload = envelope;
                } else {
                    encode_envelope(&envelope, true, dst);
                }
            }
            return;
        }
        let open = *self.open.get_or_insert_with(|| {
            let at = dst.len();
            dst.put_bytes(0, 6);
            at
        });
        let start = dst.len();
        write(dst);
        if dst.len() - (open + 6) <= MAX_PAYLOAD {
            return;
        }
        // Over the limit: the envelope leaves the open frame (rare, large
        // results, so a copy is fine).
        let envelope = dst[start..].to_vec();
        dst.truncate(start);
        if start > open + 6 {
            self.close_plain(dst);
        } else {
            dst.truncate(open);
            self.open = None;
        }
        if envelope.len() <= MAX_PAYLOAD {
            self.open = Some(dst.len());
            dst.put_bytes(0, 6);
            dst.put_slice(&envelope);
        } else {
            encode_envelope(&envelope, false, dst);
        }
    }

    /// Closes the open frame, if any.
    pub fn finish(&mut self, dst: &mut BytesMut) {
        if self.lz4 {
            if !self.payload.is_empty() {
                encode_segment(&self.payload, true, true, dst);
                self.payload.clear();
            }
        } else if self.open.is_some() {
            self.close_plain(dst);
        }
    }

    /// Fills in the header of the open (plain) frame and appends its CRC32.
    fn close_plain(&mut self, dst: &mut BytesMut) {
        let Some(open) = self.open.take() else {
            return;
        };
        let len = (dst.len() - open - 6) as u64;
        put_le(&mut dst[open..open + 3], len | SELF_CONTAINED_PLAIN);
        let crc = u64::from(crc24(&dst[open..open + 3]));
        put_le(&mut dst[open + 3..open + 6], crc);
        let crc = crc32(&dst[open + 6..]);
        dst.put_u32_le(crc);
    }

    /// Drops a large idle lz4 buffer (after an unusually large batch).
    pub fn shrink(&mut self, keep: usize) {
        if self.payload.capacity() > keep {
            self.payload = BytesMut::new();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    fn envelope(stream: i16, body_len: usize) -> Vec<u8> {
        Frame {
            version: 5,
            flags: 0,
            stream,
            opcode: 0x07,
            body: Bytes::from((0..body_len).map(|i| (i % 251) as u8).collect::<Vec<_>>()),
        }
        .to_bytes()
        .to_vec()
    }

    /// Values from the Python driver's `compute_crc24` and Cassandra's
    /// `Crc.crc32` (payload of a framed OPTIONS request).
    #[test]
    fn crcs_match_cassandra() {
        // Header of a self-contained 9-byte payload.
        let header = 9u64 | SELF_CONTAINED_PLAIN;
        let mut b = [0u8; 3];
        put_le(&mut b, header);
        assert_eq!(crc24(&b), python_crc24(header, 3));
        assert_eq!(crc24(&[]), CRC24_INIT);
        // The table-driven CRC24 against the bitwise one, for 3- and
        // 5-byte headers (17-bit lengths, both flag positions).
        for len in (0..=MAX_PAYLOAD as u64)
            .step_by(97)
            .chain([MAX_PAYLOAD as u64])
        {
            for header in [len, len | SELF_CONTAINED_PLAIN] {
                put_le(&mut b, header);
                assert_eq!(crc24(&b), python_crc24(header, 3), "{header:x}");
            }
            let header = len | (len.rotate_left(7) & LENGTH_MASK) << 17 | SELF_CONTAINED_LZ4;
            let mut b5 = [0u8; 5];
            put_le(&mut b5, header);
            assert_eq!(crc24(&b5), python_crc24(header, 5), "{header:x}");
        }
        assert_eq!(CRC32_OF_SEED, crc32fast::hash(&CRC32_SEED));
        // zlib.crc32(b"\x05\x00\x00\x00\x05\x00\x00\x00\x00",
        //            zlib.crc32(b"\xfa\x2d\x55\xca"))
        let mut h = crc32fast::Hasher::new();
        h.update(&[0xFA, 0x2D, 0x55, 0xCA, 5, 0, 0, 0, 5, 0, 0, 0, 0]);
        assert_eq!(crc32(&[5, 0, 0, 0, 5, 0, 0, 0, 0]), h.finalize());
    }

    /// The Python driver's algorithm, on an integer read little-endian.
    fn python_crc24(mut data: u64, len: usize) -> u32 {
        let mut crc = CRC24_INIT;
        for _ in 0..len {
            crc ^= ((data & 0xff) as u32) << 16;
            data >>= 8;
            for _ in 0..8 {
                crc <<= 1;
                if crc & 0x100_0000 != 0 {
                    crc ^= CRC24_POLY;
                }
            }
        }
        crc
    }

    #[test]
    fn writer_and_deframer_round_trip() {
        for lz4 in [false, true] {
            let sizes = [
                0,
                10,
                1000,
                MAX_PAYLOAD - 9,
                MAX_PAYLOAD,
                300_000,
                5,
                70_000,
            ];
            let mut out = BytesMut::new();
            let mut w = FrameWriter::new(lz4);
            for (i, n) in sizes.iter().enumerate() {
                let e = envelope(i as i16, *n);
                w.push(&mut out, |d| d.put_slice(&e));
            }
            w.finish(&mut out);
            let mut d = Deframer::new(lz4, 1 << 20);
            // Byte by byte for the first frames: incomplete is not an error.
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for (i, b) in out.iter().enumerate() {
                buf.put_u8(*b);
                if i < 4000 || i % 997 == 0 || i == out.len() - 1 {
                    while let Some(f) = d.decode(&mut buf).unwrap() {
                        got.push(f);
                    }
                }
            }
            assert!(buf.is_empty());
            assert_eq!(got.len(), sizes.len(), "lz4 {lz4}");
            for (i, (f, n)) in got.iter().zip(sizes).enumerate() {
                assert_eq!(f.stream, i as i16);
                assert_eq!(f.body.len(), n);
                assert_eq!(f.to_bytes().to_vec(), envelope(i as i16, n));
            }
        }
    }

    #[test]
    fn corruption_is_detected() {
        for lz4 in [false, true] {
            let mut out = BytesMut::new();
            encode_envelope(&envelope(1, 100), lz4, &mut out);
            let hlen = header_len(lz4);
            for at in [0, hlen, hlen + 3 + 10, out.len() - 1] {
                let mut bad = out.clone();
                bad[at] ^= 0x40;
                let mut d = Deframer::new(lz4, 1 << 20);
                let err = d.decode(&mut bad).unwrap_err();
                assert!(
                    matches!(err, Error::Framing(_) | Error::Compression(_)),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn envelope_over_the_limit_is_refused_before_it_is_stored() {
        let mut out = BytesMut::new();
        encode_envelope(&envelope(1, 300_000), false, &mut out);
        let mut d = Deframer::new(false, 1000);
        assert!(matches!(
            d.decode(&mut out),
            Err(Error::FrameTooLarge { stream: 1, .. })
        ));
        assert!(d.large.len() <= HEADER_LEN);
    }

    #[test]
    fn bad_multi_frame_sequences() {
        // A self-contained frame cut in the middle of an envelope.
        let e = envelope(1, 100);
        let mut out = BytesMut::new();
        encode_segment(&e[..50], true, false, &mut out);
        assert!(matches!(
            Deframer::new(false, 1 << 20).decode(&mut out),
            Err(Error::Framing(_))
        ));
        // A multi-frame envelope interrupted by a self-contained frame.
        let mut out = BytesMut::new();
        encode_segment(&e[..50], false, false, &mut out);
        encode_segment(&envelope(2, 1), true, false, &mut out);
        assert!(matches!(
            Deframer::new(false, 1 << 20).decode(&mut out),
            Err(Error::Framing(_))
        ));
        // Parts that overrun the announced length.
        let mut out = BytesMut::new();
        encode_segment(&e[..50], false, false, &mut out);
        encode_segment(&[0u8; 100], false, false, &mut out);
        assert!(matches!(
            Deframer::new(false, 1 << 20).decode(&mut out),
            Err(Error::Framing(_))
        ));
        // Cut short: waits for more, holding only what arrived.
        let mut out = BytesMut::new();
        encode_segment(&e[..50], false, false, &mut out);
        let mut d = Deframer::new(false, 1 << 20);
        assert!(d.decode(&mut out).unwrap().is_none());
        assert!(d.is_mid_envelope());
    }
}
