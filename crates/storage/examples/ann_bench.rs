//! Recall and latency of the vector index (`gyre_storage::ann`) against
//! brute force, on seeded random vectors.
//!
//! `cargo run --release -p gyre-storage --example ann_bench -- [ROWS] [DIM] [QUERIES] [K] [SIM] [EF,EF,...] [DATA]`
//! (defaults 100000 128 1000 10 cosine, ef = the default before
//! calibration, DATA `uniform`: every coordinate uniform in [-1, 1];
//! `lowrank`: 16 uniform latent coordinates mapped to DIM by a fixed random
//! matrix, plus 5% noise, a stand-in for embeddings' low intrinsic
//! dimension). Single-threaded. Prints:
//! - the graph alone (built without calibration): build time, then per ef
//!   recall@K and per-query latency (p50 / p99) of the graph search;
//! - brute force (an exact scan);
//! - the index as the engine builds it (calibrated while it grows: the
//!   graph is dropped when a scan is cheaper): build time, plan, and
//!   recall@K and latency of `Graph::nearest`, the engine's query path.

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
    let efs: Vec<usize> = args
        .get(5)
        .map(|s| s.split(',').filter_map(|e| e.parse().ok()).collect())
        .unwrap_or_else(|| vec![default_ef(k)]);
    let lowrank = args.get(6).is_some_and(|d| d == "lowrank");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let latent = 16;
    let basis: Vec<f32> = (0..latent * dim)
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    let mut gen = |n: usize| -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                if !lowrank {
                    return (0..dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
                }
                let z: Vec<f32> = (0..latent).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
                (0..dim)
                    .map(|d| {
                        let x: f32 = (0..latent).map(|j| z[j] * basis[j * dim + d]).sum();
                        x / 4.0 + rng.gen_range(-0.05f32..0.05)
                    })
                    .collect()
            })
            .collect()
    };
    let data = gen(rows);
    let qs = gen(queries);
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    let measure = |name: &str, search: &dyn Fn(&[f32]) -> Vec<u32>, truth: &[Vec<u32>]| {
        let mut us = Vec::with_capacity(queries);
        let mut hits = 0usize;
        let t0 = Instant::now();
        for (q, want) in qs.iter().zip(truth) {
            let t = Instant::now();
            let got: HashSet<u32> = search(q).into_iter().collect();
            us.push(t.elapsed().as_secs_f64() * 1e6);
            hits += want.iter().filter(|w| got.contains(w)).count();
        }
        let qps = queries as f64 / t0.elapsed().as_secs_f64();
        println!(
            "{name}: recall@{k} {:.4}, {qps:.0} queries/s, p50 {:.0} us, p99 {:.0} us",
            hits as f64 / (queries * k) as f64,
            pct(&mut us, 0.5),
            pct(&mut us, 0.99)
        );
    };
    let p = Params::default();
    println!(
        "rows={rows} dim={dim} queries={queries} k={k} sim={sim:?} data={} M={} ef_construction={}",
        if lowrank { "lowrank" } else { "uniform" },
        p.m,
        p.ef_construction
    );

    // The engine's index: calibrated as it grows.
    let t = Instant::now();
    let mut g = Graph::new(dim, sim, p);
    for v in &data {
        g.insert(v);
    }
    let plan = g.calibrate();
    let build = t.elapsed();
    println!(
        "index (calibrated): build {:.1} s ({:.0} inserts/s), memory ~{} MB, plan {plan:?}",
        build.as_secs_f64(),
        rows as f64 / build.as_secs_f64(),
        g.memory() / (1 << 20)
    );
    let truth: Vec<Vec<u32>> = qs
        .iter()
        .map(|q| {
            g.exact(q, k, 0..rows as u32)
                .iter()
                .map(|s| s.node)
                .collect()
        })
        .collect();
    measure(
        "brute force",
        &|q| {
            g.exact(q, k, 0..rows as u32)
                .iter()
                .map(|s| s.node)
                .collect()
        },
        &truth,
    );
    measure(
        "index (engine path)",
        &|q| {
            g.nearest(q, k, &|_| true, rows)
                .iter()
                .map(|s| s.node)
                .collect()
        },
        &truth,
    );
    // A filter passing 1 row in 10 (the engine's restriction on another
    // indexed column); recall against brute force over those rows.
    let truth10: Vec<Vec<u32>> = qs
        .iter()
        .map(|q| {
            g.exact(q, k, (0..rows as u32).filter(|n| n % 10 == 3))
                .iter()
                .map(|s| s.node)
                .collect()
        })
        .collect();
    measure(
        "index (engine path), 1 row in 10 passing a filter",
        &|q| {
            g.nearest(q, k, &|n| n % 10 == 3, rows / 10)
                .iter()
                .map(|s| s.node)
                .collect()
        },
        &truth10,
    );
    drop(g);

    // The graph alone.
    let t = Instant::now();
    let mut g = Graph::new(
        dim,
        sim,
        Params {
            calibrate: false,
            ..p
        },
    );
    for v in &data {
        g.insert(v);
    }
    let build = t.elapsed();
    println!(
        "graph alone: build {:.1} s ({:.0} inserts/s), memory ~{} MB",
        build.as_secs_f64(),
        rows as f64 / build.as_secs_f64(),
        g.memory() / (1 << 20)
    );
    for ef in efs {
        measure(
            &format!("graph ef={ef}"),
            &|q| {
                g.search(q, k, ef, &|_| true)
                    .iter()
                    .map(|s| s.node)
                    .collect()
            },
            &truth,
        );
    }
}
