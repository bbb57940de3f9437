//! Flush and compaction threads run at a lower priority than the request
//! path (nice 10), so that on a small machine a flush slows down instead of
//! stalling requests. Linux only (reads /proc).
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use gyre_storage::{LsmConfig, LsmEngine};

/// The nice value in a /proc `stat` line.
fn nice_in(stat: &str) -> Option<i64> {
    // Fields after the parenthesised command: state is field 3, nice 19.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(16)?.parse().ok()
}

/// The nice value of this process's thread named `name`, if it exists.
fn nice_of(name: &str) -> Option<i64> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        return nice_in(&std::fs::read_to_string(dir.join("stat")).ok()?);
    }
    None
}

#[test]
fn flush_and_compaction_threads_run_at_background_priority() {
    let own = std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| nice_in(&s))
        .expect("reads its own priority");
    if own > 10 {
        eprintln!("skipped: the tests already run at nice {own}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = LsmEngine::open(LsmConfig::in_dir(dir.path())).expect("opens");
    let deadline = Instant::now() + Duration::from_secs(10);
    for name in ["gyre-flush-0", "gyre-flush-1", "gyre-compact-0"] {
        loop {
            match nice_of(name) {
                Some(10) => break,
                other => assert!(
                    Instant::now() < deadline,
                    "{name}: nice {other:?}, expected 10"
                ),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    drop(engine);
}
