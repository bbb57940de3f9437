//! Wire encoding of the coordinator's internode messages (payloads of
//! gyre-net frames, which already carry a CRC).

use std::collections::BTreeSet;

use bytes::Bytes;
use gyre_common::{codec, DecoratedKey, LocalTime, Partition};
use gyre_net::Verb;
use std::ops::Bound;

use gyre_common::Token;
use gyre_storage::{
    ClusteringFilter, ColumnFilter, ReadFilter, ScanPage, ScanRequest, ScanStart, TableId,
};

use crate::read::Digest;

/// A mutation to apply ([`gyre_storage::Mutation`]'s encoding, which the
/// replica appends to its commitlog as it is); the response (empty) is the
/// acknowledgement.
pub const MUTATION: Verb = Verb(0x0200);
/// Not sent as its own message: acknowledgements travel as the response
/// frame of [`MUTATION`] (gyre-net matches it by request id). Kept so the
/// verb table mirrors Cassandra's.
pub const MUTATION_ACK: Verb = Verb(0x0201);
/// Read a partition; the response is the full result.
pub const READ_DATA: Verb = Verb(0x0202);
/// Read a partition; the response is its [`Digest`].
pub const READ_DIGEST: Verb = Verb(0x0203);
/// Read a page of a token range; the response is the page.
pub const READ_RANGE: Verb = Verb(0x0204);
/// Truncate a table on this replica; the response (empty) acknowledges.
pub const TRUNCATE: Verb = Verb(0x0205);
/// Store a logged batch in this node's batchlog; the response acknowledges.
pub const BATCH_STORE: Verb = Verb(0x0206);
/// The batch was applied: forget it (one way).
pub const BATCH_REMOVE: Verb = Verb(0x0207);
/// Repair: build the Merkle leaves of a table over token slices
/// ([`crate::repair::TreeRequest`] → each slice's
/// [`crate::repair::MerkleLeaves`], see `TreeRequest::encode_reply`).
pub const REPAIR_TREE: Verb = Verb(0x0208);
/// Paxos phase 1 with the read (the replica side is `paxos.rs`): promise a
/// ballot and answer with the Paxos state and the partition's data.
pub const PAXOS_PREPARE: Verb = Verb(0x0209);
/// Paxos phase 2: accept a proposal under a ballot.
pub const PAXOS_PROPOSE: Verb = Verb(0x020A);
/// Paxos commit: apply an accepted proposal; the response acknowledges.
pub const PAXOS_COMMIT: Verb = Verb(0x020B);
/// Paxos phase 2 and commit in one, sent by a proposer whose own replica
/// accepted the proposal durably when that replica and the receiver make a
/// quorum: the receiver accepts (the same payload and answer as
/// [`PAXOS_PROPOSE`]) and, the proposal being chosen by then, applies it.
pub const PAXOS_PROPOSE_COMMIT: Verb = Verb(0x020D);
/// A counter increment for a leader replica: the consistency level (one
/// byte, its protocol code) then a [`gyre_storage::Mutation`] of delta
/// cells; answered once the leader's shards reached that level.
pub const COUNTER_MUTATION: Verb = Verb(0x020C);

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
    put_filter(&mut out, &c.filter);
    codec::put_varint(&mut out, c.now);
    Bytes::from(out)
}

fn put_filter(out: &mut Vec<u8>, filter: &ReadFilter) {
    match &filter.clustering {
        ClusteringFilter::Slices(s) => {
            out.push(0);
            codec::put_uvarint(out, s.len() as u64);
            for s in s {
                codec::put_slice(out, s);
            }
        }
        ClusteringFilter::Names(n) => {
            out.push(1);
            codec::put_uvarint(out, n.len() as u64);
            for n in n {
                codec::put_bytes(out, n);
            }
        }
    }
    match &filter.columns {
        ColumnFilter::All => out.push(0),
        ColumnFilter::Columns(cs) => {
            out.push(1);
            codec::put_uvarint(out, cs.len() as u64);
            for c in cs {
                codec::put_bytes(out, c);
            }
        }
    }
    match filter.limit {
        None => out.push(0),
        Some(l) => {
            out.push(1);
            codec::put_uvarint(out, l as u64);
        }
    }
    out.push(u8::from(filter.reversed));
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
    let filter = get_filter(&mut r)?;
    let now = r.varint()?;
    Ok(ReadCommand {
        table,
        key,
        filter,
        now,
    })
}

fn get_filter(r: &mut codec::Reader<'_>) -> DecodeResult<ReadFilter> {
    let clustering = match r.u8()? {
        0 => {
            let n = r.uvarint()?;
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(codec::get_slice(r)?);
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
        _ => return Err(bad(r, "bad clustering filter")),
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
        _ => return Err(bad(r, "bad column filter")),
    };
    let limit = match r.u8()? {
        0 => None,
        1 => Some(usize::try_from(r.uvarint()?).map_err(|_| bad(r, "limit too large"))?),
        _ => return Err(bad(r, "bad limit flag")),
    };
    let reversed = r.u8()? != 0;
    Ok(ReadFilter {
        clustering,
        columns,
        limit,
        reversed,
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

/// A token-range page request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RangeCommand {
    pub table: TableId,
    pub request: ScanRequest,
    pub now: LocalTime,
}

fn put_token_bound(out: &mut Vec<u8>, b: &Bound<Token>) {
    match b {
        Bound::Unbounded => out.push(0),
        Bound::Included(t) => {
            out.push(1);
            codec::put_varint(out, *t);
        }
        Bound::Excluded(t) => {
            out.push(2);
            codec::put_varint(out, *t);
        }
    }
}

fn get_token_bound(r: &mut codec::Reader<'_>) -> DecodeResult<Bound<Token>> {
    Ok(match r.u8()? {
        0 => Bound::Unbounded,
        1 => Bound::Included(r.varint()?),
        2 => Bound::Excluded(r.varint()?),
        _ => return Err(bad(r, "bad token bound")),
    })
}

fn put_start(out: &mut Vec<u8>, s: &ScanStart) {
    match s {
        ScanStart::Token(b) => {
            out.push(0);
            put_token_bound(out, b);
        }
        ScanStart::After(k) => {
            out.push(1);
            codec::put_bytes(out, &k.key);
        }
        ScanStart::Within {
            key,
            after,
            returned,
        } => {
            out.push(2);
            codec::put_bytes(out, &key.key);
            codec::put_bytes(out, after);
            codec::put_uvarint(out, *returned as u64);
        }
    }
}

fn get_start(r: &mut codec::Reader<'_>) -> DecodeResult<ScanStart> {
    Ok(match r.u8()? {
        0 => ScanStart::Token(get_token_bound(r)?),
        1 => ScanStart::After(DecoratedKey::new(r.bytes()?)),
        2 => ScanStart::Within {
            key: DecoratedKey::new(r.bytes()?),
            after: r.bytes()?,
            returned: usize::try_from(r.uvarint()?).map_err(|_| bad(r, "count too large"))?,
        },
        _ => return Err(bad(r, "bad scan start")),
    })
}

pub(crate) fn encode_range(c: &RangeCommand) -> Bytes {
    let mut out = Vec::new();
    put_table(&mut out, c.table);
    put_start(&mut out, &c.request.start);
    put_token_bound(&mut out, &c.request.end);
    put_filter(&mut out, &c.request.filter);
    codec::put_uvarint(&mut out, c.request.max_rows as u64);
    codec::put_varint(&mut out, c.now);
    gyre_storage::sai::put_index_query(&mut out, c.request.index.as_ref());
    Bytes::from(out)
}

pub(crate) fn decode_range(b: &Bytes) -> DecodeResult<RangeCommand> {
    let mut r = codec::Reader::new(b);
    let table = get_table(&mut r)?;
    let start = get_start(&mut r)?;
    let end = get_token_bound(&mut r)?;
    let filter = get_filter(&mut r)?;
    let max_rows = usize::try_from(r.uvarint()?).map_err(|_| bad(&r, "max_rows too large"))?;
    let now = r.varint()?;
    let index = gyre_storage::sai::get_index_query(&mut r)?;
    Ok(RangeCommand {
        table,
        request: ScanRequest {
            start,
            end,
            filter,
            max_rows,
            index,
        },
        now,
    })
}

pub(crate) fn encode_page(p: &ScanPage) -> Bytes {
    let mut out = Vec::new();
    codec::put_uvarint(&mut out, p.partitions.len() as u64);
    for part in &p.partitions {
        codec::encode_partition(&mut out, part);
    }
    match &p.resume {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_start(&mut out, s);
        }
    }
    Bytes::from(out)
}

pub(crate) fn decode_page(b: &Bytes) -> DecodeResult<ScanPage> {
    let mut r = codec::Reader::new(b);
    let n = r.uvarint()?;
    let mut partitions = Vec::new();
    for _ in 0..n {
        partitions.push(codec::decode_partition(&mut r)?);
    }
    let resume = match r.u8()? {
        0 => None,
        1 => Some(get_start(&mut r)?),
        _ => return Err(bad(&r, "bad resume flag")),
    };
    Ok(ScanPage { partitions, resume })
}

/// A logged batch: its id and its mutations.
pub(crate) fn encode_batch(id: uuid::Uuid, mutations: &[(TableId, Partition)]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(id.as_bytes());
    codec::put_uvarint(&mut out, mutations.len() as u64);
    for (t, p) in mutations {
        put_table(&mut out, *t);
        codec::encode_partition(&mut out, p);
    }
    Bytes::from(out)
}

pub(crate) type DecodedBatch = (uuid::Uuid, Vec<(TableId, Partition)>);

pub(crate) fn decode_batch(b: &Bytes) -> DecodeResult<DecodedBatch> {
    let mut r = codec::Reader::new(b);
    let id = get_table(&mut r)?.0;
    let n = r.uvarint()?;
    let mut v = Vec::new();
    for _ in 0..n {
        let t = get_table(&mut r)?;
        v.push((t, codec::decode_partition(&mut r)?));
    }
    Ok((id, v))
}

pub(crate) fn encode_table(t: TableId) -> Bytes {
    Bytes::copy_from_slice(t.0.as_bytes())
}

pub(crate) fn decode_table(b: &Bytes) -> DecodeResult<TableId> {
    get_table(&mut codec::Reader::new(b))
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
        // A MUTATION's payload is `gyre_storage::Mutation`'s encoding.
        let m = gyre_storage::Mutation::new(t, p.clone());
        let back = gyre_storage::Mutation::decode(m.encoded()).expect("decodes");
        assert_eq!((back.table(), back.update()), (t, &p));
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
            Some(p.clone())
        );
        assert_eq!(decode_data(&encode_data(None)).expect("decodes"), None);
        let enc = encode_read(&c);
        for cut in 0..enc.len() {
            assert!(decode_read(&enc.slice(..cut)).is_err());
        }
        for start in [
            ScanStart::Token(Bound::Unbounded),
            ScanStart::Token(Bound::Excluded(-5)),
            ScanStart::After(DecoratedKey::new("k")),
            ScanStart::Within {
                key: DecoratedKey::new("k"),
                after: Bytes::from_static(b"ck"),
                returned: 3,
            },
        ] {
            let rc = RangeCommand {
                table: t,
                request: ScanRequest {
                    start: start.clone(),
                    end: Bound::Included(77),
                    filter: c.filter.clone(),
                    max_rows: 100,
                    index: Some(gyre_storage::sai::IndexQuery {
                        clauses: vec![
                            gyre_storage::sai::IndexClause {
                                index: "by_v".into(),
                                op: gyre_storage::sai::TermOp::Eq(Bytes::from_static(b"x")),
                            },
                            gyre_storage::sai::IndexClause {
                                index: "by_u".into(),
                                op: gyre_storage::sai::TermOp::In(vec![
                                    Bytes::from_static(b"p"),
                                    Bytes::from_static(b"q"),
                                ]),
                            },
                            gyre_storage::sai::IndexClause {
                                index: "by_w".into(),
                                op: gyre_storage::sai::TermOp::Range {
                                    lo: Bound::Excluded(Bytes::from_static(b"a")),
                                    hi: Bound::Unbounded,
                                },
                            },
                        ],
                        ann: Some(gyre_storage::sai::AnnQuery {
                            index: "by_vec".into(),
                            vector: Bytes::from_static(&[0, 0, 128, 63]),
                            k: 10,
                        }),
                    }),
                },
                now: 5,
            };
            let enc = encode_range(&rc);
            assert_eq!(decode_range(&enc).expect("decodes"), rc);
            for cut in 0..enc.len() {
                assert!(decode_range(&enc.slice(..cut)).is_err());
            }
            let page = ScanPage {
                partitions: vec![p.clone()],
                resume: Some(start),
            };
            assert_eq!(decode_page(&encode_page(&page)).expect("decodes"), page);
        }
        assert_eq!(decode_table(&encode_table(t)).expect("decodes"), t);
        let id = uuid::Uuid::from_u128(7);
        let batch = vec![(t, p.clone()), (t, p.clone())];
        let enc = encode_batch(id, &batch);
        assert_eq!(decode_batch(&enc).expect("decodes"), (id, batch));
        for cut in 0..enc.len() {
            assert!(decode_batch(&enc.slice(..cut)).is_err());
        }
    }
}
