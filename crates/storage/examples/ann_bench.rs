//! Recall and latency of the vector index's graph (`gyre_storage::ann`)
//! against brute force, on seeded random vectors.
//!
//! `cargo run --release -p gyre-storage --example ann_bench -- [ROWS] [DIM] [QUERIES] [K] [SIM] [EF,EF,...]`
//! (defaults 100000 128 1000 10 cosine, ef = the engine's default for k).
//! Prints the build time, then per ef recall@K and per-query latency (p50 /
//! p99) of the graph search, and of an exact scan, single-threaded.

use std::collections::HashSet;
use std::time::Instant;

use gyre_storage::ann::{default_ef, Graph, Params, Similarity};
use rand::{Rng, SeedableRng};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (rows, dim, queries, k) = (arg(0, 100_000), arg(1, 128), arg(2, 1000), arg(3, 10));
    let sim = args
        .get(4)
        .and_then(|s| Similarity::from_option(s))
        .unwrap_or(Similarity::Cosine);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut gen = |n: usize| -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
            .collect()
    };
    let data = gen(rows);
    let qs = gen(queries);
    let t = Instant::now();
    let mut g = Graph::new(dim, sim, Params::default());
    for v in &data {
        g.insert(v);
    }
    let build = t.elapsed();
    let efs: Vec<usize> = args
        .get(5)
        .map(|s| s.split(',').filter_map(|e| e.parse().ok()).collect())
        .unwrap_or_else(|| vec![default_ef(k)]);
    println!(
        "rows={rows} dim={dim} queries={queries} k={k} sim={sim:?} M={} ef_construction={}",
        Params::default().m,
        Params::default().ef_construction
    );
    println!(
        "build: {:.1} s ({:.0} inserts/s), graph memory ~{} MB",
        build.as_secs_f64(),
        rows as f64 / build.as_secs_f64(),
        g.memory() / (1 << 20)
    );
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    let mut exact_us = Vec::with_capacity(queries);
    let mut truth = Vec::with_capacity(queries);
    for q in &qs {
        let t = Instant::now();
        let want = g.exact(q, k, 0..rows as u32);
        exact_us.push(t.elapsed().as_secs_f64() * 1e6);
        truth.push(want);
    }
    println!(
        "brute force: p50 {:.0} us, p99 {:.0} us",
        pct(&mut exact_us, 0.5),
        pct(&mut exact_us, 0.99)
    );
    for ef in efs {
        let mut ann_us = Vec::with_capacity(queries);
        let mut hits = 0usize;
        for (q, want) in qs.iter().zip(&truth) {
            let t = Instant::now();
            let got = g.search(q, k, ef, &|_| true);
            ann_us.push(t.elapsed().as_secs_f64() * 1e6);
            let got: HashSet<u32> = got.iter().map(|s| s.node).collect();
            hits += want.iter().filter(|w| got.contains(&w.node)).count();
        }
        println!(
            "ef={ef}: recall@{k} {:.4}, graph search p50 {:.0} us, p99 {:.0} us",
            hits as f64 / (queries * k) as f64,
            pct(&mut ann_us, 0.5),
            pct(&mut ann_us, 0.99)
        );
    }
}
