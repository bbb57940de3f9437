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
fn width(start: Token, end: Token) -> u128 {
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

    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(17 + self.hashes.len() * 16);
        out.extend_from_slice(&self.start.to_be_bytes());
        out.extend_from_slice(&self.end.to_be_bytes());
        out.push(self.depth);
        for (h, c) in self.hashes.iter().zip(&self.counts) {
            out.extend_from_slice(&h.to_be_bytes());
            out.extend_from_slice(&c.to_be_bytes());
        }
        out.into()
    }

    pub fn decode(mut b: Bytes) -> Result<Self, String> {
        if b.remaining() < 17 {
            return Err("short merkle leaves".into());
        }
        let (start, end, depth) = (b.get_i64(), b.get_i64(), b.get_u8());
        if depth > MAX_DEPTH {
            return Err(format!("merkle depth {depth} over {MAX_DEPTH}"));
        }
        let n = 1usize << depth;
        if b.remaining() != n * 16 {
            return Err(format!("{} bytes for {n} merkle leaves", b.remaining()));
        }
        let mut t = MerkleLeaves::new(start, end, depth);
        for i in 0..n {
            t.hashes[i] = b.get_u64();
            t.counts[i] = b.get_u64();
        }
        Ok(t)
    }
}

/// A REPAIR_TREE request: build the leaves of `table` over `(start, end]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeRequest {
    pub table: TableId,
    pub start: Token,
    pub end: Token,
    pub depth: u8,
    /// The coordinator's clock (seconds), so TTLs expire alike everywhere.
    pub now: i64,
}

impl TreeRequest {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(41);
        out.extend_from_slice(self.table.0.as_bytes());
        out.extend_from_slice(&self.start.to_be_bytes());
        out.extend_from_slice(&self.end.to_be_bytes());
        out.push(self.depth);
        out.extend_from_slice(&self.now.to_be_bytes());
        out.into()
    }

    pub fn decode(mut b: Bytes) -> Result<Self, String> {
        if b.remaining() != 41 {
            return Err(format!("repair tree request of {} bytes", b.remaining()));
        }
        let table = TableId(uuid::Uuid::from_slice(&b.split_to(16)).map_err(|e| e.to_string())?);
        let (start, end, depth, now) = (b.get_i64(), b.get_i64(), b.get_u8(), b.get_i64());
        if depth > MAX_DEPTH {
            return Err(format!("merkle depth {depth} over {MAX_DEPTH}"));
        }
        Ok(TreeRequest {
            table,
            start,
            end,
            depth,
            now,
        })
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
        assert_eq!(MerkleLeaves::decode(b.encode()).unwrap(), b);
        assert!(MerkleLeaves::decode(b.encode().slice(..20)).is_err());
        let req = TreeRequest {
            table: TableId(uuid::Uuid::from_u128(3)),
            start: 1,
            end: 2,
            depth: 4,
            now: 9,
        };
        assert_eq!(TreeRequest::decode(req.encode()).unwrap(), req);
        assert!(TreeRequest::decode(Bytes::from_static(b"xx")).is_err());
    }
}
