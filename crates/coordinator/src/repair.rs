//! Anti-entropy repair, the pure part: Merkle leaves of a token range and
//! their wire form (the orchestration is `service/repair.rs`).
//!
//! A range `(start, end]` is cut into `2^depth` equal token slices; each
//! replica folds, in token order, every partition's key and content digest
//! (the per-partition digest that digest reads compare) into its slice's
//! leaf. Replicas whose leaves agree hold the same data there; a slice whose
//! leaves differ is compared partition by partition. Only leaves are
//! exchanged: with a fixed depth the inner nodes of the tree would add no
//! information a leaf-by-leaf comparison lacks (Cassandra's `MerkleTree`
//! compares top down to save work on huge trees; at the depths used here a
//! leaf array is a few KiB).

use bytes::{Buf, Bytes};
use gyre_common::Token;
use gyre_storage::TableId;

/// Deepest tree a replica builds (2^16 leaves, 1 MiB on the wire).
pub const MAX_DEPTH: u8 = 16;

/// The Merkle leaves of one replica's data in one range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleLeaves {
    pub start: Token,
    pub end: Token,
    pub depth: u8,
    /// Per leaf: the fold of its partitions (0 when empty).
    pub hashes: Vec<u64>,
    /// Per leaf: how many partitions it holds.
    pub counts: Vec<u64>,
}

/// Width of `(start, end]` in tokens; `start == end` is the whole ring.
pub(crate) fn width(start: Token, end: Token) -> u128 {
    match end.wrapping_sub(start) as u64 {
        0 => 1u128 << 64,
        w => u128::from(w),
    }
}

impl MerkleLeaves {
    pub fn new(start: Token, end: Token, depth: u8) -> Self {
        let n = 1usize << depth.min(MAX_DEPTH);
        MerkleLeaves {
            start,
            end,
            depth: depth.min(MAX_DEPTH),
            hashes: vec![0; n],
            counts: vec![0; n],
        }
    }

    /// The leaf of `token`, which must lie in `(start, end]`.
    pub fn leaf_of(&self, token: Token) -> usize {
        let pos = u128::from(token.wrapping_sub(self.start).wrapping_sub(1) as u64);
        let n = self.hashes.len() as u128;
        ((pos * n) / width(self.start, self.end)).min(n - 1) as usize
    }

    /// The token slice `(from, to]` of leaf `i`.
    pub fn leaf_range(&self, i: usize) -> (Token, Token) {
        let (w, n) = (width(self.start, self.end), self.hashes.len() as u128);
        // Leaf i holds positions p with floor(p * n / w) == i, i.e. p in
        // [ceil(i * w / n), ceil((i + 1) * w / n)); token = start + 1 + p.
        let bound = |i: u128| (i * w).div_ceil(n);
        let from = self.start.wrapping_add(bound(i as u128) as u64 as i64);
        let to = self.start.wrapping_add(bound(i as u128 + 1) as u64 as i64);
        (from, to)
    }

    /// Adds one partition (in token order) to its leaf.
    pub fn add(&mut self, token: Token, key: &[u8], digest: u64) {
        let i = self.leaf_of(token);
        let h = &mut self.hashes[i];
        if *h == 0 {
            *h = FNV_OFFSET;
        }
        mix(h, key);
        mix(h, &digest.to_be_bytes());
        self.counts[i] += 1;
    }

    /// Leaves where any two trees differ (all built over the same range
    /// and depth).
    pub fn mismatches(trees: &[MerkleLeaves]) -> Vec<usize> {
        let Some(first) = trees.first() else {
            return Vec::new();
        };
        (0..first.hashes.len())
            .filter(|&i| trees.iter().any(|t| t.hashes.get(i) != first.hashes.get(i)))
            .collect()
    }

    pub fn partitions(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Appends the leaves' wire form (the request names the slice): per
    /// leaf its partition count as a LEB128 varint (one byte up to 127)
    /// and, unless it is empty, its hash (8 bytes); so an empty leaf costs
    /// a byte and a refinement's few leaves ~9 bytes each.
    pub fn encode_leaves(&self, out: &mut Vec<u8>) {
        for (h, c) in self.hashes.iter().zip(&self.counts) {
            let mut v = *c;
            while v >= 0x80 {
                out.push((v as u8 & 0x7f) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
            if *c > 0 {
                out.extend_from_slice(&h.to_be_bytes());
            }
        }
    }

    /// Reads the leaves of `slice` from the front of `b`.
    pub fn decode_leaves(b: &mut Bytes, slice: &TreeSlice) -> Result<Self, String> {
        let mut t = MerkleLeaves::new(slice.start, slice.end, slice.depth);
        for i in 0..t.hashes.len() {
            let mut c = 0u64;
            for shift in (0..64).step_by(7) {
                if !b.has_remaining() {
                    return Err("short merkle leaf count".into());
                }
                let byte = b.get_u8();
                c |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            t.counts[i] = c;
            if c > 0 {
                if b.remaining() < 8 {
                    return Err("short merkle leaves".into());
                }
                t.hashes[i] = b.get_u64();
            }
        }
        Ok(t)
    }
}

/// Most slices one REPAIR_TREE request carries.
pub const MAX_SLICES: usize = 1024;
/// Most leaves one request may ask for in all (bounds what a replica
/// allocates for it).
pub const MAX_LEAVES: usize = 1 << 17;

/// One slice `(start, end]` to cut into `2^depth` leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeSlice {
    pub start: Token,
    pub end: Token,
    pub depth: u8,
}

/// A REPAIR_TREE request: build the leaves of `table` over each slice (a
/// whole range first, then the mismatching slices being refined, many per
/// request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeRequest {
    pub table: TableId,
    /// The coordinator's clock (seconds), so TTLs expire alike everywhere.
    pub now: i64,
    pub slices: Vec<TreeSlice>,
}

impl TreeRequest {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(28 + 17 * self.slices.len());
        out.extend_from_slice(self.table.0.as_bytes());
        out.extend_from_slice(&self.now.to_be_bytes());
        out.extend_from_slice(&(self.slices.len() as u32).to_be_bytes());
        for s in &self.slices {
            out.extend_from_slice(&s.start.to_be_bytes());
            out.extend_from_slice(&s.end.to_be_bytes());
            out.push(s.depth);
        }
        out.into()
    }

    pub fn decode(mut b: Bytes) -> Result<Self, String> {
        if b.remaining() < 28 {
            return Err(format!("repair tree request of {} bytes", b.remaining()));
        }
        let table = TableId(uuid::Uuid::from_slice(&b.split_to(16)).map_err(|e| e.to_string())?);
        let (now, n) = (b.get_i64(), b.get_u32() as usize);
        if n > MAX_SLICES || b.remaining() != 17 * n {
            return Err(format!(
                "repair tree request: {n} slices (at most {MAX_SLICES}) in {} bytes",
                b.remaining()
            ));
        }
        let mut slices = Vec::with_capacity(n);
        let mut leaves = 0usize;
        for _ in 0..n {
            let (start, end, depth) = (b.get_i64(), b.get_i64(), b.get_u8());
            if depth > MAX_DEPTH {
                return Err(format!("merkle depth {depth} over {MAX_DEPTH}"));
            }
            leaves += 1 << depth;
            slices.push(TreeSlice { start, end, depth });
        }
        if leaves > MAX_LEAVES {
            return Err(format!(
                "repair tree request for {leaves} leaves (at most {MAX_LEAVES})"
            ));
        }
        Ok(TreeRequest { table, now, slices })
    }

    /// The reply: every slice's leaves, in the request's order.
    pub fn encode_reply(trees: &[MerkleLeaves]) -> Bytes {
        let mut out = Vec::with_capacity(trees.iter().map(|t| 9 * t.hashes.len()).sum());
        // (At most 9 bytes a leaf below 128 partitions; more grows it.)
        for t in trees {
            t.encode_leaves(&mut out);
        }
        out.into()
    }

    pub fn decode_reply(&self, mut b: Bytes) -> Result<Vec<MerkleLeaves>, String> {
        let trees = self
            .slices
            .iter()
            .map(|s| MerkleLeaves::decode_leaves(&mut b, s))
            .collect::<Result<Vec<_>, _>>()?;
        if b.has_remaining() {
            return Err(format!("{} bytes after the merkle leaves", b.remaining()));
        }
        Ok(trees)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over a length-prefixed field.
fn mix(h: &mut u64, bytes: &[u8]) {
    for b in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_token_of_a_range_falls_in_the_leaf_whose_slice_holds_it() {
        for (start, end) in [
            (-100, 100),
            (i64::MAX - 5, i64::MIN + 7), // wraps
            (7, 7),                       // the whole ring
            (i64::MIN, i64::MAX),
        ] {
            for depth in [0, 1, 3, 5] {
                let t = MerkleLeaves::new(start, end, depth);
                let n = t.hashes.len();
                // Slices tile the range: each starts where the last ended.
                assert_eq!(t.leaf_range(0).0, start);
                assert_eq!(t.leaf_range(n - 1).1, end);
                for i in 1..n {
                    assert_eq!(t.leaf_range(i).0, t.leaf_range(i - 1).1);
                }
                let probes = [1i64, 2, 3, 50, 99, 100, 199, 200];
                for off in probes {
                    let token = start.wrapping_add(off);
                    if width(start, end) < off as u128 {
                        continue;
                    }
                    let i = t.leaf_of(token);
                    let (from, to) = t.leaf_range(i);
                    let (d, w) = (
                        token.wrapping_sub(from) as u64,
                        to.wrapping_sub(from) as u64,
                    );
                    let inside = w == 0 || (d >= 1 && d <= w);
                    assert!(
                        inside,
                        "{start} {end} d{depth}: {token} not in leaf {i} ({from}, {to}]"
                    );
                }
            }
        }
    }

    #[test]
    fn trees_differ_exactly_where_the_data_does_and_survive_the_wire() {
        let mut a = MerkleLeaves::new(-1000, 1000, 3);
        let mut b = a.clone();
        for (t, k) in [(-900, "a"), (-10, "b"), (500, "c")] {
            a.add(t, k.as_bytes(), 1);
            b.add(t, k.as_bytes(), 1);
        }
        assert!(MerkleLeaves::mismatches(&[a.clone(), b.clone()]).is_empty());
        b.add(700, b"d", 1);
        let mut c = a.clone();
        c.hashes[a.leaf_of(-10)] ^= 1;
        assert_eq!(MerkleLeaves::mismatches(&[a.clone(), b.clone(), c]), {
            let mut v = vec![a.leaf_of(-10), a.leaf_of(700)];
            v.sort();
            v
        });
        b.counts[0] = 300; // a two-byte count
        let req = TreeRequest {
            table: TableId(uuid::Uuid::from_u128(3)),
            now: 9,
            slices: vec![
                TreeSlice {
                    start: -1000,
                    end: 1000,
                    depth: 3,
                },
                TreeSlice {
                    start: 1,
                    end: 2,
                    depth: 0,
                },
            ],
        };
        assert_eq!(TreeRequest::decode(req.encode()).unwrap(), req);
        let one = MerkleLeaves::new(1, 2, 0);
        let reply = TreeRequest::encode_reply(&[b.clone(), one.clone()]);
        // b: 4 of 8 leaves hold partitions, one of them 300 (a 2-byte
        // count); empty leaves are 1 byte.
        assert_eq!(reply.len(), 4 * 9 + 1 + 4 + 1);
        assert_eq!(req.decode_reply(reply.clone()).unwrap(), vec![b, one]);
        assert!(req.decode_reply(reply.slice(..20)).is_err());
        assert!(req
            .decode_reply(Bytes::from([&reply[..], b"x"].concat()))
            .is_err());
        let mut huge = req.clone();
        huge.slices = vec![huge.slices[0]; MAX_SLICES + 1];
        assert!(TreeRequest::decode(huge.encode()).is_err());
        huge.slices = vec![
            TreeSlice {
                start: 0,
                end: 1,
                depth: MAX_DEPTH
            };
            3
        ];
        assert!(TreeRequest::decode(huge.encode()).is_err());
        assert!(TreeRequest::decode(Bytes::from_static(b"xx")).is_err());
    }
}
