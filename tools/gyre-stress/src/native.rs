//! The wire side of `--driver native`: a lean CQL v4 client for the load
//! loop.
//!
//! The scylla driver spends about as much CPU per request as a Gyre node
//! spends serving it (a task, a channel hop and a oneshot per request, full
//! row deserialization); on a small machine that CPU is taken from the
//! server being measured. The native driver is built like redis-benchmark:
//! an event loop per task (in `main.rs`) owning one connection to every
//! node and a share of the requests in flight. This module holds the parts
//! that need no socket: EXECUTE frames encoded straight into a connection's
//! output buffer, a response read by its header and result kind (cells are
//! only sliced out when a read is validated), and the token ring that
//! routes each key to its primary replica.

use bytes::{Buf, Bytes};
use gyre_common::token_of;

/// Protocol v4, request direction.
const VERSION: u8 = 0x04;
const OPCODE_EXECUTE: u8 = 0x0A;
pub const OPCODE_ERROR: u8 = 0x00;
pub const OPCODE_RESULT: u8 = 0x08;
/// Query flags: values present, skip result metadata.
const FLAGS_VALUES_SKIP_METADATA: u8 = 0x01 | 0x02;
/// Rows metadata flags.
const GLOBAL_TABLES_SPEC: i32 = 0x0001;
const HAS_MORE_PAGES: i32 = 0x0002;
const NO_METADATA: i32 = 0x0004;

/// The wire code of a consistency level.
pub fn consistency_code(c: scylla::statement::Consistency) -> u16 {
    use scylla::statement::Consistency as C;
    match c {
        C::Any => 0x0000,
        C::One => 0x0001,
        C::Two => 0x0002,
        C::Three => 0x0003,
        C::Quorum => 0x0004,
        C::All => 0x0005,
        C::LocalQuorum => 0x0006,
        C::EachQuorum => 0x0007,
        C::Serial => 0x0008,
        C::LocalSerial => 0x0009,
        C::LocalOne => 0x000A,
    }
}

/// Appends the header and fixed part of an EXECUTE frame to `out`; push
/// each value with [`push_value`], then close it with [`finish_frame`].
/// Returns where the frame starts.
pub fn begin_execute(
    out: &mut Vec<u8>,
    stream: i16,
    id: &[u8],
    consistency: u16,
    values: u16,
) -> usize {
    let start = out.len();
    out.extend_from_slice(&[VERSION, 0]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(OPCODE_EXECUTE);
    out.extend_from_slice(&[0; 4]); // body length, patched by finish_frame
    out.extend_from_slice(&(id.len() as u16).to_be_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&consistency.to_be_bytes());
    out.push(FLAGS_VALUES_SKIP_METADATA);
    out.extend_from_slice(&values.to_be_bytes());
    start
}

/// Appends one `[bytes]` value.
pub fn push_value(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&(value.len() as i32).to_be_bytes());
    out.extend_from_slice(value);
}

/// Writes the body length of the frame that starts at `start`.
pub fn finish_frame(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 9) as u32;
    out[start + 5..start + 9].copy_from_slice(&len.to_be_bytes());
}

/// What a RESULT body says, read without decoding more than needed.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Void, or any result kind other than rows (SET_KEYSPACE, ...).
    Done,
    /// A rows result: the row count, and the first row's cells when asked.
    Rows {
        count: usize,
        first: Option<Vec<Option<Bytes>>>,
    },
}

fn bytes_field(b: &mut Bytes) -> Option<Option<Bytes>> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_i32();
    if n < 0 {
        return Some(None);
    }
    let n = n as usize;
    (b.remaining() >= n).then(|| Some(b.split_to(n)))
}

/// Reads a RESULT body. `None` for a body this reader does not handle (a
/// malformed one, or rows that carry metadata although the request asked
/// to skip it); the caller then counts the request as failed.
pub fn read_result(body: &Bytes, want_first_row: bool) -> Option<Outcome> {
    let mut b = body.clone();
    if b.remaining() < 4 {
        return None;
    }
    if b.get_i32() != 2 {
        return Some(Outcome::Done);
    }
    if b.remaining() < 8 {
        return None;
    }
    let flags = b.get_i32();
    let columns = usize::try_from(b.get_i32()).ok()?;
    if flags & HAS_MORE_PAGES != 0 {
        bytes_field(&mut b)?;
    }
    if flags & NO_METADATA == 0 && columns > 0 {
        // Asked with SKIP_METADATA: a server that sends it anyway is read
        // by the full decoder, not here.
        let _ = GLOBAL_TABLES_SPEC;
        return None;
    }
    if b.remaining() < 4 {
        return None;
    }
    let count = usize::try_from(b.get_i32()).ok()?;
    let first = if want_first_row && count > 0 {
        let mut cells = Vec::with_capacity(columns);
        for _ in 0..columns {
            cells.push(bytes_field(&mut b)?);
        }
        Some(cells)
    } else {
        None
    };
    Some(Outcome::Rows { count, first })
}

/// Token ring of the nodes the load goes to: each key to the node owning
/// its token (its primary replica), as a token-aware driver routes.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (token, node index), sorted by token.
    points: Vec<(i64, usize)>,
    nodes: usize,
}

impl Ring {
    /// A ring from each node's tokens (node `i` owns `tokens[i]`). A node
    /// without tokens gets no keys.
    pub fn new(tokens: &[Vec<i64>]) -> Ring {
        let mut points: Vec<(i64, usize)> = tokens
            .iter()
            .enumerate()
            .flat_map(|(i, ts)| ts.iter().map(move |t| (*t, i)))
            .collect();
        points.sort_unstable();
        Ring {
            points,
            nodes: tokens.len(),
        }
    }

    /// The node a bigint key is sent to; without any token, round robin.
    pub fn node_of(&self, key: u64) -> usize {
        if self.points.is_empty() {
            return (key % self.nodes.max(1) as u64) as usize;
        }
        let token = token_of(&(key as i64).to_be_bytes());
        let i = self.points.partition_point(|(t, _)| *t < token);
        self.points[i % self.points.len()].1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use gyre_protocol::{
        CqlResult, Request, RequestFrame, Response, ResponseFrame, Rows, RowsMetadata, Value,
    };

    #[test]
    fn execute_frames_decode_as_the_server_reads_them() {
        let mut out = Vec::new();
        let s = begin_execute(&mut out, 7, b"abc", 4, 2);
        push_value(&mut out, &42i64.to_be_bytes());
        push_value(&mut out, b"value");
        finish_frame(&mut out, s);
        let mut buf = BytesMut::from(&out[..]);
        let frame = gyre_protocol::decode_frame(&mut buf, 1 << 20)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty());
        let rf = RequestFrame::decode(&frame, gyre_protocol::Compression::None, 1 << 20).unwrap();
        assert_eq!(rf.stream, 7);
        let Request::Execute(e) = rf.request else {
            panic!("not EXECUTE: {:?}", rf.request)
        };
        assert_eq!(&e.id[..], b"abc");
        assert!(e.params.skip_metadata);
        assert_eq!(e.params.consistency, gyre_protocol::Consistency::Quorum);
        let gyre_protocol::Values::Positional(v) = e.params.values else {
            panic!("values")
        };
        assert_eq!(
            v,
            vec![
                Value::Bytes(Bytes::copy_from_slice(&42i64.to_be_bytes())),
                Value::Bytes(Bytes::from_static(b"value"))
            ]
        );
    }

    fn result_body(r: CqlResult) -> Bytes {
        let f =
            ResponseFrame::new(1, Response::Result(r)).to_frame(gyre_protocol::Compression::None);
        f.body
    }

    #[test]
    fn results_are_read_by_kind() {
        assert_eq!(
            read_result(&result_body(CqlResult::Void), true),
            Some(Outcome::Done)
        );
        let mut meta = RowsMetadata::new(Vec::new());
        meta.no_metadata = true;
        meta.columns_count = 2;
        let rows = Rows {
            metadata: meta,
            rows: vec![vec![Some(Bytes::from_static(b"x")), None]],
        };
        let body = result_body(CqlResult::Rows(rows));
        assert_eq!(
            read_result(&body, true),
            Some(Outcome::Rows {
                count: 1,
                first: Some(vec![Some(Bytes::from_static(b"x")), None])
            })
        );
        assert_eq!(
            read_result(&body, false),
            Some(Outcome::Rows {
                count: 1,
                first: None
            })
        );
        // Truncated or garbage bodies are refused, never a panic.
        for cut in 0..body.len() {
            let _ = read_result(&body.slice(..cut), true);
        }
        let mut junk = BytesMut::new();
        junk.put_i32(2);
        junk.put_i32(NO_METADATA);
        junk.put_i32(-5);
        assert_eq!(read_result(&junk.freeze(), true), None);
    }

    #[test]
    fn keys_go_to_the_owner_of_their_token() {
        let ring = Ring::new(&[vec![-100, 5_000], vec![0, i64::MAX - 1]]);
        for key in 0..1000u64 {
            let t = token_of(&(key as i64).to_be_bytes());
            let want = if t <= -100 {
                0
            } else if t <= 0 {
                1
            } else if t <= 5_000 {
                0
            } else if t < i64::MAX {
                1
            } else {
                0
            };
            assert_eq!(ring.node_of(key), want, "key {key}");
        }
        assert_eq!(Ring::new(&[vec![], vec![]]).node_of(3), 1);
    }
}
