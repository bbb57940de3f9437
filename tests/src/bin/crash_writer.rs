//! Writes the crash workload until killed, printing `ACK <i>` after each
//! acknowledged write. With `--fsize-limit BYTES` the process may not grow
//! any file past that size (RLIMIT_FSIZE, SIGXFSZ ignored): the disk is
//! "full", and the writer prints `ERR <message>` at the first failed write
//! and exits.
//!
//! Stops by itself after 500000 writes (`DONE`), so a test never hangs.
//!
//! Usage: crash_writer DIR SYNC START [--fsize-limit BYTES]
//!
//! `GYRE_CRASH_ENGINE=rocksdb` runs it on the RocksDB engine (a build with
//! the `rocksdb` feature); the default is the native engine.
//! `GYRE_CRASH_COMPACTION=stcs|lcs|twcs` picks the table's compaction
//! strategy (default `stcs`).

// setrlimit and signal have no safe wrapper in our dependencies.
#![allow(unsafe_code)]

use std::io::Write;

use anyhow::{bail, Context};
use gyre_storage::TableOptions;
use gyre_tests::{crash_compaction, crash_table, mutation, parse_sync, CrashEngine};

fn limit_file_size(bytes: u64) -> anyhow::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: plain libc calls with valid arguments, before any threads.
    unsafe {
        if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
            bail!("ignoring SIGXFSZ failed");
        }
        if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
            bail!("setrlimit failed: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!("usage: crash_writer DIR SYNC START [--fsize-limit BYTES]");
    }
    let kind = match std::env::var("GYRE_CRASH_ENGINE") {
        Ok(name) => CrashEngine::parse(&name).context("GYRE_CRASH_ENGINE: lsm or rocksdb")?,
        Err(_) => CrashEngine::Lsm,
    };
    let dir = std::path::PathBuf::from(&args[1]);
    let sync = parse_sync(&args[2]).context("parsing the sync mode")?;
    let start: u64 = args[3].parse().context("parsing START")?;
    if args.get(4).map(String::as_str) == Some("--fsize-limit") {
        let n: u64 = args
            .get(5)
            .context("missing BYTES")?
            .parse()
            .context("parsing BYTES")?;
        limit_file_size(n)?;
    }
    let compaction = match std::env::var("GYRE_CRASH_COMPACTION") {
        Ok(name) => crash_compaction(&name).context("GYRE_CRASH_COMPACTION: stcs, lcs or twcs")?,
        Err(_) => Default::default(),
    };
    let engine = kind.open(&dir, sync).context("opening the engine")?;
    engine
        .create_table(
            crash_table(),
            TableOptions {
                compaction,
                ..Default::default()
            },
        )
        .context("creating the table")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY")?;
    out.flush()?;
    for i in start..start + 500_000 {
        match engine.apply(crash_table(), mutation(i)) {
            Ok(()) => writeln!(out, "ACK {i}")?,
            Err(e) => {
                writeln!(out, "ERR {e}")?;
                out.flush()?;
                // Every later write must fail too, and not panic.
                let again = engine.apply(crash_table(), mutation(i + 1));
                writeln!(
                    out,
                    "AGAIN {}",
                    if again.is_err() {
                        "refused"
                    } else {
                        "accepted"
                    }
                )?;
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
    writeln!(out, "DONE")?;
    Ok(())
}
