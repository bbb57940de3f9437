//! The real Python driver (`cassandra-driver` from PyPI, pinned) in a
//! virtualenv cached in `$HOME/.cache/gyre-venv` (or `$GYRE_PYTHON_VENV`),
//! created on first use by whichever test asks first: the first use needs
//! PyPI and fails saying so when it is unreachable. Creation holds a file
//! lock, so tests running in parallel never install into one venv at once.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cqlsh::{run, Out};

const DRIVER: &str = "cassandra-driver==3.29.2";
const DRIVER_VERSION: &str = "3.29.2";
/// With `lz4` importable the driver negotiates lz4 frame compression by
/// default, as most installations do.
const LZ4: &str = "lz4";

pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GYRE_PYTHON_VENV") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/gyre-venv")
}

/// An exclusive lock on `<venv>.lock`, released when dropped (the lock
/// lives as long as the open file).
pub struct VenvLock {
    _file: std::fs::File,
}

impl VenvLock {
    pub fn take(venv: &Path) -> VenvLock {
        let path = venv.with_extension("lock");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating the venv's parent directory");
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this File owns for its lifetime.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        VenvLock { _file: file }
    }
}

/// A python with the pinned driver (and lz4) installed, creating the venv
/// if needed.
pub fn python_with_driver() -> PathBuf {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let check = format!(
        "import cassandra, lz4, sys; sys.exit(0 if cassandra.__version__ == '{DRIVER_VERSION}' else 1)"
    );
    let ready =
        |python: &Path| python.is_file() && run(Command::new(python).args(["-c", &check])).ok;
    if ready(&python) {
        return python;
    }
    let _lock = VenvLock::take(&venv);
    if ready(&python) {
        return python; // made while this test waited for the lock
    }
    if !python.is_file() {
        let o = run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        assert!(
            o.ok,
            "python3 -m venv {} failed:\n{}",
            venv.display(),
            text(&o)
        );
    }
    let o = run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        DRIVER,
        LZ4,
    ]));
    assert!(
        o.ok,
        "pip install {DRIVER} {LZ4} into {} failed (is PyPI reachable?); this test needs the \
         real Python driver:\n{}",
        venv.display(),
        text(&o)
    );
    python
}

fn text(o: &Out) -> String {
    format!("{}{}", o.stdout, o.stderr)
}

/// Runs `tests/python/<script> <args>` with the driver's python and
/// returns its output; panics, with the node logs from `logs`, unless it
/// exits 0 having printed a line `OK`. `label` tells runs apart in the
/// test's output (e.g. the protocol version).
pub fn run_driver_script(
    script: &str,
    args: &[String],
    label: &str,
    logs: impl FnOnce() -> String,
) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = Command::new(python_with_driver())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- {script} {label} ---\n{text}");
    assert!(
        out.status.success() && text.contains("\nOK"),
        "{script} {label} failed:\n{text}\nnode logs:\n{}",
        logs()
    );
    text
}
