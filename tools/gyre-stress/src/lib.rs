//! gyre-stress: a CQL load generator in the spirit of cassandra-stress and
//! latte, on the `scylla` driver.
//!
//! The binary (`main.rs`) owns the session, the worker tasks and the
//! printing. This library holds what can be tested without a server:
//!
//! - [`config`]: the command line (clap) and its small parsers
//!   (`--dist zipf:1.1`, `--ratio write=1,read=3`, `--cl QUORUM`).
//! - [`workload`]: key choice (uniform, zipf, sequential), values derived
//!   from the key (so `read --validate` needs no state), the open-loop
//!   schedule for `--rate`, and the write/read mix.
//! - [`native`]: the wire side of `--driver native` (EXECUTE frames
//!   encoded in place, results read by kind, the token ring for routing);
//!   its event loop is in `main.rs`'s `native_run`.
//! - [`stats`]: HDR histograms per operation type, interval lines, error
//!   counts and the final report (printed and `--json`).
//!
//! Latency under `--rate` is measured from each operation's *intended*
//! start time, not from when a worker got round to sending it, so a slow
//! server shows up as latency instead of silently lowering the load
//! (coordinated omission).

pub mod config;
pub mod native;
pub mod stats;
pub mod workload;
