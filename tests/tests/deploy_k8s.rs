//! The Kubernetes manifests (README "Deployment"): every file of
//! `deploy/k8s` parses, the base validates against the Kubernetes API
//! schemas offline (kubernetes-validate from PyPI, strict), and each overlay
//! (`one-dc`, `two-dc`, `secure`; and `secure` with the Secret that
//! `scripts/k8s-tls-secret.sh` generates, whose certificate must verify
//! against its CA), rendered with `kubectl kustomize` (kustomize v4 or
//! later; or `kustomize build`), validates and has the structure
//! `tests/python/check_k8s.py` checks: selectors matching pod labels,
//! headless seed Service, client Service, PodDisruptionBudget, probes
//! (readiness: `gyre-healthcheck --ready`), claims deleted on scale-down, ports,
//! environment names the image's entrypoint reads, seeds naming pods 0
//! and 1 of every StatefulSet, the image's non-root uid, Secret files
//! behind every TLS variable, no private key committed.
//!
//! The virtualenv is cached in `$HOME/.cache/gyre-venv-k8s` (or
//! `$GYRE_K8S_VENV`); the first run needs PyPI and fails saying so when it
//! is unreachable. Without a kustomize (no Debian package carries a v4 or
//! later one) the overlays are not rendered and the test says NOT RENDERED.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use gyre_tests::deploy::{have, repo_root, run};

const VALIDATOR: &str = "kubernetes-validate==1.37.0";

fn venv_python() -> PathBuf {
    let venv = match std::env::var_os("GYRE_K8S_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => {
            Path::new(&std::env::var_os("HOME").expect("HOME is set")).join(".cache/gyre-venv-k8s")
        }
    };
    let python = venv.join("bin/python");
    // Only a venv that exists can be asked (running a missing interpreter
    // is an error, not a "no": the first run on a new machine).
    const CHECK: &str =
        "import importlib.metadata as m; assert m.version('kubernetes-validate') == '1.37.0'";
    let ok = python.is_file()
        && run(Command::new(&python)
            .args(["-c", CHECK])
            .stderr(std::process::Stdio::null()))
        .0;
    if ok {
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
        VALIDATOR,
    ]));
    assert!(
        ok,
        "pip install {VALIDATOR} into {} failed (is PyPI reachable?); this test needs it:\n{out}",
        venv.display()
    );
    python
}

/// A command that renders a kustomization directory, if one is installed.
fn kustomize() -> Option<Vec<&'static str>> {
    if have("kubectl") {
        let out = Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major = text
            .lines()
            .find_map(|l| l.strip_prefix("Kustomize Version: v"))
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        if major.is_some_and(|m| m >= 4) {
            return Some(vec!["kubectl", "kustomize"]);
        }
        eprintln!("kubectl's kustomize is older than v4 ({text}): not used");
    }
    if have("kustomize") {
        return Some(vec!["kustomize", "build"]);
    }
    None
}

#[test]
fn kubernetes_manifests_render_and_validate() {
    let root = repo_root();
    let python = venv_python();
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec![
        root.join("tests/python/check_k8s.py").display().to_string(),
        root.display().to_string(),
    ];
    match kustomize() {
        Some(cmd) => {
            // The secure overlay as committed (placeholders), and with the
            // Secret `scripts/k8s-tls-secret.sh` generates in its place, in
            // a copy of deploy/k8s (kustomize reads files under its root).
            let copy = tmp.path().join("k8s");
            let (ok, out) = run(Command::new("cp")
                .arg("-r")
                .arg(root.join("deploy/k8s"))
                .arg(&copy));
            assert!(ok, "{out}");
            let secret = Command::new(root.join("scripts/k8s-tls-secret.sh"))
                .arg("--out")
                .arg(tmp.path().join("tls"))
                .output()
                .unwrap();
            assert!(
                secret.status.success(),
                "scripts/k8s-tls-secret.sh failed:\n{}",
                String::from_utf8_lossy(&secret.stderr)
            );
            std::fs::write(copy.join("overlays/secure/secret.yaml"), &secret.stdout).unwrap();
            let (ok, out) = run(Command::new("openssl").arg("verify").arg("-CAfile").args([
                tmp.path().join("tls/ca.crt"),
                tmp.path().join("tls/tls.crt"),
            ]));
            assert!(ok, "the generated certificate does not verify:\n{out}");
            let overlays = root.join("deploy/k8s/overlays");
            for (overlay, dir) in [
                ("one-dc", overlays.join("one-dc")),
                ("two-dc", overlays.join("two-dc")),
                ("secure", overlays.join("secure")),
                ("secure-generated", copy.join("overlays/secure")),
            ] {
                let out = Command::new(cmd[0])
                    .args(&cmd[1..])
                    .arg(&dir)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{} {} failed:\n{}",
                    cmd.join(" "),
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    !stderr.contains("Warning"),
                    "kustomize warns about {overlay}:\n{stderr}"
                );
                let path = tmp.path().join(format!("{overlay}.yaml"));
                std::fs::write(&path, &out.stdout).unwrap();
                args.push(format!("{overlay}={}", path.display()));
            }
        }
        None => eprintln!(
            "NOT RENDERED: no kustomize v4+ (`kubectl kustomize` or `kustomize`) is installed: \
             the overlays were not rendered or checked; the base manifests are still validated"
        ),
    }
    let (ok, out) = run(Command::new(&python).args(&args));
    assert!(ok, "tests/python/check_k8s.py failed:\n{out}");
}
