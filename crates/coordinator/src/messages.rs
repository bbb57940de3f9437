//! Wire encoding of the coordinator's internode messages (payloads of
//! gyre-net frames, which already carry a CRC).

use std::collections::BTreeSet;

use bytes::Bytes;
use gyre_common::{codec, DecoratedKey, LocalTime, Partition};
use gyre_net::Verb;
use gyre_storage::{ClusteringFilter, ColumnFilter, ReadFilter, TableId};

use crate::read::Digest;

/// A mutation to apply; the response (empty) is the acknowledgement.
pub const MUTATION: Verb = Verb(0x0200);
/// Not sent as its own message: acknowledgements travel as the response
/// frame of [`MUTATION`] (gyre-net matches it by request id). Kept so the
/// verb table mirrors Cassandra's.
pub const MUTATION_ACK: Verb = Verb(0x0201);
/// Read a partition; the response is the full result.
pub const READ_DATA: Verb = Verb(0x0202);
/// Read a partition; the response is its [`Digest`].
pub const READ_DIGEST: Verb = Verb(0x0203);

type DecodeResult<T> = Result<T, codec::DecodeError>;

fn put_table(out: &mut Vec<u8>, t: TableId) {
    out.extend_from_slice(t.0.as_bytes());
}

fn get_table(r: &mut codec::Reader<'_>) -> DecodeResult<TableId> {
    let mut b = [0u8; 16];
    for x in &mut b {
        *x = r.u8()?;
    }
    Ok(TableId(uuid::Uuid::from_bytes(b)))
}

pub(crate) fn encode_mutation(table: TableId, p: &Partition) -> Bytes {
    let mut out = Vec::with_capacity(32 + p.size_estimate());
    put_table(&mut out, table);
    codec::encode_partition(&mut out, p);
    Bytes::from(out)
}

pub(crate) fn decode_mutation(b: &Bytes) -> DecodeResult<(TableId, Partition)> {
    let mut r = codec::Reader::new(b);
    let t = get_table(&mut r)?;
    Ok((t, codec::decode_partition(&mut r)?))
}

/// A partition read request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReadCommand {
    pub table: TableId,
    pub key: DecoratedKey,
    pub filter: ReadFilter,
    pub now: LocalTime,
}

pub(crate) fn encode_read(c: &ReadCommand) -> Bytes {
    let mut out = Vec::new();
    put_table(&mut out, c.table);
    codec::put_bytes(&mut out, &c.key.key);
    match &c.filter.clustering {
        ClusteringFilter::Slices(s) => {
            out.push(0);
            codec::put_uvarint(&mut out, s.len() as u64);
            for s in s {
                codec::put_slice(&mut out, s);
            }
        }
        ClusteringFilter::Names(n) => {
            out.push(1);
            codec::put_uvarint(&mut out, n.len() as u64);
            for n in n {
                codec::put_bytes(&mut out, n);
            }
        }
    }
    match &c.filter.columns {
        ColumnFilter::All => out.push(0),
        ColumnFilter::Columns(cs) => {
            out.push(1);
            codec::put_uvarint(&mut out, cs.len() as u64);
            for c in cs {
                codec::put_bytes(&mut out, c);
            }
        }
    }
    match c.filter.limit {
        None => out.push(0),
        Some(l) => {
            out.push(1);
            codec::put_uvarint(&mut out, l as u64);
        }
    }
    out.push(u8::from(c.filter.reversed));
    codec::put_varint(&mut out, c.now);
    Bytes::from(out)
}

fn bad(r: &codec::Reader<'_>, what: &'static str) -> codec::DecodeError {
    codec::DecodeError {
        offset: r.position(),
        what,
    }
}

pub(crate) fn decode_read(b: &Bytes) -> DecodeResult<ReadCommand> {
    let mut r = codec::Reader::new(b);
    let table = get_table(&mut r)?;
    let key = DecoratedKey::new(r.bytes()?);
    let clustering = match r.u8()? {
        0 => {
            let n = r.uvarint()?;
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(codec::get_slice(&mut r)?);
            }
            ClusteringFilter::Slices(v)
        }
        1 => {
            let n = r.uvarint()?;
            let mut s = BTreeSet::new();
            for _ in 0..n {
                s.insert(r.bytes()?);
            }
            ClusteringFilter::Names(s)
        }
        _ => return Err(bad(&r, "bad clustering filter")),
    };
    let columns = match r.u8()? {
        0 => ColumnFilter::All,
        1 => {
            let n = r.uvarint()?;
            let mut s = BTreeSet::new();
            for _ in 0..n {
                s.insert(r.bytes()?);
            }
            ColumnFilter::Columns(s)
        }
        _ => return Err(bad(&r, "bad column filter")),
    };
    let limit = match r.u8()? {
        0 => None,
        1 => Some(usize::try_from(r.uvarint()?).map_err(|_| bad(&r, "limit too large"))?),
        _ => return Err(bad(&r, "bad limit flag")),
    };
    let reversed = r.u8()? != 0;
    let now = r.varint()?;
    Ok(ReadCommand {
        table,
        key,
        filter: ReadFilter {
            clustering,
            columns,
            limit,
            reversed,
        },
        now,
    })
}

pub(crate) fn encode_data(p: Option<&Partition>) -> Bytes {
    let mut out = Vec::new();
    match p {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            codec::encode_partition(&mut out, p);
        }
    }
    Bytes::from(out)
}

pub(crate) fn decode_data(b: &Bytes) -> DecodeResult<Option<Partition>> {
    let mut r = codec::Reader::new(b);
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(codec::decode_partition(&mut r)?)),
        _ => Err(bad(&r, "bad data flag")),
    }
}

pub(crate) fn decode_digest(b: &Bytes) -> Option<Digest> {
    Digest::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_common::{Cell, CellName, Slice};

    #[test]
    fn round_trips() {
        let t = TableId(uuid::Uuid::from_u128(99));
        let p = Partition::with_key("k").set("r", CellName::simple("c"), Cell::live(3, "v"));
        assert_eq!(
            decode_mutation(&encode_mutation(t, &p)).expect("decodes"),
            (t, p.clone())
        );
        let c = ReadCommand {
            table: t,
            key: DecoratedKey::new("k"),
            filter: ReadFilter {
                clustering: ClusteringFilter::Slices(vec![Slice::prefix("a"), Slice::ALL]),
                columns: ColumnFilter::Columns(["x".into(), "y".into()].into()),
                limit: Some(7),
                reversed: true,
            },
            now: -4,
        };
        assert_eq!(decode_read(&encode_read(&c)).expect("decodes"), c);
        assert_eq!(
            decode_data(&encode_data(Some(&p))).expect("decodes"),
            Some(p)
        );
        assert_eq!(decode_data(&encode_data(None)).expect("decodes"), None);
        let enc = encode_read(&c);
        for cut in 0..enc.len() {
            assert!(decode_read(&enc.slice(..cut)).is_err());
        }
    }
}
