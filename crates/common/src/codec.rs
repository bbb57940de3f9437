//! A compact binary encoding of the data model, shared by the commitlog, the
//! SSTable format and internode messages.
//!
//! Integers are LEB128 varints (signed ones zig-zag encoded), byte strings
//! are length-prefixed. Decoding never panics: truncated or malformed input
//! is a [`DecodeError`].

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes};

use crate::model::{
    Cell, CellName, CellValue, DecoratedKey, Deletion, Partition, RangeTombstone, Row, Slice,
    SliceBound,
};

/// Input that is not a valid encoding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed encoding at byte {offset}: {what}")]
pub struct DecodeError {
    pub offset: usize,
    pub what: &'static str,
}

pub type DecodeResult<T> = std::result::Result<T, DecodeError>;

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over encoded bytes that hands out zero-copy slices.
pub struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn at(buf: &'a Bytes, pos: usize) -> Self {
        Reader { buf, pos }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn err(&self, what: &'static str) -> DecodeError {
        DecodeError {
            offset: self.pos,
            what,
        }
    }

    pub fn u8(&mut self) -> DecodeResult<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn i64_be(&mut self) -> DecodeResult<i64> {
        let end = self.pos + 8;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.err("unexpected end"))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        self.pos = end;
        Ok(i64::from_be_bytes(a))
    }

    pub fn uvarint(&mut self) -> DecodeResult<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    pub fn varint(&mut self) -> DecodeResult<i64> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    pub fn len(&mut self) -> DecodeResult<usize> {
        let n = self.uvarint()?;
        if n > (self.buf.len() - self.pos.min(self.buf.len())) as u64 {
            return Err(self.err("length past end"));
        }
        Ok(n as usize)
    }

    pub fn bytes(&mut self) -> DecodeResult<Bytes> {
        let n = self.len()?;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    pub fn skip(&mut self, n: usize) -> DecodeResult<()> {
        if self.pos + n > self.buf.len() {
            return Err(self.err("skip past end"));
        }
        self.pos += n;
        Ok(())
    }
}

pub fn put_deletion(out: &mut Vec<u8>, d: &Deletion) {
    put_varint(out, d.timestamp);
    put_varint(out, d.deleted_at);
}

pub fn get_deletion(r: &mut Reader<'_>) -> DecodeResult<Deletion> {
    Ok(Deletion {
        timestamp: r.varint()?,
        deleted_at: r.varint()?,
    })
}

fn put_opt_deletion(out: &mut Vec<u8>, d: &Option<Deletion>) {
    match d {
        None => out.push(0),
        Some(d) => {
            out.push(1);
            put_deletion(out, d);
        }
    }
}

fn get_opt_deletion(r: &mut Reader<'_>) -> DecodeResult<Option<Deletion>> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(get_deletion(r)?)),
        _ => Err(r.err("bad deletion flag")),
    }
}

pub fn put_cell(out: &mut Vec<u8>, name: &CellName, cell: &Cell) {
    put_bytes(out, &name.column);
    put_bytes(out, &name.path);
    put_varint(out, cell.timestamp);
    match &cell.value {
        CellValue::Live(v) => {
            out.push(0);
            put_bytes(out, v);
        }
        CellValue::Expiring {
            value,
            ttl,
            expires_at,
        } => {
            out.push(1);
            put_uvarint(out, u64::from(*ttl));
            put_varint(out, *expires_at);
            put_bytes(out, value);
        }
        CellValue::Tombstone { deleted_at } => {
            out.push(2);
            put_varint(out, *deleted_at);
        }
    }
}

pub fn get_cell(r: &mut Reader<'_>) -> DecodeResult<(CellName, Cell)> {
    let column = r.bytes()?;
    let path = r.bytes()?;
    let timestamp = r.varint()?;
    let value = match r.u8()? {
        0 => CellValue::Live(r.bytes()?),
        1 => {
            let ttl = u32::try_from(r.uvarint()?).map_err(|_| r.err("ttl out of range"))?;
            let expires_at = r.varint()?;
            CellValue::Expiring {
                value: r.bytes()?,
                ttl,
                expires_at,
            }
        }
        2 => CellValue::Tombstone {
            deleted_at: r.varint()?,
        },
        _ => return Err(r.err("bad cell kind")),
    };
    Ok((CellName { column, path }, Cell { timestamp, value }))
}

pub fn put_row(out: &mut Vec<u8>, row: &Row) {
    put_opt_deletion(out, &row.deletion);
    put_uvarint(out, row.cells.len() as u64);
    for (n, c) in &row.cells {
        put_cell(out, n, c);
    }
}

pub fn get_row(r: &mut Reader<'_>) -> DecodeResult<Row> {
    let deletion = get_opt_deletion(r)?;
    let n = r.uvarint()?;
    let mut cells = BTreeMap::new();
    for _ in 0..n {
        let (name, cell) = get_cell(r)?;
        cells.insert(name, cell);
    }
    Ok(Row { deletion, cells })
}

fn put_bound(out: &mut Vec<u8>, b: &SliceBound) {
    match b {
        SliceBound::Unbounded => out.push(0),
        SliceBound::Inclusive(k) => {
            out.push(1);
            put_bytes(out, k);
        }
        SliceBound::Exclusive(k) => {
            out.push(2);
            put_bytes(out, k);
        }
    }
}

fn get_bound(r: &mut Reader<'_>) -> DecodeResult<SliceBound> {
    match r.u8()? {
        0 => Ok(SliceBound::Unbounded),
        1 => Ok(SliceBound::Inclusive(r.bytes()?)),
        2 => Ok(SliceBound::Exclusive(r.bytes()?)),
        _ => Err(r.err("bad slice bound")),
    }
}

pub fn put_slice(out: &mut Vec<u8>, s: &Slice) {
    put_bound(out, &s.start);
    put_bound(out, &s.end);
}

pub fn get_slice(r: &mut Reader<'_>) -> DecodeResult<Slice> {
    Ok(Slice {
        start: get_bound(r)?,
        end: get_bound(r)?,
    })
}

/// Encodes a partition's key and partition-level deletions: everything but
/// its rows.
pub fn put_partition_header(out: &mut Vec<u8>, p: &Partition) {
    out.put_i64(p.key.token);
    put_bytes(out, &p.key.key);
    put_opt_deletion(out, &p.deletion);
    put_uvarint(out, p.range_tombstones.len() as u64);
    for rt in &p.range_tombstones {
        put_slice(out, &rt.slice);
        put_deletion(out, &rt.deletion);
    }
    match &p.static_row {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            put_row(out, r);
        }
    }
}

pub fn get_partition_header(r: &mut Reader<'_>) -> DecodeResult<Partition> {
    let token = r.i64_be()?;
    let key = r.bytes()?;
    let deletion = get_opt_deletion(r)?;
    let n = r.uvarint()?;
    let mut range_tombstones = Vec::new();
    for _ in 0..n {
        let slice = get_slice(r)?;
        let deletion = get_deletion(r)?;
        range_tombstones.push(RangeTombstone { slice, deletion });
    }
    let static_row = match r.u8()? {
        0 => None,
        1 => Some(get_row(r)?),
        _ => return Err(r.err("bad static flag")),
    };
    Ok(Partition {
        key: DecoratedKey { token, key },
        deletion,
        range_tombstones,
        static_row,
        rows: BTreeMap::new(),
    })
}

pub fn encode_partition(out: &mut Vec<u8>, p: &Partition) {
    put_partition_header(out, p);
    put_uvarint(out, p.rows.len() as u64);
    for (ck, row) in &p.rows {
        put_bytes(out, ck);
        put_row(out, row);
    }
}

pub fn decode_partition(r: &mut Reader<'_>) -> DecodeResult<Partition> {
    let mut p = get_partition_header(r)?;
    let n = r.uvarint()?;
    for _ in 0..n {
        let ck = r.bytes()?;
        let row = get_row(r)?;
        p.rows.insert(ck, row);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_round_trips() {
        let p = Partition::with_key("k")
            .set("a", CellName::simple("c"), Cell::live(-5, "v"))
            .set(
                "b",
                CellName::element("m", "x"),
                Cell::expiring(7, "w", 3, 100),
            )
            .set_static(CellName::simple("s"), Cell::tombstone(9, 44))
            .delete_row("c", Deletion::new(3, 4))
            .delete_range(
                Slice::new(SliceBound::Exclusive("a".into()), SliceBound::Unbounded),
                Deletion::new(1, 2),
            )
            .delete_partition(Deletion::new(i64::MIN, i64::MAX));
        let mut buf = Vec::new();
        encode_partition(&mut buf, &p);
        let buf = Bytes::from(buf);
        let got = decode_partition(&mut Reader::new(&buf)).expect("decodes");
        assert_eq!(got, p);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let p = Partition::with_key("k").set("a", CellName::simple("c"), Cell::live(1, "value"));
        let mut buf = Vec::new();
        encode_partition(&mut buf, &p);
        for cut in 0..buf.len() {
            let b = Bytes::copy_from_slice(&buf[..cut]);
            assert!(decode_partition(&mut Reader::new(&b)).is_err());
        }
    }
}
