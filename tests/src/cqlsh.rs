//! The real `cqlsh` (PyPI), in a virtualenv cached in
//! `$HOME/.cache/gyre-venv-cqlsh` (or `$GYRE_CQLSH_VENV`); the first use
//! needs PyPI and fails saying so when it is unreachable.

use std::path::{Path, PathBuf};
use std::process::Command;

const CQLSH: &str = "cqlsh==6.2.0";
/// Pinned like the driver test's, so that a new driver release does not
/// change what this test runs.
const DRIVER: &str = "cassandra-driver==3.29.2";

pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GYRE_CQLSH_VENV") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/gyre-venv-cqlsh")
}

/// What a finished command printed, and whether it succeeded.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion (panics if it cannot start).
pub fn run(cmd: &mut Command) -> Out {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `cqlsh` executable of a venv with the pinned cqlsh and driver.
pub fn cqlsh() -> PathBuf {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let cqlsh = venv.join("bin/cqlsh");
    if cqlsh.is_file() {
        let v = run(Command::new(&cqlsh).arg("--version"));
        if v.ok && v.stdout.trim() == "cqlsh 6.2.0" {
            return cqlsh;
        }
    }
    // Tests in parallel: one installs, the others wait and find it done.
    let _lock = crate::python::VenvLock::take(&venv);
    if cqlsh.is_file() {
        let v = run(Command::new(&cqlsh).arg("--version"));
        if v.ok && v.stdout.trim() == "cqlsh 6.2.0" {
            return cqlsh;
        }
    }
    if !python.is_file() {
        let o = run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        assert!(
            o.ok,
            "python3 -m venv {} failed:\n{}{}",
            venv.display(),
            o.stdout,
            o.stderr
        );
    }
    let o = run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        DRIVER,
        CQLSH,
    ]));
    assert!(
        o.ok,
        "pip install {CQLSH} into {} failed (is PyPI reachable?); this test needs the real \
         cqlsh:\n{}{}",
        venv.display(),
        o.stdout,
        o.stderr
    );
    cqlsh
}

/// `cqlsh HOST PORT -e STATEMENTS` against `addr`, with a HOME of its own
/// (no user cqlshrc) and no CQLSH_HOST/PORT from the environment.
pub fn cqlsh_exec(addr: std::net::SocketAddr, statements: &str) -> Out {
    let home = tempfile::tempdir().expect("tempdir");
    run(Command::new(cqlsh())
        .env("HOME", home.path())
        .env_remove("CQLSH_HOST")
        .env_remove("CQLSH_PORT")
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("-e")
        .arg(statements))
}

/// `gyresh HOST PORT -e STATEMENTS` against `addr` (this build's gyresh).
pub fn gyresh_exec(addr: std::net::SocketAddr, statements: &str) -> Out {
    run(Command::new(crate::cluster::workspace_bin("gyresh"))
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(["-e", statements]))
}
