//! Approximate nearest-neighbour search for vector indexes: a
//! hierarchical navigable small-world graph (HNSW, Malkov & Yashunin),
//! one per index segment and one per memtable (see [`crate::sai`]).
//!
//! Nodes are numbered in insertion order; the caller maps them to rows.
//! Scores follow Cassandra's similarity functions (higher is closer), so
//! a graph's scores are the ones `similarity_*` shows to clients.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

/// How two vectors compare, as Cassandra's `similarity_function` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Similarity {
    Cosine,
    Euclidean,
    DotProduct,
}

impl Similarity {
    /// The option's value (`cosine`, `EUCLIDEAN`, ...), any case.
    pub fn from_option(s: &str) -> Option<Similarity> {
        Some(match s.to_ascii_lowercase().as_str() {
            "cosine" => Similarity::Cosine,
            "euclidean" => Similarity::Euclidean,
            "dot_product" => Similarity::DotProduct,
            _ => return None,
        })
    }

    /// Cassandra's score in [0, 1] (for dot product, of unit vectors).
    /// `None` for cosine with a zero vector, which has no direction.
    pub fn score(self, a: &[f32], b: &[f32]) -> Option<f32> {
        let dot = dot(a, b);
        Some(match self {
            Similarity::Cosine => {
                let (na, nb) = (dot_self(a), dot_self(b));
                if na == 0.0 || nb == 0.0 {
                    return None;
                }
                (1.0 + dot / (na * nb).sqrt()) / 2.0
            }
            Similarity::Euclidean => 1.0 / (1.0 + l2(a, b)),
            Similarity::DotProduct => (1.0 + dot) / 2.0,
        })
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four lanes so the compiler vectorizes without fast-math.
    let mut acc = [0f32; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn dot_self(a: &[f32]) -> f32 {
    dot(a, a)
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// A vector's raw CQL bytes (`vector<float, n>`: n big-endian floats) as
/// floats; `None` when the length is not `dim` floats.
pub fn decode_vector(raw: &[u8], dim: usize) -> Option<Vec<f32>> {
    if raw.len() != dim.checked_mul(4)? {
        return None;
    }
    Some(
        raw.chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// A node and its score against the query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub score: f32,
    pub node: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.node.cmp(&self.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Build parameters: `m` links per node and level (twice that on level
/// 0), `ef_construction` candidates while linking a new node.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub m: usize,
    pub ef_construction: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            m: 16,
            ef_construction: 100,
        }
    }
}

/// An HNSW graph over vectors of one dimension.
#[derive(Debug)]
pub struct Graph {
    dim: usize,
    sim: Similarity,
    params: Params,
    /// Node i's vector at `i * dim` (unit length under cosine).
    vectors: Vec<f32>,
    /// Node i's links per level (`links[i][0]` is level 0).
    links: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    rng: u64,
}

impl Graph {
    pub fn new(dim: usize, sim: Similarity, params: Params) -> Graph {
        Graph {
            dim,
            sim,
            params,
            vectors: Vec::new(),
            links: Vec::new(),
            entry: None,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn similarity(&self) -> Similarity {
        self.sim
    }

    fn vector(&self, n: u32) -> &[f32] {
        let i = n as usize * self.dim;
        &self.vectors[i..i + self.dim]
    }

    /// The query as the graph compares it (unit length under cosine);
    /// `None` for a wrong dimension or a zero vector under cosine.
    pub fn prepare(&self, q: &[f32]) -> Option<Vec<f32>> {
        if q.len() != self.dim {
            return None;
        }
        match self.sim {
            Similarity::Cosine => {
                let n = dot_self(q).sqrt();
                (n > 0.0 && n.is_finite()).then(|| q.iter().map(|x| x / n).collect())
            }
            _ => Some(q.to_vec()),
        }
    }

    /// Score of node `n` against a prepared query.
    pub fn score(&self, q: &[f32], n: u32) -> f32 {
        let v = self.vector(n);
        match self.sim {
            // Both unit length: the cosine is the dot product.
            Similarity::Cosine => ((1.0 + dot(q, v)) / 2.0).clamp(0.0, 1.0),
            Similarity::Euclidean => 1.0 / (1.0 + l2(q, v)),
            Similarity::DotProduct => (1.0 + dot(q, v)) / 2.0,
        }
    }

    fn random_level(&mut self) -> usize {
        // splitmix64: deterministic graphs for a given insertion order.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.params.m.max(2) as f64).ln();
        ((-u.ln() * ml) as usize).min(16)
    }

    /// Adds a vector; returns its node number, or `None` (not added) for a
    /// wrong dimension, a non-finite value, or a zero vector under cosine.
    pub fn insert(&mut self, v: &[f32]) -> Option<u32> {
        if v.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let v = self.prepare(v)?;
        let node = u32::try_from(self.links.len()).ok()?;
        let level = self.random_level();
        self.vectors.extend_from_slice(&v);
        self.links.push(vec![Vec::new(); level + 1]);
        let Some(entry) = self.entry else {
            self.entry = Some(node);
            return Some(node);
        };
        let top = self.links[entry as usize].len() - 1;
        let mut ep = Scored {
            score: self.score(&v, entry),
            node: entry,
        };
        for l in (level + 1..=top).rev() {
            ep = self.greedy(&v, ep, l);
        }
        let mut eps = vec![ep];
        for l in (0..=level.min(top)).rev() {
            let found = self.search_level(&v, &eps, self.params.ef_construction, l, &|_| true);
            let cap = if l == 0 {
                self.params.m * 2
            } else {
                self.params.m
            };
            let chosen = self.select(&found, self.params.m);
            self.links[node as usize][l] = chosen.iter().map(|s| s.node).collect();
            for s in &chosen {
                self.link(s.node, node, l, cap);
            }
            eps = found;
        }
        if level > top {
            self.entry = Some(node);
        }
        Some(node)
    }

    /// Adds `to` to `from`'s links on level `l`, pruning to `cap`.
    fn link(&mut self, from: u32, to: u32, l: usize, cap: usize) {
        let list = &mut self.links[from as usize][l];
        list.push(to);
        if list.len() <= cap {
            return;
        }
        let base = self.vector(from).to_vec();
        let mut scored: Vec<Scored> = self.links[from as usize][l]
            .iter()
            .map(|&n| Scored {
                score: self.score(&base, n),
                node: n,
            })
            .collect();
        scored.sort_by(|a, b| b.cmp(a));
        let kept = self.select(&scored, cap);
        self.links[from as usize][l] = kept.iter().map(|s| s.node).collect();
    }

    /// HNSW's neighbour heuristic: take candidates best first, skipping one
    /// that is closer to an already chosen neighbour than to the base (it
    /// is reachable through that one), then fill up with the skipped.
    fn select(&self, sorted_best_first: &[Scored], m: usize) -> Vec<Scored> {
        let mut chosen: Vec<Scored> = Vec::with_capacity(m);
        let mut skipped = Vec::new();
        for c in sorted_best_first {
            if chosen.len() >= m {
                break;
            }
            let cv = self.vector(c.node);
            let diverse = chosen.iter().all(|s| self.score(cv, s.node) < c.score);
            if diverse {
                chosen.push(*c);
            } else {
                skipped.push(*c);
            }
        }
        for s in skipped {
            if chosen.len() >= m {
                break;
            }
            chosen.push(s);
        }
        chosen
    }

    fn greedy(&self, q: &[f32], mut ep: Scored, l: usize) -> Scored {
        loop {
            let mut moved = false;
            for &n in &self.links[ep.node as usize][l] {
                let s = self.score(q, n);
                if s > ep.score {
                    ep = Scored { score: s, node: n };
                    moved = true;
                }
            }
            if !moved {
                return ep;
            }
        }
    }

    /// Best-first search of one level from `eps`: the `ef` best nodes that
    /// pass `keep`, best first. Nodes that do not pass are still walked
    /// through, so a filter narrows the answer, not the paths.
    fn search_level(
        &self,
        q: &[f32],
        eps: &[Scored],
        ef: usize,
        l: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let mut seen = Visited::new(self.links.len());
        // Max-heap of nodes to expand; min-heap (via Reverse) of results.
        let mut todo: BinaryHeap<Scored> = BinaryHeap::new();
        let mut best: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::new();
        for e in eps {
            if seen.insert(e.node) {
                todo.push(*e);
                if keep(e.node) {
                    best.push(std::cmp::Reverse(*e));
                }
            }
        }
        while best.len() > ef {
            best.pop();
        }
        while let Some(c) = todo.pop() {
            if best.len() >= ef && best.peek().is_some_and(|w| c.score < w.0.score) {
                break;
            }
            for &n in &self.links[c.node as usize][l] {
                if !seen.insert(n) {
                    continue;
                }
                let s = Scored {
                    score: self.score(q, n),
                    node: n,
                };
                let worst = best.peek().map(|w| w.0.score);
                if best.len() < ef || worst.is_some_and(|w| s.score > w) {
                    todo.push(s);
                    if keep(n) {
                        best.push(std::cmp::Reverse(s));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
        }
        let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// The `k` nodes (passing `keep`) closest to `query`, best first,
    /// searching with `ef` (≥ k) candidates on the bottom level.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<Scored> {
        let Some(q) = self.prepare(query) else {
            return Vec::new();
        };
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        let top = self.links[entry as usize].len() - 1;
        let mut ep = Scored {
            score: self.score(&q, entry),
            node: entry,
        };
        for l in (1..=top).rev() {
            ep = self.greedy(&q, ep, l);
        }
        let mut out = self.search_level(&q, &[ep], ef.max(k), 0, keep);
        out.truncate(k);
        out
    }

    /// The exact `k` best of `nodes` (a brute-force scan, for small or
    /// narrowly filtered sets).
    pub fn exact(&self, query: &[f32], k: usize, nodes: impl Iterator<Item = u32>) -> Vec<Scored> {
        let Some(q) = self.prepare(query) else {
            return Vec::new();
        };
        let mut best: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::new();
        for n in nodes {
            let s = Scored {
                score: self.score(&q, n),
                node: n,
            };
            if best.len() < k {
                best.push(std::cmp::Reverse(s));
            } else if best.peek().is_some_and(|w| s > w.0) {
                best.pop();
                best.push(std::cmp::Reverse(s));
            }
        }
        let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        out.sort_by(|a, b| b.cmp(a));
        out
    }

    /// Approximate memory held, in bytes.
    pub fn memory(&self) -> usize {
        self.vectors.len() * 4
            + self
                .links
                .iter()
                .map(|l| l.iter().map(|v| v.capacity() * 4 + 24).sum::<usize>() + 24)
                .sum::<usize>()
    }
}

/// Nodes already scored in one search (a bitset: cheaper than hashing).
struct Visited(Vec<u64>);

impl Visited {
    fn new(n: usize) -> Visited {
        Visited(vec![0; n.div_ceil(64)])
    }

    /// Marks `n`; true when it was not marked before.
    fn insert(&mut self, n: u32) -> bool {
        let (w, b) = ((n / 64) as usize, n % 64);
        let fresh = self.0[w] & (1 << b) == 0;
        self.0[w] |= 1 << b;
        fresh
    }
}

/// The `ef` a search uses for `k` results (more candidates than results:
/// the recall/latency trade-off).
pub fn default_ef(k: usize) -> usize {
    (k * 2).max(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    fn random(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
            .collect()
    }

    fn recall(sim: Similarity, n: usize, dim: usize) -> f64 {
        let data = random(n, dim, 7);
        let mut g = Graph::new(dim, sim, Params::default());
        for v in &data {
            g.insert(v).expect("inserted");
        }
        let queries = random(50, dim, 11);
        let k = 10;
        let mut hits = 0;
        for q in &queries {
            let got: HashSet<u32> = g
                .search(q, k, default_ef(k), &|_| true)
                .iter()
                .map(|s| s.node)
                .collect();
            let want = g.exact(q, k, 0..n as u32);
            // Exact scores agree with the public score function.
            let top = &data[want[0].node as usize];
            let s = sim.score(q, top).expect("score");
            assert!((s - want[0].score).abs() < 1e-4, "{s} vs {}", want[0].score);
            hits += want.iter().filter(|w| got.contains(&w.node)).count();
        }
        hits as f64 / (queries.len() * k) as f64
    }

    #[test]
    fn recall_against_brute_force() {
        for sim in [
            Similarity::Cosine,
            Similarity::Euclidean,
            Similarity::DotProduct,
        ] {
            let r = recall(sim, 1500, 16);
            assert!(r >= 0.9, "{sim:?}: recall@10 {r}");
        }
    }

    #[test]
    fn small_graphs_are_exact_and_filters_hold() {
        let data = random(40, 4, 3);
        let mut g = Graph::new(4, Similarity::Euclidean, Params::default());
        for v in &data {
            g.insert(v);
        }
        let q = [0.1, 0.2, -0.3, 0.4];
        let want = g.exact(&q, 5, 0..40);
        let got = g.search(&q, 5, 64, &|_| true);
        assert_eq!(got, want);
        let even = g.search(&q, 5, 64, &|n| n % 2 == 0);
        assert_eq!(even.len(), 5);
        assert!(even.iter().all(|s| s.node % 2 == 0));
        assert_eq!(even, g.exact(&q, 5, (0..40).filter(|n| n % 2 == 0)));
    }

    #[test]
    fn bad_vectors_are_not_inserted() {
        let mut g = Graph::new(3, Similarity::Cosine, Params::default());
        assert_eq!(g.insert(&[0.0, 0.0, 0.0]), None);
        assert_eq!(g.insert(&[1.0, 2.0]), None);
        assert_eq!(g.insert(&[f32::NAN, 1.0, 1.0]), None);
        assert_eq!(g.insert(&[1.0, 0.0, 0.0]), Some(0));
        assert!(g.search(&[0.0, 0.0, 0.0], 1, 8, &|_| true).is_empty());
        let v = [1.0f32, -2.5, 3.25];
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(decode_vector(&raw, 3), Some(v.to_vec()));
        assert_eq!(decode_vector(&raw, 2), None);
    }
}
