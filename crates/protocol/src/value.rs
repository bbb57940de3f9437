//! Wire serialization of CQL values (spec sections 6 and 7): what a driver
//! puts in a `[value]` and what a Rows result carries in each `[bytes]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::types::ColumnType;

/// A `varint`: big-endian two's complement bytes, kept as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CqlVarint(pub Bytes);

impl CqlVarint {
    /// Minimal two's complement encoding of `v`.
    pub fn from_i128(v: i128) -> Self {
        let bytes = v.to_be_bytes();
        // Drop leading bytes that are pure sign extension of the next one.
        let mut start = 0;
        while start < bytes.len() - 1 {
            let (b, next) = (bytes[start], bytes[start + 1]);
            if (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0) {
                start += 1;
            } else {
                break;
            }
        }
        CqlVarint(Bytes::copy_from_slice(&bytes[start..]))
    }

    pub fn from_i64(v: i64) -> Self {
        Self::from_i128(i128::from(v))
    }

    /// The value, if it fits in an i128 (empty bytes read as 0).
    pub fn to_i128(&self) -> Option<i128> {
        let b = &self.0;
        // Strip redundant sign-extension bytes before checking the width.
        let mut start = 0;
        while start + 1 < b.len()
            && ((b[start] == 0x00 && b[start + 1] & 0x80 == 0)
                || (b[start] == 0xFF && b[start + 1] & 0x80 != 0))
        {
            start += 1;
        }
        let b = &b[start..];
        if b.len() > 16 {
            return None;
        }
        let negative = b.first().is_some_and(|x| x & 0x80 != 0);
        let mut buf = if negative { [0xFFu8; 16] } else { [0u8; 16] };
        buf[16 - b.len()..].copy_from_slice(b);
        Some(i128::from_be_bytes(buf))
    }

    pub fn to_i64(&self) -> Option<i64> {
        self.to_i128().and_then(|v| i64::try_from(v).ok())
    }
}

/// A `decimal`: `unscaled * 10^(-scale)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CqlDecimal {
    pub unscaled: CqlVarint,
    pub scale: i32,
}

/// A `duration`: months, days and nanoseconds, each signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CqlDuration {
    pub months: i32,
    pub days: i32,
    pub nanos: i64,
}

/// The `date` of the unix epoch: days are unsigned with the epoch at 2^31.
pub const DATE_EPOCH: u32 = 1 << 31;

/// Converts days since 1970-01-01 to the wire `date`.
pub fn date_from_days(days: i32) -> u32 {
    (i64::from(days) + i64::from(DATE_EPOCH)) as u32
}

/// Converts a wire `date` to days since 1970-01-01.
pub fn date_to_days(date: u32) -> i32 {
    (i64::from(date) - i64::from(DATE_EPOCH)) as i32
}

/// A typed CQL value. Null is not a value: it is `None` at the `[bytes]`
/// level (and inside tuples and UDTs).
#[derive(Debug, Clone, PartialEq)]
pub enum CqlValue {
    Ascii(String),
    /// `text` / `varchar`.
    Text(String),
    Bigint(i64),
    Blob(Bytes),
    Boolean(bool),
    Counter(i64),
    Decimal(CqlDecimal),
    Double(f64),
    Float(f32),
    Int(i32),
    /// Milliseconds since the unix epoch.
    Timestamp(i64),
    Uuid(Uuid),
    Timeuuid(Uuid),
    Varint(CqlVarint),
    Inet(IpAddr),
    /// Days with the epoch at 2^31 (see [`date_from_days`]).
    Date(u32),
    /// Nanoseconds since midnight.
    Time(i64),
    Smallint(i16),
    Tinyint(i8),
    Duration(CqlDuration),
    List(Vec<CqlValue>),
    Set(Vec<CqlValue>),
    Map(Vec<(CqlValue, CqlValue)>),
    Tuple(Vec<Option<CqlValue>>),
    /// Field values in type order; may be shorter than the type.
    Udt(Vec<(String, Option<CqlValue>)>),
    /// A custom type's raw bytes.
    Custom(Bytes),
    /// A `vector<T, n>`: n non-null elements.
    Vector(Vec<CqlValue>),
    /// The zero-length "empty" value that most non-string types allow for
    /// legacy reasons; distinct from null.
    Empty,
}

/// Nesting limit for collection values: types built by callers could be
/// arbitrarily deep; the network decoder already caps type depth.
const MAX_VALUE_DEPTH: usize = 64;

impl CqlValue {
    /// Serializes the value (without the `[bytes]` length prefix).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode_to(&mut b);
        b.freeze()
    }

    /// Appends the serialized value to `dst`.
    pub fn encode_to(&self, dst: &mut BytesMut) {
        match self {
            CqlValue::Ascii(s) | CqlValue::Text(s) => dst.put_slice(s.as_bytes()),
            CqlValue::Bigint(v)
            | CqlValue::Counter(v)
            | CqlValue::Timestamp(v)
            | CqlValue::Time(v) => dst.put_i64(*v),
            CqlValue::Blob(b) | CqlValue::Custom(b) => dst.put_slice(b),
            CqlValue::Boolean(v) => dst.put_u8(u8::from(*v)),
            CqlValue::Decimal(d) => {
                dst.put_i32(d.scale);
                dst.put_slice(&d.unscaled.0);
            }
            CqlValue::Double(v) => dst.put_f64(*v),
            CqlValue::Float(v) => dst.put_f32(*v),
            CqlValue::Int(v) => dst.put_i32(*v),
            CqlValue::Uuid(u) | CqlValue::Timeuuid(u) => dst.put_slice(u.as_bytes()),
            CqlValue::Varint(v) => dst.put_slice(&v.0),
            CqlValue::Inet(IpAddr::V4(a)) => dst.put_slice(&a.octets()),
            CqlValue::Inet(IpAddr::V6(a)) => dst.put_slice(&a.octets()),
            CqlValue::Date(d) => dst.put_u32(*d),
            CqlValue::Smallint(v) => dst.put_i16(*v),
            CqlValue::Tinyint(v) => dst.put_i8(*v),
            CqlValue::Duration(d) => {
                put_vint(dst, i64::from(d.months));
                put_vint(dst, i64::from(d.days));
                put_vint(dst, d.nanos);
            }
            CqlValue::List(items) | CqlValue::Set(items) => {
                dst.put_i32(items.len() as i32);
                for item in items {
                    put_element(dst, Some(item));
                }
            }
            CqlValue::Map(entries) => {
                dst.put_i32(entries.len() as i32);
                for (k, v) in entries {
                    put_element(dst, Some(k));
                    put_element(dst, Some(v));
                }
            }
            CqlValue::Tuple(items) => items.iter().for_each(|v| put_element(dst, v.as_ref())),
            // Cassandra's vector form: fixed-size elements back to back,
            // others each after an unsigned vint length.
            CqlValue::Vector(items) => {
                for item in items {
                    if item.is_fixed_size() {
                        item.encode_to(dst);
                    } else {
                        let b = item.encode();
                        put_unsigned_vint(dst, b.len() as u64);
                        dst.put_slice(&b);
                    }
                }
            }
            CqlValue::Udt(fields) => fields
                .iter()
                .for_each(|(_, v)| put_element(dst, v.as_ref())),
            CqlValue::Empty => {}
        }
    }

    /// True for values of the types whose serialized size is fixed (see
    /// [`ColumnType::fixed_size`]), which vectors store without lengths.
    fn is_fixed_size(&self) -> bool {
        match self {
            CqlValue::Boolean(_)
            | CqlValue::Int(_)
            | CqlValue::Float(_)
            | CqlValue::Bigint(_)
            | CqlValue::Counter(_)
            | CqlValue::Double(_)
            | CqlValue::Timestamp(_)
            | CqlValue::Uuid(_)
            | CqlValue::Timeuuid(_) => true,
            CqlValue::Vector(items) => items.iter().all(CqlValue::is_fixed_size),
            _ => false,
        }
    }

    /// Deserializes a non-null value of type `typ`.
    pub fn decode(typ: &ColumnType, bytes: &[u8]) -> Result<CqlValue> {
        decode_depth(typ, bytes, 0)
    }
}

impl CqlValue {
    /// Checks that `bytes` are a valid value of `typ` without decoding
    /// them: the same checks and messages as [`CqlValue::decode`], but no
    /// allocation on success (text is checked in place, blobs are not
    /// copied, collections are walked). Prepared statements validate bound
    /// values with it, since the bytes are stored as they are.
    pub fn validate(typ: &ColumnType, bytes: &[u8]) -> Result<()> {
        validate_depth(typ, bytes, 0)
    }
}

fn validate_depth(typ: &ColumnType, b: &[u8], depth: usize) -> Result<()> {
    if depth > MAX_VALUE_DEPTH {
        return Err(Error::value("value nested too deeply"));
    }
    let is_string = matches!(
        typ,
        ColumnType::Ascii | ColumnType::Varchar | ColumnType::Blob | ColumnType::Custom(_)
    );
    if b.is_empty() && !is_string {
        return Ok(());
    }
    let d = depth + 1;
    match typ {
        ColumnType::Custom(_) | ColumnType::Blob | ColumnType::Varint => {}
        ColumnType::Ascii => {
            if !b.is_ascii() {
                return Err(Error::value("ascii value has bytes over 127"));
            }
        }
        ColumnType::Varchar => {
            if std::str::from_utf8(b).is_err() {
                return Err(Error::value("text is not valid UTF-8"));
            }
        }
        ColumnType::Bigint => {
            fixed::<8>(b, "bigint")?;
        }
        ColumnType::Counter => {
            fixed::<8>(b, "counter")?;
        }
        ColumnType::Timestamp => {
            fixed::<8>(b, "timestamp")?;
        }
        ColumnType::Time => {
            let v = i64::from_be_bytes(fixed(b, "time")?);
            if !(0..86_400_000_000_000).contains(&v) {
                return Err(Error::value(format!("time {v} is outside one day")));
            }
        }
        ColumnType::Boolean => {
            fixed::<1>(b, "boolean")?;
        }
        ColumnType::Decimal => {
            if b.len() < 5 {
                return Err(Error::value("decimal needs a scale and at least one byte"));
            }
        }
        ColumnType::Double => {
            fixed::<8>(b, "double")?;
        }
        ColumnType::Float => {
            fixed::<4>(b, "float")?;
        }
        ColumnType::Int => {
            fixed::<4>(b, "int")?;
        }
        ColumnType::Uuid => {
            fixed::<16>(b, "uuid")?;
        }
        ColumnType::Timeuuid => {
            if Uuid::from_bytes(fixed(b, "timeuuid")?).get_version_num() != 1 {
                return Err(Error::value("timeuuid is not a version 1 uuid"));
            }
        }
        ColumnType::Inet => {
            if b.len() != 4 && b.len() != 16 {
                return Err(Error::value(format!(
                    "inet needs 4 or 16 bytes, got {}",
                    b.len()
                )));
            }
        }
        ColumnType::Date => {
            fixed::<4>(b, "date")?;
        }
        ColumnType::Smallint => {
            fixed::<2>(b, "smallint")?;
        }
        ColumnType::Tinyint => {
            fixed::<1>(b, "tinyint")?;
        }
        ColumnType::Duration => {
            let mut rest = b;
            let months = get_vint(&mut rest)?;
            let days = get_vint(&mut rest)?;
            get_vint(&mut rest)?;
            if !rest.is_empty() {
                return Err(Error::value("trailing bytes after duration"));
            }
            i32::try_from(months).map_err(|_| Error::value("duration months overflow"))?;
            i32::try_from(days).map_err(|_| Error::value("duration days overflow"))?;
        }
        ColumnType::List(t) | ColumnType::Set(t) => {
            let mut e = Elements { buf: b };
            for _ in 0..e.count()? {
                validate_depth(t, e.non_null()?, d)?;
            }
        }
        ColumnType::Map(kt, vt) => {
            let mut e = Elements { buf: b };
            for _ in 0..e.count()? {
                validate_depth(kt, e.non_null()?, d)?;
                validate_depth(vt, e.non_null()?, d)?;
            }
        }
        ColumnType::Tuple(types) => {
            let mut e = Elements { buf: b };
            for t in types {
                if e.buf.is_empty() {
                    continue;
                }
                if let Some(v) = e.element()? {
                    validate_depth(t, v, d)?;
                }
            }
        }
        ColumnType::Vector(t, n) => {
            let n = usize::try_from(*n).map_err(|_| Error::value("vector dimension"))?;
            if let Some(size) = t.fixed_size() {
                if Some(b.len()) != size.checked_mul(n) {
                    return Err(Error::value(format!(
                        "vector of {n} elements of {size} bytes each cannot be {} bytes",
                        b.len()
                    )));
                }
                for chunk in b.chunks_exact(size.max(1)) {
                    validate_depth(t, chunk, d)?;
                }
            } else {
                let mut rest = b;
                for i in 0..n {
                    let len = get_unsigned_vint(&mut rest)
                        .map_err(|_| Error::value(format!("vector has {i} elements, not {n}")))?;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|l| *l <= rest.len())
                        .ok_or_else(|| Error::value("truncated vector element"))?;
                    let (elem, tail) = rest.split_at(len);
                    validate_depth(t, elem, d)?;
                    rest = tail;
                }
                if !rest.is_empty() {
                    return Err(Error::value(format!(
                        "trailing bytes after a vector of {n} elements"
                    )));
                }
            }
        }
        ColumnType::Udt { fields, .. } => {
            let mut e = Elements { buf: b };
            for (_, t) in fields {
                if e.buf.is_empty() {
                    break;
                }
                if let Some(v) = e.element()? {
                    validate_depth(t, v, d)?;
                }
            }
        }
    }
    Ok(())
}

/// Writes a collection/tuple element as `[bytes]` (`None` is null, -1).
fn put_element(dst: &mut BytesMut, v: Option<&CqlValue>) {
    match v {
        Some(v) => {
            let start = dst.len();
            dst.put_i32(0);
            v.encode_to(dst);
            let len = (dst.len() - start - 4) as i32;
            dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        None => dst.put_i32(-1),
    }
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N]> {
    bytes
        .try_into()
        .map_err(|_| Error::value(format!("{what} needs {N} bytes, got {}", bytes.len())))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::value(format!("{what} is not valid UTF-8")))
}

/// Splits `[bytes]` elements off the front of a collection body.
struct Elements<'a> {
    buf: &'a [u8],
}

impl<'a> Elements<'a> {
    fn count(&mut self) -> Result<usize> {
        let n = i32::from_be_bytes(
            self.take(4)?
                .try_into()
                .map_err(|_| Error::value("count"))?,
        );
        let n =
            usize::try_from(n).map_err(|_| Error::value(format!("negative element count {n}")))?;
        if n.saturating_mul(4) > self.buf.len() {
            return Err(Error::value(format!(
                "{n} elements cannot fit in {} bytes",
                self.buf.len()
            )));
        }
        Ok(n)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::value("truncated collection value"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn element(&mut self) -> Result<Option<&'a [u8]>> {
        let n = i32::from_be_bytes(
            self.take(4)?
                .try_into()
                .map_err(|_| Error::value("length"))?,
        );
        match usize::try_from(n) {
            Ok(n) => Ok(Some(self.take(n)?)),
            Err(_) => Ok(None),
        }
    }

    fn non_null(&mut self) -> Result<&'a [u8]> {
        self.element()?
            .ok_or_else(|| Error::value("null element in a collection"))
    }
}

fn decode_depth(typ: &ColumnType, b: &[u8], depth: usize) -> Result<CqlValue> {
    if depth > MAX_VALUE_DEPTH {
        return Err(Error::value("value nested too deeply"));
    }
    let is_string = matches!(
        typ,
        ColumnType::Ascii | ColumnType::Varchar | ColumnType::Blob | ColumnType::Custom(_)
    );
    if b.is_empty() && !is_string {
        return Ok(CqlValue::Empty);
    }
    let d = depth + 1;
    Ok(match typ {
        ColumnType::Custom(_) => CqlValue::Custom(Bytes::copy_from_slice(b)),
        ColumnType::Ascii => {
            if !b.is_ascii() {
                return Err(Error::value("ascii value has bytes over 127"));
            }
            CqlValue::Ascii(utf8(b, "ascii")?)
        }
        ColumnType::Varchar => CqlValue::Text(utf8(b, "text")?),
        ColumnType::Blob => CqlValue::Blob(Bytes::copy_from_slice(b)),
        ColumnType::Bigint => CqlValue::Bigint(i64::from_be_bytes(fixed(b, "bigint")?)),
        ColumnType::Counter => CqlValue::Counter(i64::from_be_bytes(fixed(b, "counter")?)),
        ColumnType::Timestamp => CqlValue::Timestamp(i64::from_be_bytes(fixed(b, "timestamp")?)),
        ColumnType::Time => {
            let v = i64::from_be_bytes(fixed(b, "time")?);
            if !(0..86_400_000_000_000).contains(&v) {
                return Err(Error::value(format!("time {v} is outside one day")));
            }
            CqlValue::Time(v)
        }
        ColumnType::Boolean => CqlValue::Boolean(fixed::<1>(b, "boolean")?[0] != 0),
        ColumnType::Decimal => {
            if b.len() < 5 {
                return Err(Error::value("decimal needs a scale and at least one byte"));
            }
            let scale = i32::from_be_bytes(fixed(&b[..4], "decimal scale")?);
            CqlValue::Decimal(CqlDecimal {
                unscaled: CqlVarint(Bytes::copy_from_slice(&b[4..])),
                scale,
            })
        }
        ColumnType::Double => CqlValue::Double(f64::from_be_bytes(fixed(b, "double")?)),
        ColumnType::Float => CqlValue::Float(f32::from_be_bytes(fixed(b, "float")?)),
        ColumnType::Int => CqlValue::Int(i32::from_be_bytes(fixed(b, "int")?)),
        ColumnType::Uuid => CqlValue::Uuid(Uuid::from_bytes(fixed(b, "uuid")?)),
        ColumnType::Timeuuid => {
            let u = Uuid::from_bytes(fixed(b, "timeuuid")?);
            if u.get_version_num() != 1 {
                return Err(Error::value("timeuuid is not a version 1 uuid"));
            }
            CqlValue::Timeuuid(u)
        }
        ColumnType::Varint => CqlValue::Varint(CqlVarint(Bytes::copy_from_slice(b))),
        ColumnType::Inet => match b.len() {
            4 => CqlValue::Inet(IpAddr::V4(Ipv4Addr::from(fixed::<4>(b, "inet")?))),
            16 => CqlValue::Inet(IpAddr::V6(Ipv6Addr::from(fixed::<16>(b, "inet")?))),
            n => return Err(Error::value(format!("inet needs 4 or 16 bytes, got {n}"))),
        },
        ColumnType::Date => CqlValue::Date(u32::from_be_bytes(fixed(b, "date")?)),
        ColumnType::Smallint => CqlValue::Smallint(i16::from_be_bytes(fixed(b, "smallint")?)),
        ColumnType::Tinyint => CqlValue::Tinyint(i8::from_be_bytes(fixed(b, "tinyint")?)),
        ColumnType::Duration => {
            let mut rest = b;
            let months = get_vint(&mut rest)?;
            let days = get_vint(&mut rest)?;
            let nanos = get_vint(&mut rest)?;
            if !rest.is_empty() {
                return Err(Error::value("trailing bytes after duration"));
            }
            let months =
                i32::try_from(months).map_err(|_| Error::value("duration months overflow"))?;
            let days = i32::try_from(days).map_err(|_| Error::value("duration days overflow"))?;
            CqlValue::Duration(CqlDuration {
                months,
                days,
                nanos,
            })
        }
        ColumnType::List(t) | ColumnType::Set(t) => {
            let mut e = Elements { buf: b };
            let n = e.count()?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(decode_depth(t, e.non_null()?, d)?);
            }
            if matches!(typ, ColumnType::List(_)) {
                CqlValue::List(items)
            } else {
                CqlValue::Set(items)
            }
        }
        ColumnType::Map(kt, vt) => {
            let mut e = Elements { buf: b };
            let n = e.count()?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let k = decode_depth(kt, e.non_null()?, d)?;
                let v = decode_depth(vt, e.non_null()?, d)?;
                entries.push((k, v));
            }
            CqlValue::Map(entries)
        }
        ColumnType::Tuple(types) => {
            let mut e = Elements { buf: b };
            let mut items = Vec::with_capacity(types.len());
            for t in types {
                // Trailing components may be omitted; they read as null.
                if e.buf.is_empty() {
                    items.push(None);
                    continue;
                }
                items.push(e.element()?.map(|v| decode_depth(t, v, d)).transpose()?);
            }
            CqlValue::Tuple(items)
        }
        ColumnType::Vector(t, n) => {
            let n = usize::try_from(*n).map_err(|_| Error::value("vector dimension"))?;
            let mut items = Vec::with_capacity(n.min(b.len()));
            if let Some(size) = t.fixed_size() {
                if Some(b.len()) != size.checked_mul(n) {
                    return Err(Error::value(format!(
                        "vector of {n} elements of {size} bytes each cannot be {} bytes",
                        b.len()
                    )));
                }
                for chunk in b.chunks_exact(size.max(1)) {
                    items.push(decode_depth(t, chunk, d)?);
                }
            } else {
                let mut rest = b;
                for i in 0..n {
                    let len = get_unsigned_vint(&mut rest)
                        .map_err(|_| Error::value(format!("vector has {i} elements, not {n}")))?;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|l| *l <= rest.len())
                        .ok_or_else(|| Error::value("truncated vector element"))?;
                    let (elem, tail) = rest.split_at(len);
                    items.push(decode_depth(t, elem, d)?);
                    rest = tail;
                }
                if !rest.is_empty() {
                    return Err(Error::value(format!(
                        "trailing bytes after a vector of {n} elements"
                    )));
                }
            }
            CqlValue::Vector(items)
        }
        ColumnType::Udt { fields, .. } => {
            let mut e = Elements { buf: b };
            let mut out = Vec::with_capacity(fields.len());
            for (name, t) in fields {
                // A UDT value may have fewer fields than its type (spec 7).
                if e.buf.is_empty() {
                    break;
                }
                let v = e.element()?.map(|v| decode_depth(t, v, d)).transpose()?;
                out.push((name.clone(), v));
            }
            CqlValue::Udt(out)
        }
    })
}

/// Cassandra's unsigned vint: the count of leading 1 bits in the first byte
/// is the number of extra bytes; the value follows big-endian.
fn put_unsigned_vint(dst: &mut BytesMut, v: u64) {
    let magnitude = (v | 1).leading_zeros() as usize;
    let size = (639 - magnitude * 9) >> 6;
    if size == 1 {
        dst.put_u8(v as u8);
        return;
    }
    let mut buf = [0u8; 9];
    let mut x = v;
    for i in (0..size).rev() {
        buf[i] = x as u8;
        x >>= 8;
    }
    let extra = size - 1;
    buf[0] |= !0xFFu8.checked_shr(extra as u32).unwrap_or(0);
    dst.put_slice(&buf[..size]);
}

fn get_unsigned_vint(src: &mut &[u8]) -> Result<u64> {
    let (&first, rest) = src
        .split_first()
        .ok_or_else(|| Error::value("truncated vint"))?;
    let extra = first.leading_ones() as usize;
    if rest.len() < extra {
        return Err(Error::value("truncated vint"));
    }
    // With 8 extra bytes the first byte carries no value bits.
    let mut v = if extra >= 8 {
        0
    } else {
        u64::from(first & (0xFF >> extra))
    };
    for &b in &rest[..extra] {
        v = (v << 8) | u64::from(b);
    }
    *src = &rest[extra..];
    Ok(v)
}

/// Signed vint: zig-zag, then unsigned vint.
fn put_vint(dst: &mut BytesMut, v: i64) {
    put_unsigned_vint(dst, ((v << 1) ^ (v >> 63)) as u64);
}

fn get_vint(src: &mut &[u8]) -> Result<i64> {
    let u = get_unsigned_vint(src)?;
    Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(t: &ColumnType, v: CqlValue, expect: &[u8]) {
        assert_eq!(&v.encode()[..], expect, "encoding {v:?}");
        assert_eq!(CqlValue::decode(t, expect).unwrap(), v);
    }

    #[test]
    fn spec_varint_examples() {
        let cases: [(i64, &[u8]); 8] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7F]),
            (128, &[0x00, 0x80]),
            (129, &[0x00, 0x81]),
            (-1, &[0xFF]),
            (-128, &[0x80]),
            (-129, &[0xFF, 0x7F]),
        ];
        for (v, bytes) in cases {
            round_trip(
                &ColumnType::Varint,
                CqlValue::Varint(CqlVarint::from_i64(v)),
                bytes,
            );
            assert_eq!(CqlVarint(Bytes::copy_from_slice(bytes)).to_i64(), Some(v));
        }
        // Non-minimal encodings still read correctly.
        assert_eq!(
            CqlVarint(Bytes::from_static(&[0xFF, 0xFF, 0x7F])).to_i64(),
            Some(-129)
        );
        assert_eq!(
            CqlVarint(Bytes::from_static(&[
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
            ]))
            .to_i64(),
            Some(1)
        );
        assert_eq!(CqlVarint::from_i128(i128::MIN).to_i128(), Some(i128::MIN));
    }

    #[test]
    fn fixed_width_types() {
        round_trip(
            &ColumnType::Int,
            CqlValue::Int(-2),
            &[0xFF, 0xFF, 0xFF, 0xFE],
        );
        round_trip(
            &ColumnType::Bigint,
            CqlValue::Bigint(1),
            &[0, 0, 0, 0, 0, 0, 0, 1],
        );
        round_trip(
            &ColumnType::Smallint,
            CqlValue::Smallint(-32768),
            &[0x80, 0x00],
        );
        round_trip(&ColumnType::Tinyint, CqlValue::Tinyint(-1), &[0xFF]);
        round_trip(&ColumnType::Boolean, CqlValue::Boolean(true), &[1]);
        assert_eq!(
            CqlValue::decode(&ColumnType::Boolean, &[7]).unwrap(),
            CqlValue::Boolean(true)
        );
        round_trip(
            &ColumnType::Double,
            CqlValue::Double(1.0),
            &[0x3F, 0xF0, 0, 0, 0, 0, 0, 0],
        );
        round_trip(
            &ColumnType::Float,
            CqlValue::Float(-2.5),
            &[0xC0, 0x20, 0, 0],
        );
        // 2021-01-01T00:00:00Z = 1609459200000 ms.
        round_trip(
            &ColumnType::Timestamp,
            CqlValue::Timestamp(1_609_459_200_000),
            &[0, 0, 0x01, 0x76, 0xBB, 0x3E, 0x70, 0x00],
        );
        round_trip(
            &ColumnType::Time,
            CqlValue::Time(3_600_000_000_000),
            &[0, 0, 0x03, 0x46, 0x30, 0xB8, 0xA0, 0x00],
        );
        assert!(CqlValue::decode(&ColumnType::Time, &86_400_000_000_000i64.to_be_bytes()).is_err());
        assert!(CqlValue::decode(&ColumnType::Int, &[0, 0, 1]).is_err());
    }

    #[test]
    fn dates_centre_on_two_to_the_31() {
        assert_eq!(date_from_days(0), 0x8000_0000);
        assert_eq!(date_from_days(-1), 0x7FFF_FFFF);
        // 2021-01-01 is day 18628.
        round_trip(
            &ColumnType::Date,
            CqlValue::Date(date_from_days(18_628)),
            &[0x80, 0x00, 0x48, 0xC4],
        );
        assert_eq!(date_to_days(0), i32::MIN);
        assert_eq!(date_to_days(u32::MAX), i32::MAX);
    }

    #[test]
    fn strings_blobs_uuids_inets() {
        round_trip(
            &ColumnType::Varchar,
            CqlValue::Text("héllo".into()),
            "héllo".as_bytes(),
        );
        round_trip(&ColumnType::Ascii, CqlValue::Ascii("abc".into()), b"abc");
        assert!(CqlValue::decode(&ColumnType::Ascii, "é".as_bytes()).is_err());
        assert!(CqlValue::decode(&ColumnType::Varchar, &[0xFF]).is_err());
        round_trip(&ColumnType::Varchar, CqlValue::Text(String::new()), b"");
        round_trip(
            &ColumnType::Blob,
            CqlValue::Blob(Bytes::from_static(&[0xCA, 0xFE])),
            &[0xCA, 0xFE],
        );
        let u = Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap();
        round_trip(&ColumnType::Uuid, CqlValue::Uuid(u), u.as_bytes());
        let t = Uuid::parse_str("6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap();
        round_trip(&ColumnType::Timeuuid, CqlValue::Timeuuid(t), t.as_bytes());
        assert!(CqlValue::decode(&ColumnType::Timeuuid, u.as_bytes()).is_err());
        round_trip(
            &ColumnType::Inet,
            CqlValue::Inet("127.0.0.1".parse().unwrap()),
            &[127, 0, 0, 1],
        );
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        round_trip(
            &ColumnType::Inet,
            CqlValue::Inet("::1".parse().unwrap()),
            &v6,
        );
        assert!(CqlValue::decode(&ColumnType::Inet, &[1, 2, 3]).is_err());
    }

    #[test]
    fn empty_values_are_not_null() {
        assert_eq!(
            CqlValue::decode(&ColumnType::Int, &[]).unwrap(),
            CqlValue::Empty
        );
        assert!(CqlValue::Empty.encode().is_empty());
    }

    #[test]
    fn decimal_is_scale_then_varint() {
        // 12.34 = 1234 * 10^-2.
        let d = CqlValue::Decimal(CqlDecimal {
            unscaled: CqlVarint::from_i64(1234),
            scale: 2,
        });
        round_trip(&ColumnType::Decimal, d, &[0, 0, 0, 2, 0x04, 0xD2]);
        // -0.5 = -5 * 10^-1.
        let d = CqlValue::Decimal(CqlDecimal {
            unscaled: CqlVarint::from_i64(-5),
            scale: 1,
        });
        round_trip(&ColumnType::Decimal, d, &[0, 0, 0, 1, 0xFB]);
    }

    #[test]
    fn duration_vints() {
        let d = |months, days, nanos| {
            CqlValue::Duration(CqlDuration {
                months,
                days,
                nanos,
            })
        };
        // zig-zag: 1 -> 2, 2 -> 4, 3 -> 6.
        round_trip(&ColumnType::Duration, d(1, 2, 3), &[0x02, 0x04, 0x06]);
        round_trip(&ColumnType::Duration, d(-1, 0, 0), &[0x01, 0x00, 0x00]);
        // 64 -> zig-zag 128 needs two bytes: one leading 1 bit, then 0x80.
        round_trip(
            &ColumnType::Duration,
            d(0, 64, 0),
            &[0x00, 0x80, 0x80, 0x00],
        );
        // 1h = 3.6e12 ns -> zig-zag 7.2e12 = 0x68C_6171_4000: 43 bits, so
        // seven bytes with six leading 1 bits in the first.
        round_trip(
            &ColumnType::Duration,
            d(0, 0, 3_600_000_000_000),
            &[0x00, 0x00, 0xFC, 0x06, 0x8C, 0x61, 0x71, 0x40, 0x00],
        );
        let mut b = BytesMut::new();
        put_vint(&mut b, i64::MIN);
        assert_eq!(b[0], 0xFF);
        assert_eq!(b.len(), 9);
        assert_eq!(get_vint(&mut &b[..]).unwrap(), i64::MIN);
        assert!(CqlValue::decode(&ColumnType::Duration, &[0xF0]).is_err());
    }

    #[test]
    fn collections() {
        let list = ColumnType::List(Box::new(ColumnType::Int));
        round_trip(
            &list,
            CqlValue::List(vec![CqlValue::Int(1), CqlValue::Int(2)]),
            &[0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 2],
        );
        let set = ColumnType::Set(Box::new(ColumnType::Varchar));
        round_trip(
            &set,
            CqlValue::Set(vec![CqlValue::Text("a".into())]),
            &[0, 0, 0, 1, 0, 0, 0, 1, b'a'],
        );
        let map = ColumnType::Map(Box::new(ColumnType::Varchar), Box::new(ColumnType::Boolean));
        round_trip(
            &map,
            CqlValue::Map(vec![(CqlValue::Text("k".into()), CqlValue::Boolean(false))]),
            &[0, 0, 0, 1, 0, 0, 0, 1, b'k', 0, 0, 0, 1, 0],
        );
        let tuple = ColumnType::Tuple(vec![ColumnType::Int, ColumnType::Varchar]);
        round_trip(
            &tuple,
            CqlValue::Tuple(vec![Some(CqlValue::Int(7)), None]),
            &[0, 0, 0, 4, 0, 0, 0, 7, 0xFF, 0xFF, 0xFF, 0xFF],
        );
        let udt = ColumnType::Udt {
            keyspace: "ks".into(),
            name: "u".into(),
            fields: vec![("a".into(), ColumnType::Int), ("b".into(), ColumnType::Int)],
        };
        round_trip(
            &udt,
            CqlValue::Udt(vec![("a".into(), Some(CqlValue::Int(1)))]),
            &[0, 0, 0, 4, 0, 0, 0, 1],
        );
        // Null elements and lying counts are rejected.
        assert!(CqlValue::decode(&list, &[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(CqlValue::decode(&list, &[0x7F, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(CqlValue::decode(&list, &[0, 0, 0, 1, 0, 0, 0, 9, 1]).is_err());
    }

    #[test]
    fn vectors_of_fixed_size_elements_have_no_lengths() {
        let t = ColumnType::Vector(Box::new(ColumnType::Float), 3);
        let v = CqlValue::Vector(vec![
            CqlValue::Float(1.0),
            CqlValue::Float(2.5),
            CqlValue::Float(-3.25),
        ]);
        round_trip(
            &t,
            v,
            &[0x3F, 0x80, 0, 0, 0x40, 0x20, 0, 0, 0xC0, 0x50, 0, 0],
        );
        let t = ColumnType::Vector(Box::new(ColumnType::Int), 2);
        round_trip(
            &t,
            CqlValue::Vector(vec![CqlValue::Int(7), CqlValue::Int(-8)]),
            &[0, 0, 0, 7, 0xFF, 0xFF, 0xFF, 0xF8],
        );
        // A wrong dimension is a wrong byte count.
        assert!(CqlValue::decode(&t, &[0, 0, 0, 7]).is_err());
        assert!(CqlValue::decode(&t, &[0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2]).is_err());
        assert!(CqlValue::decode(&t, &[0, 0, 0, 7, 0, 0, 0]).is_err());
    }

    #[test]
    fn vectors_of_variable_size_elements_carry_vint_lengths() {
        let t = ColumnType::Vector(Box::new(ColumnType::Varchar), 2);
        round_trip(
            &t,
            CqlValue::Vector(vec![
                CqlValue::Text("ab".into()),
                CqlValue::Text(String::new()),
            ]),
            &[2, b'a', b'b', 0],
        );
        // A 200-byte element needs a two-byte vint.
        let long = "x".repeat(200);
        let enc = CqlValue::Vector(vec![
            CqlValue::Text(long.clone()),
            CqlValue::Text("c".into()),
        ])
        .encode();
        assert_eq!(&enc[..2], &[0x80, 200]);
        assert_eq!(enc.len(), 2 + 200 + 2);
        let list = ColumnType::Vector(Box::new(ColumnType::List(Box::new(ColumnType::Int))), 1);
        round_trip(
            &list,
            CqlValue::Vector(vec![CqlValue::List(vec![CqlValue::Int(1)])]),
            &[12, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1],
        );
        // Too few elements, trailing bytes, lengths past the end.
        assert!(CqlValue::decode(&t, &[2, b'a', b'b']).is_err());
        assert!(CqlValue::decode(&t, &[1, b'a', 1, b'b', 0]).is_err());
        assert!(CqlValue::decode(&t, &[9, b'a']).is_err());
        // A huge dimension with few bytes fails without allocating for it.
        let huge = ColumnType::Vector(Box::new(ColumnType::Varchar), u32::MAX);
        assert!(CqlValue::decode(&huge, &[0, 0]).is_err());
        let huge = ColumnType::Vector(Box::new(ColumnType::Float), u32::MAX);
        assert!(CqlValue::decode(&huge, &[0, 0, 0, 0]).is_err());
    }

    fn leaf() -> impl Strategy<Value = (ColumnType, CqlValue)> {
        prop_oneof![
            any::<i32>().prop_map(|v| (ColumnType::Int, CqlValue::Int(v))),
            any::<i64>().prop_map(|v| (ColumnType::Bigint, CqlValue::Bigint(v))),
            any::<i128>().prop_map(|v| (
                ColumnType::Varint,
                CqlValue::Varint(CqlVarint::from_i128(v))
            )),
            ".*".prop_map(|s| (ColumnType::Varchar, CqlValue::Text(s))),
            (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(months, days, nanos)| {
                (
                    ColumnType::Duration,
                    CqlValue::Duration(CqlDuration {
                        months,
                        days,
                        nanos,
                    }),
                )
            }),
            any::<u32>().prop_map(|v| (ColumnType::Date, CqlValue::Date(v))),
            any::<[u8; 16]>().prop_map(|b| (ColumnType::Uuid, CqlValue::Uuid(Uuid::from_bytes(b)))),
        ]
    }

    proptest! {
        #[test]
        fn values_round_trip((t, v) in leaf()) {
            let enc = v.encode();
            prop_assert_eq!(CqlValue::decode(&t, &enc).unwrap(), v.clone());
            let list = ColumnType::List(Box::new(t.clone()));
            let lv = CqlValue::List(vec![v.clone(), v]);
            prop_assert_eq!(CqlValue::decode(&list, &lv.encode()).unwrap(), lv);
        }

        #[test]
        fn varint_i128_round_trip(v in any::<i128>()) {
            prop_assert_eq!(CqlVarint::from_i128(v).to_i128(), Some(v));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let types = [
                ColumnType::Duration,
                ColumnType::Decimal,
                ColumnType::List(Box::new(ColumnType::Map(Box::new(ColumnType::Varchar), Box::new(ColumnType::Duration)))),
                ColumnType::Tuple(vec![ColumnType::Inet, ColumnType::Timeuuid]),
            ];
            for t in &types {
                let _ = CqlValue::decode(t, &bytes);
            }
        }
    }
}
