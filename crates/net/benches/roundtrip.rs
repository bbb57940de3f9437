//! Request/response round trips between two in-process TCP messengers on
//! loopback, with a fixed number of requests in flight.
//!
//! `cargo bench -p gyre-net --bench roundtrip -- [requests] [in_flight] [payload_bytes] [runs]`
//! (defaults 200000, 64, 100, 3). Prints round trips/s and messages/s (two
//! messages per round trip) for each run, and on Linux the CPU time of the
//! whole process (both messengers) per round trip. Nothing is asserted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gyre_net::{Inbound, Messenger, NetConfig, Verb};

const ECHO: Verb = Verb(7);

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

async fn run(
    a: &Messenger,
    to: std::net::SocketAddr,
    total: u64,
    in_flight: u64,
    payload: Bytes,
) -> (Duration, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (a, next, errors, payload) = (a.clone(), next.clone(), errors.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let r = a
                    .request(to, ECHO, payload.clone(), Duration::from_secs(10))
                    .await;
                if r.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (start.elapsed(), errors.load(Ordering::Relaxed))
}

/// User plus system CPU time of this process so far, from `/proc/self/stat`
/// (in USER_HZ ticks of 10 ms), if readable.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses: utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn main() {
    // Skip the flags cargo passes to bench targets (`--bench`).
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let total = arg(&args, 0, 200_000);
    let in_flight = arg(&args, 1, 64).max(1);
    let size = arg(&args, 2, 100) as usize;
    let runs = arg(&args, 3, 3);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let (a, b) = match (
            Messenger::bind_tcp(NetConfig::new(listen)).await,
            Messenger::bind_tcp(NetConfig::new(listen)).await,
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("cannot bind: {e}");
                std::process::exit(1);
            }
        };
        b.register(ECHO, |msg: Inbound| {
            if let Some(r) = msg.responder {
                let _ = r.respond(msg.payload);
            }
        });
        let payload = Bytes::from(vec![0x5au8; size]);
        let to = b.local_addr();
        // Warm up: connections established, buffers grown.
        run(&a, to, 10_000.min(total), in_flight, payload.clone()).await;
        println!(
            "roundtrip: {total} requests, {in_flight} in flight, {size}-byte payloads, {} worker threads",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        for i in 1..=runs {
            let cpu_before = cpu_time();
            let (took, errors) = run(&a, to, total, in_flight, payload.clone()).await;
            let cpu = match (cpu_before, cpu_time()) {
                (Some(b), Some(a)) => format!(
                    ", {:.2} µs CPU per round trip",
                    a.saturating_sub(b).as_secs_f64() * 1e6 / total as f64
                ),
                _ => String::new(),
            };
            let secs = took.as_secs_f64();
            println!(
                "run {i}: {:.3} s, {:.0} round trips/s, {:.0} messages/s, {errors} errors{cpu}",
                secs,
                total as f64 / secs,
                2.0 * total as f64 / secs
            );
        }
        a.shutdown().await;
        b.shutdown().await;
    });
}
