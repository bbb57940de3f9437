//! Non-frozen collections: one cell per element, under the column's name
//! with a cell path, so elements can be added and removed one by one.
//!
//! Paths: a set element or map key in the byte-comparable clustering
//! encoding (so cells sort in the element type's order); a list element's
//! path is its write timestamp and position, so appends sort last.

use bytes::{BufMut, Bytes, BytesMut};
use gyre_cql::CqlType;
use gyre_protocol::CqlValue;
use gyre_schema::{decode_clustering, encode_clustering, ClusteringOrder};

use crate::error::{QueryError, Result};
use crate::values::column_type;

/// True for list, set, map and user-type columns that are not frozen.
pub(crate) fn is_multicell(ty: &CqlType) -> bool {
    matches!(
        ty,
        CqlType::List(_) | CqlType::Set(_) | CqlType::Map(..) | CqlType::UserType(_)
    )
}

/// The cell path of a non-frozen user type's field: its position as a
/// big-endian u16, as Cassandra stores it (fields keep their position
/// through renames, and added fields come last).
pub(crate) fn field_path(index: usize) -> Bytes {
    Bytes::copy_from_slice(&(index as u16).to_be_bytes())
}

/// The field cells (path, value or null) of a whole user type value: one
/// per field of the type, so a replaced value leaves no stale field.
pub(crate) fn udt_fields(
    ty: &CqlType,
    value: Option<&[u8]>,
) -> Result<Vec<(Bytes, Option<Bytes>)>> {
    let CqlType::UserType(u) = ty else {
        return Err(QueryError::invalid("not a user type"));
    };
    let mut out: Vec<(Bytes, Option<Bytes>)> =
        (0..u.fields.len()).map(|i| (field_path(i), None)).collect();
    if let Some(value) = value {
        match CqlValue::decode(&column_type(ty), value)
            .map_err(|e| QueryError::invalid(format!("Invalid user type value: {e}")))?
        {
            CqlValue::Udt(fields) => {
                for (slot, (_, v)) in out.iter_mut().zip(fields) {
                    slot.1 = v.map(|v| v.encode());
                }
            }
            CqlValue::Empty => {}
            _ => return Err(QueryError::invalid("Invalid user type value")),
        }
    }
    Ok(out)
}

/// The path of a set element or map key (CQL value bytes).
pub(crate) fn key_path(ty: &CqlType, key: &[u8]) -> Result<Bytes> {
    let kt = match ty {
        CqlType::Set(t) | CqlType::Map(t, _) => t,
        _ => return Err(QueryError::invalid("not a set or map")),
    };
    Ok(Bytes::from(encode_clustering(
        kt,
        key,
        ClusteringOrder::Asc,
    )?))
}

/// A list element's path: timestamp (sign-flipped, big endian), then the
/// element's position in the written value.
fn list_path(ts: i64, i: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(12);
    b.put_u64((ts as u64) ^ (1 << 63));
    b.put_u32(i as u32);
    b.freeze()
}

/// The element cells of a list value prepended at timestamp `ts`: their
/// paths use the negated timestamp, so they sort before every appended
/// element and before earlier prepends.
pub(crate) fn prepend_elements(ty: &CqlType, value: &[u8], ts: i64) -> Result<Vec<(Bytes, Bytes)>> {
    let mut out = elements(ty, value, ts)?;
    for (i, (path, _)) in out.iter_mut().enumerate() {
        *path = list_path(ts.saturating_neg(), i);
    }
    Ok(out)
}

/// The element cells (path, value) of a whole collection value.
pub(crate) fn elements(ty: &CqlType, value: &[u8], ts: i64) -> Result<Vec<(Bytes, Bytes)>> {
    let decoded = CqlValue::decode(&column_type(ty), value)
        .map_err(|e| QueryError::invalid(format!("Invalid collection value: {e}")))?;
    Ok(match decoded {
        CqlValue::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (list_path(ts, i), v.encode()))
            .collect(),
        CqlValue::Set(items) => items
            .iter()
            .map(|v| Ok((key_path(ty, &v.encode())?, Bytes::new())))
            .collect::<Result<_>>()?,
        CqlValue::Map(entries) => entries
            .iter()
            .map(|(k, v)| Ok((key_path(ty, &k.encode())?, v.encode())))
            .collect::<Result<_>>()?,
        _ => return Err(QueryError::invalid("Invalid collection value")),
    })
}

/// The CQL value bytes of the live element cells (path, value) in path
/// order; `None` (null) when there are none.
pub(crate) fn assemble<'a>(
    ty: &CqlType,
    cells: impl Iterator<Item = (&'a Bytes, &'a Bytes)>,
) -> Option<Bytes> {
    let mut body = BytesMut::new();
    let mut n: i32 = 0;
    let put = |b: &mut BytesMut, v: &[u8]| {
        b.put_i32(v.len() as i32);
        b.put_slice(v);
    };
    if let CqlType::UserType(u) = ty {
        return assemble_udt(u.fields.len(), cells);
    }
    for (path, value) in cells {
        match ty {
            CqlType::List(_) => put(&mut body, value),
            CqlType::Set(t) | CqlType::Map(t, _) => {
                let Ok((key, _)) = decode_clustering(t, path, ClusteringOrder::Asc) else {
                    tracing::warn!("undecodable collection cell path skipped");
                    continue;
                };
                put(&mut body, &key);
                if matches!(ty, CqlType::Map(..)) {
                    put(&mut body, value);
                }
            }
            _ => return None,
        }
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(n);
    out.put_slice(&body);
    Some(out.freeze())
}

/// A user type value from its live field cells; fields without a cell
/// are null, and trailing ones are left out (as Cassandra serializes).
fn assemble_udt<'a>(
    n: usize,
    cells: impl Iterator<Item = (&'a Bytes, &'a Bytes)>,
) -> Option<Bytes> {
    let mut fields: Vec<Option<&Bytes>> = vec![None; n];
    let mut any = false;
    for (path, value) in cells {
        let Ok(i) = <[u8; 2]>::try_from(&path[..]).map(u16::from_be_bytes) else {
            continue;
        };
        if let Some(slot) = fields.get_mut(usize::from(i)) {
            *slot = Some(value);
            any = true;
        }
    }
    if !any {
        return None;
    }
    while fields.last().is_some_and(|f| f.is_none()) {
        fields.pop();
    }
    let mut out = BytesMut::new();
    for f in fields {
        match f {
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
            None => out.put_i32(-1),
        }
    }
    Some(out.freeze())
}

/// The value of field `index` in a user type value's bytes (`None` when
/// null or absent).
pub(crate) fn udt_field(value: &[u8], index: usize) -> Option<Bytes> {
    let mut rest = value;
    for i in 0.. {
        if rest.len() < 4 {
            return None;
        }
        let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        rest = &rest[4..];
        let field = match usize::try_from(len) {
            Ok(n) if n <= rest.len() => {
                let (v, tail) = rest.split_at(n);
                rest = tail;
                Some(v)
            }
            Ok(_) => return None,
            Err(_) => None,
        };
        if i == index {
            return field.map(Bytes::copy_from_slice);
        }
    }
    None
}
