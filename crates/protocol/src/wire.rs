//! The notations of spec section 3 (`[short]`, `[string]`, `[bytes]`, ...):
//! a bounds-checked reader over a frame body and the matching writers.
//!
//! Every read checks the remaining length first, so malformed input becomes
//! an [`Error::Protocol`] and never a panic. Writers are infallible: lengths
//! that cannot be represented are truncated (strings at a char boundary) so
//! the body stays self-consistent.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A `[value]` in QUERY/EXECUTE/BATCH: bytes, null (-1) or not set (-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A serialized CQL value (see the value codec).
    Bytes(Bytes),
    /// `null`: length -1.
    Null,
    /// "not set", leaving the existing value unchanged: length -2.
    Unset,
}

/// Cursor over a frame body. Reads consume from the front.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    fn need(&self, n: usize, what: &str) -> Result<()> {
        if self.buf.len() < n {
            return Err(Error::protocol(format!(
                "truncated {what}: need {n} bytes, have {}",
                self.buf.len()
            )));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        self.need(1, "byte")?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        self.need(2, "short")?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn i32(&mut self) -> Result<i32> {
        self.need(4, "int")?;
        Ok(self.buf.get_i32())
    }

    pub(crate) fn i64(&mut self) -> Result<i64> {
        self.need(8, "long")?;
        Ok(self.buf.get_i64())
    }

    pub(crate) fn raw(&mut self, n: usize, what: &str) -> Result<Bytes> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    /// A count that is about to size an allocation: negative counts are
    /// rejected and each element must need at least `min_elem_bytes`, so a
    /// lying count cannot make us allocate more than the body could hold.
    pub(crate) fn count_i32(&mut self, min_elem_bytes: usize, what: &str) -> Result<usize> {
        let n = self.i32()?;
        let n = usize::try_from(n).map_err(|_| Error::protocol(format!("negative {what}: {n}")))?;
        self.check_min(n, min_elem_bytes, what)?;
        Ok(n)
    }

    pub(crate) fn count_u16(&mut self, min_elem_bytes: usize, what: &str) -> Result<usize> {
        let n = usize::from(self.u16()?);
        self.check_min(n, min_elem_bytes, what)?;
        Ok(n)
    }

    pub(crate) fn check_min(&self, n: usize, min_elem_bytes: usize, what: &str) -> Result<()> {
        if n.saturating_mul(min_elem_bytes) > self.buf.len() {
            return Err(Error::protocol(format!(
                "{what} of {n} cannot fit in the {} remaining bytes",
                self.buf.len()
            )));
        }
        Ok(())
    }

    fn utf8(bytes: Bytes, what: &str) -> Result<String> {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::protocol(format!("{what} is not UTF-8")))
    }

    pub(crate) fn string(&mut self) -> Result<String> {
        let n = usize::from(self.u16()?);
        let b = self.raw(n, "[string]")?;
        Self::utf8(b, "[string]")
    }

    pub(crate) fn long_string(&mut self) -> Result<String> {
        let n = self.i32()?;
        let n = usize::try_from(n)
            .map_err(|_| Error::protocol(format!("negative [long string] length {n}")))?;
        let b = self.raw(n, "[long string]")?;
        Self::utf8(b, "[long string]")
    }

    pub(crate) fn string_list(&mut self) -> Result<Vec<String>> {
        let n = self.count_u16(2, "[string list]")?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.string()?);
        }
        Ok(out)
    }

    pub(crate) fn string_map(&mut self) -> Result<BTreeMap<String, String>> {
        let n = self.count_u16(4, "[string map]")?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string()?;
            out.insert(k, v);
        }
        Ok(out)
    }

    pub(crate) fn string_multimap(&mut self) -> Result<BTreeMap<String, Vec<String>>> {
        let n = self.count_u16(4, "[string multimap]")?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string_list()?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// `[bytes]`: any negative length is null.
    pub(crate) fn bytes(&mut self) -> Result<Option<Bytes>> {
        let n = self.i32()?;
        match usize::try_from(n) {
            Ok(n) => Ok(Some(self.raw(n, "[bytes]")?)),
            Err(_) => Ok(None),
        }
    }

    pub(crate) fn short_bytes(&mut self) -> Result<Bytes> {
        let n = usize::from(self.u16()?);
        self.raw(n, "[short bytes]")
    }

    pub(crate) fn value(&mut self) -> Result<Value> {
        let n = self.i32()?;
        match n {
            -1 => Ok(Value::Null),
            -2 => Ok(Value::Unset),
            n if n < 0 => Err(Error::protocol(format!("invalid [value] length {n}"))),
            n => Ok(Value::Bytes(self.raw(n as usize, "[value]")?)),
        }
    }

    pub(crate) fn bytes_map(&mut self) -> Result<BTreeMap<String, Option<Bytes>>> {
        let n = self.count_u16(6, "[bytes map]")?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.bytes()?;
            out.insert(k, v);
        }
        Ok(out)
    }

    pub(crate) fn uuid(&mut self) -> Result<Uuid> {
        let b = self.raw(16, "[uuid]")?;
        let mut a = [0u8; 16];
        a.copy_from_slice(&b);
        Ok(Uuid::from_bytes(a))
    }

    /// `[inet]`: one size byte, 4 or 16 address bytes, an `[int]` port.
    pub(crate) fn inet(&mut self) -> Result<SocketAddr> {
        let n = self.u8()?;
        let ip = self.ip_of_len(usize::from(n))?;
        let port = self.i32()?;
        let port =
            u16::try_from(port).map_err(|_| Error::protocol(format!("invalid port {port}")))?;
        Ok(SocketAddr::new(ip, port))
    }

    pub(crate) fn ip_of_len(&mut self, n: usize) -> Result<IpAddr> {
        match n {
            4 => {
                let b = self.raw(4, "ipv4 address")?;
                Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            16 => {
                let b = self.raw(16, "ipv6 address")?;
                let mut a = [0u8; 16];
                a.copy_from_slice(&b);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            n => Err(Error::protocol(format!("invalid inet address size {n}"))),
        }
    }
}

/// Truncates `s` to at most `max` bytes at a char boundary.
fn clamp_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn put_string(dst: &mut BytesMut, s: &str) {
    let s = clamp_str(s, usize::from(u16::MAX));
    dst.put_u16(s.len() as u16);
    dst.put_slice(s.as_bytes());
}

pub(crate) fn put_long_string(dst: &mut BytesMut, s: &str) {
    let s = clamp_str(s, i32::MAX as usize);
    dst.put_i32(s.len() as i32);
    dst.put_slice(s.as_bytes());
}

pub(crate) fn put_string_list(dst: &mut BytesMut, list: &[String]) {
    let n = list.len().min(usize::from(u16::MAX));
    dst.put_u16(n as u16);
    for s in &list[..n] {
        put_string(dst, s);
    }
}

pub(crate) fn put_string_map(dst: &mut BytesMut, map: &BTreeMap<String, String>) {
    let n = map.len().min(usize::from(u16::MAX));
    dst.put_u16(n as u16);
    for (k, v) in map.iter().take(n) {
        put_string(dst, k);
        put_string(dst, v);
    }
}

pub(crate) fn put_string_multimap(dst: &mut BytesMut, map: &BTreeMap<String, Vec<String>>) {
    let n = map.len().min(usize::from(u16::MAX));
    dst.put_u16(n as u16);
    for (k, v) in map.iter().take(n) {
        put_string(dst, k);
        put_string_list(dst, v);
    }
}

pub(crate) fn put_bytes(dst: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            let b = &b[..b.len().min(i32::MAX as usize)];
            dst.put_i32(b.len() as i32);
            dst.put_slice(b);
        }
        None => dst.put_i32(-1),
    }
}

pub(crate) fn put_short_bytes(dst: &mut BytesMut, b: &[u8]) {
    let b = &b[..b.len().min(usize::from(u16::MAX))];
    dst.put_u16(b.len() as u16);
    dst.put_slice(b);
}

pub(crate) fn put_value(dst: &mut BytesMut, v: &Value) {
    match v {
        Value::Bytes(b) => put_bytes(dst, Some(b)),
        Value::Null => dst.put_i32(-1),
        Value::Unset => dst.put_i32(-2),
    }
}

pub(crate) fn put_bytes_map(dst: &mut BytesMut, map: &BTreeMap<String, Option<Bytes>>) {
    let n = map.len().min(usize::from(u16::MAX));
    dst.put_u16(n as u16);
    for (k, v) in map.iter().take(n) {
        put_string(dst, k);
        put_bytes(dst, v.as_deref());
    }
}

pub(crate) fn put_uuid(dst: &mut BytesMut, u: &Uuid) {
    dst.put_slice(u.as_bytes());
}

pub(crate) fn put_ip(dst: &mut BytesMut, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => dst.put_slice(&a.octets()),
        IpAddr::V6(a) => dst.put_slice(&a.octets()),
    }
}

pub(crate) fn put_inet(dst: &mut BytesMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(_) => dst.put_u8(4),
        IpAddr::V6(_) => dst.put_u8(16),
    }
    put_ip(dst, &addr.ip());
    dst.put_i32(i32::from(addr.port()));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn value_lengths() {
        let mut b = BytesMut::new();
        put_value(&mut b, &Value::Null);
        put_value(&mut b, &Value::Unset);
        put_value(&mut b, &Value::Bytes(Bytes::from_static(b"ab")));
        assert_eq!(
            &b[..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 2, b'a', b'b']
        );
        let mut r = Reader::new(b.freeze());
        assert_eq!(r.value().unwrap(), Value::Null);
        assert_eq!(r.value().unwrap(), Value::Unset);
        assert_eq!(r.value().unwrap(), Value::Bytes(Bytes::from_static(b"ab")));
        assert!(r.value().is_err());
    }

    #[test]
    fn value_below_minus_two_is_rejected() {
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xfd]));
        assert!(r.value().is_err());
    }

    #[test]
    fn lying_counts_do_not_allocate() {
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff, 0, 1]));
        assert!(r.string_list().is_err());
    }

    #[test]
    fn strings_are_clamped_at_char_boundaries() {
        let s = "é".repeat(40_000);
        let mut b = BytesMut::new();
        put_string(&mut b, &s);
        let mut r = Reader::new(b.freeze());
        let back = r.string().unwrap();
        assert_eq!(back.len(), 65534);
    }

    #[test]
    fn inet_round_trip() {
        for addr in ["127.0.0.1:9042", "[::1]:19042"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut b = BytesMut::new();
            put_inet(&mut b, &addr);
            assert_eq!(Reader::new(b.freeze()).inet().unwrap(), addr);
        }
    }
}
