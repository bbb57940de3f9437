//! Key encodings for the storage engine.
//!
//! Partition keys are the bytes drivers hash: a single column's CQL value
//! bytes, or Cassandra's composite layout ([`gyre_common::compose_partition_key`]).
//!
//! Clustering keys are byte-comparable: comparing encoded keys as bytes
//! orders them as Cassandra orders the values, DESC components are the ASC
//! encoding with every byte inverted, and every component's encoding is
//! prefix-free, so a key is the concatenation of its components and
//! [`gyre_common::Slice::prefix`] selects "all rows under this prefix".
//!
//! Per type (input and output of decode are CQL native value bytes):
//! - tinyint, smallint, int, bigint, timestamp, time: big endian with the
//!   sign bit flipped; date (unsigned days, epoch at 2^31) and boolean as is.
//! - varint: a 4-byte header (`0x8000_0000 + len` when non-negative,
//!   `0x7fff_ffff - len` when negative), then the minimal two's-complement
//!   bytes; longer positives are larger, longer negatives smaller.
//! - float, double: IEEE bits, positive values with the sign bit flipped,
//!   negative values fully inverted. Order as Java's `Float.compare`:
//!   -inf < ... < -0.0 < 0.0 < ... < +inf < NaN; every NaN is stored as the
//!   canonical quiet NaN (so a NaN payload does not round-trip).
//! - text, ascii, blob, inet: the bytes with 0x00 escaped as 0x00 0xFF, then
//!   0x00 0x00 (unsigned lexicographic order, as Cassandra's byte types).
//! - uuid: Cassandra's `UUIDType`: the version byte, then for version 1 the
//!   timestamp-ordered high half (else the high half as is), then the low
//!   half unsigned.
//! - timeuuid: `TimeUUIDType`: timestamp-ordered high half, then the low
//!   half compared as signed bytes (each byte xor 0x80).
//! - decimal: a sign marker (0x40 negative, 0x80 zero, 0xc0 positive), the
//!   decimal exponent `e` of `0.d1d2.. x 10^e` (8 bytes, sign-flipped), the
//!   significant digits as ASCII and a 0x00 terminator; negatives invert all
//!   but the marker. Decoding gives the same value with trailing zeros of
//!   the unscaled value removed (1.50 decodes as 1.5), which Cassandra's
//!   `DecimalType` treats as equal anyway.
//! - frozen list/set/map: per element a 0x01 then the element(s) (a map
//!   entry's key then value), then 0x00: element-wise, then shorter first.
//! - tuple: per field 0x02 and the value, or 0x01 for null, then 0x00.
//!   Missing trailing fields sort before nulls (Cassandra treats them alike).
//!
//! Not encodable (rejected with [`SchemaError::Encoding`]): empty values of
//! fixed-size types (Cassandra allows and sorts them first), duration,
//! counter, vector, user-defined and custom types.

use gyre_cql::CqlType;

use crate::error::{Result, SchemaError};
use crate::model::ClusteringOrder;

/// A partition key as drivers serialize it for token routing.
pub fn encode_partition_key(components: &[&[u8]]) -> Vec<u8> {
    gyre_common::compose_partition_key(components)
}

/// Encodes one clustering value (CQL native bytes) byte-comparably.
pub fn encode_clustering(ty: &CqlType, value: &[u8], order: ClusteringOrder) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len() + 4);
    encode_value(ty, value, &mut out)?;
    if order == ClusteringOrder::Desc {
        out.iter_mut().for_each(|b| *b = !*b);
    }
    Ok(out)
}

/// Decodes one clustering value from the front of `bytes`: the CQL value
/// bytes and how many bytes it used.
pub fn decode_clustering(
    ty: &CqlType,
    bytes: &[u8],
    order: ClusteringOrder,
) -> Result<(Vec<u8>, usize)> {
    let mut r = Reader {
        b: bytes,
        pos: 0,
        invert: order == ClusteringOrder::Desc,
    };
    let v = decode_value(ty, &mut r)?;
    Ok((v, r.pos))
}

/// Encodes a clustering key (or prefix) from its components.
pub fn encode_clustering_key(components: &[(&CqlType, &[u8], ClusteringOrder)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (ty, v, o) in components {
        out.extend(encode_clustering(ty, v, *o)?);
    }
    Ok(out)
}

/// Decodes a clustering key (or prefix: decoding stops when the bytes end).
pub fn decode_clustering_key(
    columns: &[(&CqlType, ClusteringOrder)],
    mut bytes: &[u8],
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (ty, o) in columns {
        if bytes.is_empty() {
            break;
        }
        let (v, n) = decode_clustering(ty, bytes, *o)?;
        out.push(v);
        bytes = &bytes[n..];
    }
    if !bytes.is_empty() {
        return Err(SchemaError::Encoding(format!(
            "{} trailing bytes after the clustering key",
            bytes.len()
        )));
    }
    Ok(out)
}

/// The layout of a type's encoded clustering values, for the storage
/// engine to find a component of a clustering key without the types
/// (`None`: not a clustering type).
pub fn key_shape(ty: &CqlType) -> Option<gyre_storage::sai::KeyShape> {
    use gyre_storage::sai::KeyShape;
    Some(match ty {
        CqlType::Boolean | CqlType::Tinyint => KeyShape::Fixed(1),
        CqlType::Smallint => KeyShape::Fixed(2),
        CqlType::Int | CqlType::Date | CqlType::Float => KeyShape::Fixed(4),
        CqlType::Bigint | CqlType::Timestamp | CqlType::Time | CqlType::Double => {
            KeyShape::Fixed(8)
        }
        CqlType::Uuid => KeyShape::Fixed(17),
        CqlType::Timeuuid => KeyShape::Fixed(16),
        CqlType::Text | CqlType::Ascii | CqlType::Blob | CqlType::Inet => KeyShape::Escaped,
        CqlType::Varint => KeyShape::Varint,
        CqlType::Decimal => KeyShape::Decimal,
        CqlType::Frozen(inner) => key_shape(inner)?,
        CqlType::List(e) | CqlType::Set(e) => KeyShape::Elements(vec![key_shape(e)?]),
        CqlType::Map(k, v) => KeyShape::Elements(vec![key_shape(k)?, key_shape(v)?]),
        CqlType::Tuple(_) | CqlType::UserType(_) => KeyShape::Fields(
            component_types(ty)
                .into_iter()
                .map(key_shape)
                .collect::<Option<Vec<_>>>()?,
        ),
        _ => return None,
    })
}

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(SchemaError::Encoding(msg.into()))
}

/// Escaped, terminated bytes (ascending).
pub(crate) fn encode_bytes(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Reads [`encode_bytes`] output: the bytes and the length used.
pub(crate) fn decode_bytes(b: &[u8]) -> Result<(Vec<u8>, usize)> {
    let mut r = Reader {
        b,
        pos: 0,
        invert: false,
    };
    let v = read_escaped(&mut r)?;
    Ok((v, r.pos))
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    invert: bool,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .b
            .get(self.pos)
            .ok_or_else(|| SchemaError::Encoding("clustering key ends early".into()))?;
        self.pos += 1;
        Ok(if self.invert { !b } else { b })
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        (0..n).map(|_| self.byte()).collect()
    }
}

fn read_escaped(r: &mut Reader<'_>) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    loop {
        let b = r.byte()?;
        if b != 0 {
            v.push(b);
            continue;
        }
        match r.byte()? {
            0 => return Ok(v),
            0xff => v.push(0),
            x => return err(format!("bad escape 0x00 0x{x:02x}")),
        }
    }
}

fn fixed(value: &[u8], n: usize, ty: &CqlType) -> Result<()> {
    if value.len() == n {
        Ok(())
    } else {
        err(format!("a {ty} value has {n} bytes, got {}", value.len()))
    }
}

fn encode_value(ty: &CqlType, v: &[u8], out: &mut Vec<u8>) -> Result<()> {
    match ty {
        CqlType::Boolean => {
            fixed(v, 1, ty)?;
            out.push(u8::from(v[0] != 0));
        }
        CqlType::Tinyint
        | CqlType::Smallint
        | CqlType::Int
        | CqlType::Bigint
        | CqlType::Timestamp
        | CqlType::Time => {
            fixed(v, int_width(ty), ty)?;
            out.push(v[0] ^ 0x80);
            out.extend_from_slice(&v[1..]);
        }
        CqlType::Date => {
            fixed(v, 4, ty)?;
            out.extend_from_slice(v);
        }
        CqlType::Float => {
            fixed(v, 4, ty)?;
            let mut bits = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            if f32::from_bits(bits).is_nan() {
                bits = 0x7fc0_0000;
            }
            let enc = if bits >> 31 == 1 {
                !bits
            } else {
                bits ^ (1 << 31)
            };
            out.extend_from_slice(&enc.to_be_bytes());
        }
        CqlType::Double => {
            fixed(v, 8, ty)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(v);
            let mut bits = u64::from_be_bytes(a);
            if f64::from_bits(bits).is_nan() {
                bits = 0x7ff8_0000_0000_0000;
            }
            let enc = if bits >> 63 == 1 {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&enc.to_be_bytes());
        }
        CqlType::Text | CqlType::Ascii | CqlType::Blob => encode_bytes(v, out),
        CqlType::Inet => {
            if v.len() != 4 && v.len() != 16 {
                return err(format!("an inet value has 4 or 16 bytes, got {}", v.len()));
            }
            encode_bytes(v, out)
        }
        CqlType::Uuid => {
            fixed(v, 16, ty)?;
            let version = v[6] >> 4;
            out.push(version);
            if version == 1 {
                out.extend(reorder_time(v));
            } else {
                out.extend_from_slice(&v[..8]);
            }
            out.extend_from_slice(&v[8..]);
        }
        CqlType::Timeuuid => {
            fixed(v, 16, ty)?;
            out.extend(reorder_time(v));
            out.extend(v[8..].iter().map(|b| b ^ 0x80));
        }
        CqlType::Varint => {
            if v.is_empty() {
                return err("empty varint");
            }
            let m = minimal_twos(v);
            let len = m.len() as u32;
            let header = if m[0] & 0x80 == 0 {
                0x8000_0000 + len
            } else {
                0x7fff_ffff - len
            };
            out.extend_from_slice(&header.to_be_bytes());
            out.extend_from_slice(m);
        }
        CqlType::Decimal => encode_decimal(v, out)?,
        CqlType::Frozen(inner) => encode_value(inner, v, out)?,
        CqlType::List(elem) | CqlType::Set(elem) => {
            let mut r = ValueReader::new(v);
            let n = r.count()?;
            for _ in 0..n {
                out.push(1);
                encode_value(elem, r.item()?, out)?;
            }
            r.done()?;
            out.push(0);
        }
        CqlType::Map(k, val) => {
            let mut r = ValueReader::new(v);
            let n = r.count()?;
            for _ in 0..n {
                out.push(1);
                encode_value(k, r.item()?, out)?;
                encode_value(val, r.item()?, out)?;
            }
            r.done()?;
            out.push(0);
        }
        CqlType::Tuple(_) | CqlType::UserType(_) => {
            let fields = component_types(ty);
            let mut r = ValueReader::new(v);
            let mut items = Vec::new();
            for f in &fields {
                if r.at_end() {
                    break;
                }
                items.push((f, r.nullable_item()?));
            }
            r.done()?;
            // A user type value with trailing null fields equals the same
            // value written before those fields were added (ALTER TYPE ADD).
            if matches!(ty, CqlType::UserType(_)) {
                while items.last().is_some_and(|(_, v)| v.is_none()) {
                    items.pop();
                }
            }
            for (f, item) in items {
                match item {
                    None => out.push(1),
                    Some(item) => {
                        out.push(2);
                        encode_value(f, item, out)?;
                    }
                }
            }
            out.push(0);
        }
        other => return err(format!("type {other} cannot be a clustering column")),
    }
    Ok(())
}

fn decode_value(ty: &CqlType, r: &mut Reader<'_>) -> Result<Vec<u8>> {
    Ok(match ty {
        CqlType::Boolean => vec![r.byte()?],
        CqlType::Tinyint
        | CqlType::Smallint
        | CqlType::Int
        | CqlType::Bigint
        | CqlType::Timestamp
        | CqlType::Time => {
            let mut v = r.take(int_width(ty))?;
            v[0] ^= 0x80;
            v
        }
        CqlType::Date => r.take(4)?,
        CqlType::Float => {
            let b = r.take(4)?;
            let enc = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let bits = if enc >> 31 == 1 {
                enc ^ (1 << 31)
            } else {
                !enc
            };
            bits.to_be_bytes().to_vec()
        }
        CqlType::Double => {
            let b = r.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(&b);
            let enc = u64::from_be_bytes(a);
            let bits = if enc >> 63 == 1 {
                enc ^ (1 << 63)
            } else {
                !enc
            };
            bits.to_be_bytes().to_vec()
        }
        CqlType::Text | CqlType::Ascii | CqlType::Blob | CqlType::Inet => read_escaped(r)?,
        CqlType::Uuid => {
            let version = r.byte()?;
            let hi = r.take(8)?;
            let mut v = if version == 1 {
                unreorder_time(&hi)
            } else {
                hi
            };
            v.extend(r.take(8)?);
            v
        }
        CqlType::Timeuuid => {
            let hi = r.take(8)?;
            let mut v = unreorder_time(&hi);
            v.extend(r.take(8)?.iter().map(|b| b ^ 0x80));
            v
        }
        CqlType::Varint => {
            let h = r.take(4)?;
            let header = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            let len = if header >= 0x8000_0000 {
                header - 0x8000_0000
            } else {
                0x7fff_ffff - header
            };
            if len == 0 || len as usize > r.b.len() {
                return err("bad varint length");
            }
            r.take(len as usize)?
        }
        CqlType::Decimal => decode_decimal(r)?,
        CqlType::Frozen(inner) => decode_value(inner, r)?,
        CqlType::List(elem) | CqlType::Set(elem) => {
            let mut items = Vec::new();
            while r.byte()? == 1 {
                items.push(decode_value(elem, r)?);
            }
            collection_bytes(items.len() as i32, items.iter().map(Some))
        }
        CqlType::Map(k, val) => {
            let mut items = Vec::new();
            let mut n = 0;
            while r.byte()? == 1 {
                items.push(decode_value(k, r)?);
                items.push(decode_value(val, r)?);
                n += 1;
            }
            collection_bytes(n, items.iter().map(Some))
        }
        CqlType::Tuple(_) | CqlType::UserType(_) => {
            let fields = component_types(ty);
            let mut items: Vec<Option<Vec<u8>>> = Vec::new();
            for f in &fields {
                match r.byte()? {
                    0 => {
                        r.pos -= 1;
                        break;
                    }
                    1 => items.push(None),
                    2 => items.push(Some(decode_value(f, r)?)),
                    x => return err(format!("bad tuple marker {x}")),
                }
            }
            if r.byte()? != 0 {
                return err("tuple not terminated");
            }
            let mut out = Vec::new();
            for it in items {
                match it {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        out.extend(b);
                    }
                }
            }
            out
        }
        other => return err(format!("type {other} cannot be a clustering column")),
    })
}

/// The component types of a tuple or a user type (a UDT value is laid out
/// like a tuple of its fields, and orders the same way).
fn component_types(ty: &CqlType) -> Vec<&CqlType> {
    match ty {
        CqlType::Tuple(ts) => ts.iter().collect(),
        CqlType::UserType(u) => u.fields.iter().map(|(_, t)| t).collect(),
        _ => Vec::new(),
    }
}

fn int_width(ty: &CqlType) -> usize {
    match ty {
        CqlType::Tinyint => 1,
        CqlType::Smallint => 2,
        CqlType::Int => 4,
        _ => 8,
    }
}

/// Collection bytes in CQL v3+ layout: i32 count, then i32 length + bytes.
fn collection_bytes<'a>(count: i32, items: impl Iterator<Item = Option<&'a Vec<u8>>>) -> Vec<u8> {
    let mut out = count.to_be_bytes().to_vec();
    for it in items.flatten() {
        out.extend_from_slice(&(it.len() as i32).to_be_bytes());
        out.extend_from_slice(it);
    }
    out
}

/// Reads CQL collection and tuple value bytes.
struct ValueReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> ValueReader<'a> {
    fn new(b: &'a [u8]) -> Self {
        ValueReader { b, pos: 0 }
    }

    fn i32(&mut self) -> Result<i32> {
        let s = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| SchemaError::Encoding("truncated collection value".into()))?;
        self.pos += 4;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn count(&mut self) -> Result<usize> {
        usize::try_from(self.i32()?)
            .map_err(|_| SchemaError::Encoding("negative collection size".into()))
    }

    fn nullable_item(&mut self) -> Result<Option<&'a [u8]>> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        let s = self
            .b
            .get(self.pos..self.pos + n as usize)
            .ok_or_else(|| SchemaError::Encoding("truncated collection value".into()))?;
        self.pos += n as usize;
        Ok(Some(s))
    }

    fn item(&mut self) -> Result<&'a [u8]> {
        self.nullable_item()?
            .ok_or_else(|| SchemaError::Encoding("null inside a collection".into()))
    }

    fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn done(&self) -> Result<()> {
        if self.at_end() {
            Ok(())
        } else {
            err("trailing bytes in collection value")
        }
    }
}

/// A v1 uuid's high half reordered to time_hi, time_mid, time_low.
fn reorder_time(v: &[u8]) -> Vec<u8> {
    [6, 7, 4, 5, 0, 1, 2, 3].iter().map(|&i| v[i]).collect()
}

fn unreorder_time(h: &[u8]) -> Vec<u8> {
    vec![h[4], h[5], h[6], h[7], h[2], h[3], h[0], h[1]]
}

/// Strips redundant sign bytes from two's-complement big-endian bytes.
fn minimal_twos(v: &[u8]) -> &[u8] {
    let mut s = v;
    while s.len() > 1 && ((s[0] == 0 && s[1] & 0x80 == 0) || (s[0] == 0xff && s[1] & 0x80 != 0)) {
        s = &s[1..];
    }
    s
}

/// Two's complement big endian to (negative, magnitude big endian).
fn to_magnitude(v: &[u8]) -> (bool, Vec<u8>) {
    let neg = v.first().is_some_and(|b| b & 0x80 != 0);
    if !neg {
        return (false, v.to_vec());
    }
    // Magnitude = !v + 1.
    let mut m: Vec<u8> = v.iter().map(|b| !b).collect();
    for b in m.iter_mut().rev() {
        let (s, carry) = b.overflowing_add(1);
        *b = s;
        if !carry {
            break;
        }
    }
    (true, m)
}

/// (negative, magnitude) to minimal two's complement.
fn from_magnitude(neg: bool, mag: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(mag);
    if neg {
        v.iter_mut().for_each(|b| *b = !*b);
        for b in v.iter_mut().rev() {
            let (s, carry) = b.overflowing_add(1);
            *b = s;
            if !carry {
                break;
            }
        }
    }
    minimal_twos(&v).to_vec()
}

/// Decimal digits of a big-endian magnitude (no leading zeros; "0" for 0).
fn to_digits(mag: &[u8]) -> Vec<u8> {
    let mut n: Vec<u8> = mag.to_vec();
    let mut digits = Vec::new();
    while n.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(rem as u8);
    }
    if digits.is_empty() {
        digits.push(0);
    }
    digits.reverse();
    digits
}

fn from_digits(digits: &[u8]) -> Vec<u8> {
    let mut n: Vec<u8> = vec![0];
    for &d in digits {
        let mut carry = u32::from(d);
        for b in n.iter_mut().rev() {
            let cur = u32::from(*b) * 10 + carry;
            *b = cur as u8;
            carry = cur >> 8;
        }
        while carry > 0 {
            n.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    n
}

fn encode_decimal(v: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if v.len() < 5 {
        return err("a decimal value has a 4-byte scale and at least one unscaled byte");
    }
    let scale = i64::from(i32::from_be_bytes([v[0], v[1], v[2], v[3]]));
    let (neg, mag) = to_magnitude(&v[4..]);
    let mut digits = to_digits(&mag);
    let ndigits = digits.len() as i64;
    if digits == [0] {
        out.push(0x80);
        return Ok(());
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    // value = unscaled * 10^-scale = 0.d1d2... * 10^(ndigits(unscaled) - scale);
    // the removed trailing zeros do not change the exponent.
    let exponent = ndigits - scale;
    let start = out.len();
    out.push(if neg { 0x40 } else { 0xc0 });
    out.extend_from_slice(&((exponent as u64) ^ (1 << 63)).to_be_bytes());
    out.extend(digits.iter().map(|d| b'0' + d));
    out.push(0);
    if neg {
        out[start + 1..].iter_mut().for_each(|b| *b = !*b);
    }
    Ok(())
}

fn decode_decimal(r: &mut Reader<'_>) -> Result<Vec<u8>> {
    let marker = r.byte()?;
    if marker == 0x80 {
        return Ok(vec![0, 0, 0, 0, 0]);
    }
    let neg = match marker {
        0x40 => true,
        0xc0 => false,
        x => return err(format!("bad decimal marker {x:#x}")),
    };
    let flip = |b: u8| if neg { !b } else { b };
    let e = r.take(8)?;
    let mut a = [0u8; 8];
    for (i, b) in e.iter().enumerate() {
        a[i] = flip(*b);
    }
    let exponent = (u64::from_be_bytes(a) ^ (1 << 63)) as i64;
    let mut digits = Vec::new();
    loop {
        let b = flip(r.byte()?);
        if b == 0 {
            break;
        }
        if !b.is_ascii_digit() {
            return err("bad decimal digit");
        }
        digits.push(b - b'0');
    }
    let scale = i32::try_from(digits.len() as i64 - exponent)
        .map_err(|_| SchemaError::Encoding("decimal scale out of range".into()))?;
    let mut out = scale.to_be_bytes().to_vec();
    out.extend(from_magnitude(neg, &from_digits(&digits)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escape_order() {
        let e = |s: &[u8]| {
            encode_clustering(&CqlType::Blob, s, ClusteringOrder::Asc).unwrap_or_default()
        };
        assert!(e(b"a") < e(b"a\0"));
        assert!(e(b"a\0") < e(b"a\x01"));
        assert!(e(b"") < e(b"\0"));
        assert_eq!(e(b"a\0b"), vec![b'a', 0, 0xff, b'b', 0, 0]);
    }

    /// The storage engine finds each component of a clustering key from
    /// [`key_shape`] alone, as the ascending encoding of its value.
    #[test]
    fn key_shapes_find_every_component() {
        use gyre_storage::sai::{KeyLayout, KeyPart};
        let int = |n: i32| n.to_be_bytes().to_vec();
        let list = |items: &[Vec<u8>]| collection_bytes(items.len() as i32, items.iter().map(Some));
        let tuple = |fields: &[Option<Vec<u8>>]| {
            let mut v = Vec::new();
            for f in fields {
                match f {
                    Some(b) => {
                        v.extend((b.len() as i32).to_be_bytes());
                        v.extend(b);
                    }
                    None => v.extend((-1i32).to_be_bytes()),
                }
            }
            v
        };
        let decimal = |scale: i32, unscaled: i64| {
            let mut v = scale.to_be_bytes().to_vec();
            v.extend(unscaled.to_be_bytes());
            v
        };
        let mut uuid1 = [7u8; 16];
        uuid1[6] = 0x11;
        let cols: Vec<(CqlType, Vec<u8>)> = vec![
            (CqlType::Text, b"a\0b".to_vec()),
            (CqlType::Int, int(-5)),
            (CqlType::Decimal, decimal(2, -12345)),
            (CqlType::Decimal, decimal(0, 0)),
            (CqlType::Varint, vec![0xff, 0x01]),
            (CqlType::Uuid, uuid1.to_vec()),
            (
                CqlType::Frozen(Box::new(CqlType::List(Box::new(CqlType::Text)))),
                list(&[b"x".to_vec(), b"\0".to_vec()]),
            ),
            (
                CqlType::Frozen(Box::new(CqlType::Tuple(vec![
                    CqlType::Int,
                    CqlType::Text,
                    CqlType::Double,
                ]))),
                tuple(&[Some(int(3)), None, Some(2.5f64.to_be_bytes().to_vec())]),
            ),
            (CqlType::Decimal, decimal(1, 77)),
            (CqlType::Date, vec![0x80, 0, 0, 9]),
        ];
        for desc_mask in [0u32, 0b10_1010_1010, u32::MAX] {
            let order = |i: usize| {
                if desc_mask >> i & 1 == 1 {
                    ClusteringOrder::Desc
                } else {
                    ClusteringOrder::Asc
                }
            };
            let parts: Vec<(&CqlType, &[u8], ClusteringOrder)> = cols
                .iter()
                .enumerate()
                .map(|(i, (t, v))| (t, v.as_slice(), order(i)))
                .collect();
            let ck = encode_clustering_key(&parts).expect("encodable");
            let layouts: Vec<KeyLayout> = cols
                .iter()
                .enumerate()
                .map(|(i, (t, _))| KeyLayout {
                    desc: order(i) == ClusteringOrder::Desc,
                    shape: key_shape(t).expect("a clustering type"),
                })
                .collect();
            for (i, (t, v)) in cols.iter().enumerate() {
                let part = KeyPart::Clustering(layouts[..=i].to_vec());
                let want = encode_clustering(t, v, ClusteringOrder::Asc).expect("encodable");
                assert_eq!(part.clustering_term(&ck), Some(want), "component {i}");
            }
        }
        assert!(key_shape(&CqlType::Duration).is_none());
    }

    #[test]
    fn digits_round_trip() {
        for n in [0u64, 1, 9, 10, 255, 256, 65535, 1 << 40, u64::MAX] {
            let mag = n.to_be_bytes();
            let d = to_digits(&mag);
            let s: String = d.iter().map(|d| char::from(b'0' + d)).collect();
            assert_eq!(s, n.to_string());
            let back = from_digits(&d);
            let mut a = [0u8; 8];
            let tail = back.len().min(8);
            a[8 - tail..].copy_from_slice(&back[back.len() - tail..]);
            assert_eq!(u64::from_be_bytes(a), n);
        }
    }
}
