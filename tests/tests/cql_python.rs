//! A real client against a real node: the DataStax Python driver
//! (`cassandra-driver`, from PyPI) runs `tests/python/driver_smoke.py`
//! against a single `gyre` process.
//!
//! The virtualenv is cached in `$HOME/.cache/gyre-venv` (or
//! `$GYRE_PYTHON_VENV`); the first run needs PyPI. When PyPI is unreachable
//! the test fails with a message saying so: it never skips silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gyre_tests::cluster::TestCluster;

const DRIVER: &str = "cassandra-driver==3.29.2";
const DRIVER_VERSION: &str = "3.29.2";

fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GYRE_PYTHON_VENV") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/gyre-venv")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A python with the pinned driver installed, creating the venv if needed.
fn python_with_driver() -> PathBuf {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let check = format!(
        "import cassandra, sys; sys.exit(0 if cassandra.__version__ == '{DRIVER_VERSION}' else 1)"
    );
    if python.is_file() && run(Command::new(&python).args(["-c", &check])).0 {
        return python;
    }
    if !python.is_file() {
        let (ok, out) = run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        assert!(ok, "python3 -m venv {} failed:\n{out}", venv.display());
    }
    let (ok, out) = run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        DRIVER,
    ]));
    assert!(
        ok,
        "pip install {DRIVER} into {} failed (is PyPI reachable?); this test needs the \
         real Python driver:\n{out}",
        venv.display()
    );
    python
}

#[test]
fn python_driver_against_a_single_node() {
    let python = python_with_driver();
    let c = TestCluster::new(1, 13);
    c.up();
    let addr = c.cql(1);
    c.wait_until("CQL port open", Duration::from_secs(30), || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/driver_smoke.py");
    let (ok, out) = run(Command::new(&python)
        .arg(&script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string()));
    eprintln!("{out}");
    assert!(
        ok,
        "driver_smoke.py failed:\n{out}\nnode logs:\n{}",
        c.logs()
    );
    assert!(out.contains("\nOK"), "script did not finish:\n{out}");
}
