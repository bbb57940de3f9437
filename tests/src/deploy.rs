//! Helpers for the deployment tests (`tests/deploy_*.rs`): the Debian
//! package, the container image, the Kubernetes manifests. They run the
//! scripts under `scripts/` as a user would and need system packages that
//! `scripts/install-deploy-deps.sh` installs (`.ci/run` runs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// Runs `cmd`, echoes it and its output to stderr; returns (success, stdout + stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ {cmd:?} -> {}\n{text}", out.status);
    (out.status.success(), text)
}

/// Runs `cmd` and panics with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("$ {cmd:?} -> {}\n{stdout}{stderr}", out.status);
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}{stderr}");
    stdout
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when every tool is on the PATH. Otherwise says loudly that the
/// test is skipped and why, and returns false; under CI (`CI` set, as
/// `.ci/run` runs) a missing tool fails the test instead, since `.ci/run`
/// installs them with `scripts/install-deploy-deps.sh`.
pub fn tools_or_skip(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "SKIPPED {test}: {} not installed (run scripts/install-deploy-deps.sh)",
        missing.join(", ")
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg}; CI must not skip it"
    );
    eprintln!("{msg}");
    false
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if cond() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The debootstrap minbase root filesystem tarball (built once, cached by
/// `scripts/build-rootfs.sh`).
pub fn rootfs_tarball() -> PathBuf {
    let out = run_ok(&mut Command::new(
        repo_root().join("scripts/build-rootfs.sh"),
    ));
    PathBuf::from(
        out.lines()
            .last()
            .expect("build-rootfs.sh prints the tarball")
            .trim(),
    )
}
