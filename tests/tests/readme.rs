//! Every command in the README's `sh` blocks is run here, in order, in a
//! scratch directory whose `target/debug` is this build's, against the
//! README's own cluster (127.0.0.1-3, and 127.0.0.4 which the chaos run's
//! membership fault adds; no other test uses 127.0.0.x), or is
//! checked to be run verbatim by `.ci/run` (cargo commands, scripts). The
//! only exceptions are the benchmarks (long measurements in release mode:
//! CI compiles and unit-tests the engine benchmark's code and checks that
//! the Redis comparison script parses) and the deployment scripts, which
//! their own tests run (`deploy_test`). So the README cannot rot.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use gyre_tests::cluster::workspace_bin;

/// The command lines of the README's ```sh blocks (comments stripped).
fn sh_lines(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            inside = !inside && t == "```sh";
            continue;
        }
        if inside {
            let cmd = match t.find(" #") {
                Some(i) => t[..i].trim(),
                None => t,
            };
            if !cmd.is_empty() && !cmd.starts_with('#') {
                out.push(cmd.to_string());
            }
        }
    }
    out
}

/// The deployment scripts of the README and the test that runs each.
fn deploy_test(cmd: &str) -> Option<&'static str> {
    const SCRIPTS: &[(&str, &str)] = &[
        ("scripts/build-deb.sh", "deploy_deb.rs"),
        ("scripts/build-rootfs.sh", "deploy_deb.rs"),
        ("scripts/build-image.sh", "deploy_container.rs"),
    ];
    SCRIPTS
        .iter()
        .find(|(script, _)| cmd.split_whitespace().next() == Some(*script))
        .map(|(_, test)| *test)
}

/// Kills the README's cluster if the test fails half-way.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(c) = gyrectl::LocalCluster::open(&self.0) {
            c.kill_all();
        }
    }
}

#[test]
fn every_readme_command_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let lines = sh_lines(&readme);
    assert!(lines.len() > 10, "README sh blocks not found: {lines:?}");

    let scratch = tempfile::tempdir().unwrap();
    let bin_dir = workspace_bin("gyre").parent().unwrap().to_path_buf();
    std::fs::create_dir_all(scratch.path().join("target")).unwrap();
    std::os::unix::fs::symlink(&bin_dir, scratch.path().join("target/debug")).unwrap();
    let _cleanup = Cleanup(scratch.path().join("var/cluster"));

    for line in lines {
        let mut cmd = line.as_str();
        // The quickstart builds first: .ci/run does that build.
        if let Some(rest) = cmd.strip_prefix("cargo build --workspace --bins && ") {
            assert!(
                ci.contains("cargo build --workspace --bins"),
                ".ci/run must run `cargo build --workspace --bins`"
            );
            cmd = rest;
        }
        // Benchmarks (the engine's, the ANN graph's): release builds run
        // by hand; `cargo test --workspace` compiles them.
        if cmd.starts_with("cargo run --release -p gyre-benches")
            || cmd.starts_with("cargo run --release -p gyre-storage --example ")
        {
            eprintln!("(benchmark, run by hand) {cmd}");
            continue;
        }
        if let Some(script) = cmd
            .strip_prefix("scripts/bench-")
            .and_then(|rest| rest.split_whitespace().next())
        {
            // A benchmark (minutes, release build, installs Redis): run by
            // hand; here it must at least parse.
            let path = root.join("scripts").join(format!("bench-{script}"));
            let ok = Command::new("bash")
                .arg("-n")
                .arg(&path)
                .status()
                .unwrap()
                .success();
            assert!(ok, "{} does not parse", path.display());
            eprintln!("(benchmark, run by hand) {cmd}");
            continue;
        }
        if let Some(test) = deploy_test(cmd) {
            // A deployment script: its test runs it (debug binaries, test
            // addresses); here it must parse and be named by that test.
            let script = cmd.split_whitespace().next().unwrap();
            let path = root.join(script);
            let ok = Command::new("bash")
                .arg("-n")
                .arg(&path)
                .status()
                .unwrap()
                .success();
            assert!(ok, "{} does not parse", path.display());
            let source = std::fs::read_to_string(root.join("tests/tests").join(test)).unwrap();
            assert!(
                source.contains(script),
                "tests/tests/{test} does not run {script} (README command `{cmd}`)"
            );
            eprintln!("(run by tests/tests/{test}) {cmd}");
            continue;
        }
        if cmd.starts_with("cargo ") || cmd.starts_with("scripts/") {
            assert!(
                ci.contains(cmd),
                ".ci/run does not run README command `{cmd}`"
            );
            continue;
        }
        assert!(
            cmd.starts_with("./target/debug/"),
            "README command `{cmd}` is neither run here nor by .ci/run"
        );
        eprintln!("$ {cmd}");
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(scratch.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        assert!(
            out.status.success(),
            "README command failed: `{cmd}`\n{text}"
        );
        if cmd.contains("SELECT * FROM t") {
            assert!(
                text.contains("one"),
                "the shell example shows its row:\n{text}"
            );
        }
        if cmd.contains("gyrectl chaos") {
            assert!(text.contains("no anomalies"), "{text}");
        }
    }
}
