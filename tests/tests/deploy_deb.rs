//! The Debian package (README "Deployment"): `scripts/build-deb.sh` builds
//! it from this build's binaries; its metadata and contents are checked
//! with `dpkg-deb`; the systemd unit with `systemd-analyze verify`; then it
//! is installed with `dpkg --root` into a clean Debian root filesystem
//! (debootstrap minbase, `scripts/build-rootfs.sh`), the maintainer scripts
//! running in that root. The installed `gyre`, started in the root (chroot,
//! as the package's `gyre` user) with the installed config set to a test
//! address (127.0.70.1; no other test uses 127.0.70.x), answers on its
//! admin `/status` and serves CQL to the installed `gyresh` and to cqlsh
//! (PyPI, `gyre_tests::cqlsh`); it stops
//! cleanly on SIGTERM; `dpkg --remove` keeps the data and `--purge` deletes
//! it and the user. Nothing on this machine outside a temp dir is touched.
//!
//! Needs root (chroot), dpkg-dev, binutils, lintian and debootstrap
//! (`scripts/install-deploy-deps.sh`); skipped with a message without them
//! (failed under CI, which installs them).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gyre_tests::cluster::workspace_bin;
use gyre_tests::deploy::{have, poll, repo_root, rootfs_tarball, run, run_ok, tools_or_skip};

const IP: &str = "127.0.70.1";

/// Kills the node if the test fails half-way.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in dpkg-deb --info:\n{info}"))
}

/// uid and gid of `user` in the root's /etc/passwd.
fn ids(root: &Path, user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f[0] == user).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
    })
}

#[test]
fn debian_package_builds_installs_and_runs() {
    if !tools_or_skip(
        "debian_package_builds_installs_and_runs",
        &[
            "dpkg-deb",
            "dpkg-shlibdeps",
            "strip",
            "lintian",
            "debootstrap",
            "chroot",
        ],
    ) {
        return;
    }
    if not_root() {
        eprintln!(
            "SKIPPED debian_package_builds_installs_and_runs: needs root (chroot, dpkg --root)"
        );
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("gyre-deb-")
        .tempdir()
        .unwrap();
    let bin_dir = workspace_bin("gyre").parent().unwrap().to_path_buf();

    // Build.
    let out = run_ok(
        Command::new(repo_root().join("scripts/build-deb.sh"))
            .args(["--profile", "debug", "--bin-dir"])
            .arg(&bin_dir)
            .arg("--out")
            .arg(tmp.path().join("out")),
    );
    let deb = tmp.path().join(out.lines().last().unwrap().trim());
    assert!(deb.is_file(), "{} not built", deb.display());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("gyre_0.") && name.ends_with(".deb"),
        "package name {name}"
    );

    // Metadata: name, version, dependencies, maintainer scripts, conffiles.
    let info = run_ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert_eq!(field(&info, "Package"), "gyre");
    assert!(name.contains(field(&info, "Version")), "{info}");
    let depends = field(&info, "Depends");
    for dep in ["libc6", "passwd"] {
        assert!(depends.contains(dep), "Depends lacks {dep}: {depends}");
    }
    for script in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
        assert!(info.contains(script), "no {script} in the package:\n{info}");
    }
    let ctrl = tmp.path().join("ctrl");
    run_ok(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(&deb)
            .arg(&ctrl),
    );
    assert_eq!(
        std::fs::read_to_string(ctrl.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/gyre/gyre.toml"
    );
    let contents = run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for path in [
        "./usr/bin/gyre",
        "./usr/bin/gyrectl",
        "./usr/bin/gyresh",
        "./usr/bin/gyre-stress",
        "./etc/gyre/gyre.toml",
        "./lib/systemd/system/gyre.service",
        "./usr/share/doc/gyre/README.Debian",
    ] {
        let line = contents
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{contents}"));
        assert!(
            line.contains("root/root"),
            "{path} not owned by root: {line}"
        );
    }

    // Debian's package checker: no error (but the placeholder maintainer
    // address, GYRE_DEB_MAINTAINER for a published package); warnings
    // (no manual pages) are printed.
    let (ok, out) = run(Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .args([
            "--suppress-tags",
            "bogus-mail-host,bogus-mail-host-in-debian-changelog",
        ])
        .arg(&deb));
    assert!(ok && !out.contains("\nE: "), "lintian finds errors:\n{out}");

    // Install into a clean Debian root.
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(rootfs_tarball())
            .arg("-C")
            .arg(&root),
    );
    run_ok(
        Command::new("dpkg")
            .arg("--root")
            .arg(&root)
            .arg("-i")
            .arg(&deb),
    );
    let status = run_ok(
        Command::new("dpkg-query")
            .arg("--admindir")
            .arg(root.join("var/lib/dpkg"))
            .args(["-W", "-f", "${Status} ${Version}", "gyre"]),
    );
    assert!(status.starts_with("install ok installed"), "{status}");

    // What postinst made: the system user, its directories, the config's mode.
    let (uid, gid) = ids(&root, "gyre").expect("postinst creates the gyre user");
    assert!(uid < 1000, "gyre is a system user (uid {uid})");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains(":/var/lib/gyre:/usr/sbin/nologin"),
        "gyre has no login shell:\n{passwd}"
    );
    for dir in [
        "var/lib/gyre",
        "var/lib/gyre/data",
        "var/lib/gyre/commitlog",
    ] {
        let m = std::fs::metadata(root.join(dir)).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{dir} owner");
        assert_eq!(m.mode() & 0o777, 0o750, "{dir} mode");
    }
    let conf = root.join("etc/gyre/gyre.toml");
    let m = std::fs::metadata(&conf).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, gid, 0o640));

    // The unit, with the installed binary (systemd-analyze checks ExecStart).
    verify_unit(&root, tmp.path());

    // The installed config, set to the test address, read by the installed binary.
    let text = std::fs::read_to_string(&conf).unwrap();
    let text = text
        .replace("# seeds = [\"127.0.0.1\"]", &format!("seeds = [\"{IP}\"]"))
        .replace(
            "# listen_address = \"127.0.0.1\"",
            &format!("listen_address = \"{IP}\""),
        )
        .replace("# name = \"Gyre Cluster\"", "name = \"deb test\"");
    assert!(text.contains(&format!("listen_address = \"{IP}\"")));
    std::fs::write(&conf, text).unwrap();
    let printed = run_ok(
        Command::new("chroot")
            .arg(format!("--userspec={uid}:{gid}"))
            .arg(&root)
            .args([
                "/usr/bin/gyre",
                "--config",
                "/etc/gyre/gyre.toml",
                "--print-config",
            ]),
    );
    assert!(printed.contains("/var/lib/gyre/data"), "{printed}");

    // Start it as systemd would: the gyre user, in /var/lib/gyre, SIGTERM to stop.
    let log = std::fs::File::create(tmp.path().join("gyre.log")).unwrap();
    let mut node = Node(
        Command::new("chroot")
            .arg(format!("--userspec={uid}:{gid}"))
            .arg(&root)
            .args([
                "sh",
                "-c",
                "cd /var/lib/gyre && exec /usr/bin/gyre --config /etc/gyre/gyre.toml",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let admin = format!("{IP}:9180").parse().unwrap();
    let node_log = || std::fs::read_to_string(tmp.path().join("gyre.log")).unwrap_or_default();
    let up = poll(Duration::from_secs(60), || {
        gyrectl::fetch_status(admin, Duration::from_secs(1))
            .is_ok_and(|s| s.endpoints.iter().any(|e| e.is_up() && e.is_normal()))
    });
    assert!(
        up.is_some(),
        "the installed node never answered /status:\n{}",
        node_log()
    );
    eprintln!(
        "installed node answers /status after {:.2} s",
        up.unwrap().as_secs_f64()
    );

    // The installed shell against the installed node.
    let cql = |stmt: &str| {
        run(Command::new("chroot")
            .arg(&root)
            .args(["/usr/bin/gyresh", IP, "-e", stmt]))
    };
    let (ok, out) = cql(
        "CREATE KEYSPACE deb WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}; \
         CREATE TABLE deb.t (k int PRIMARY KEY, v text); \
         INSERT INTO deb.t (k, v) VALUES (1, 'packaged'); SELECT * FROM deb.t",
    );
    assert!(
        ok && out.contains("packaged"),
        "gyresh: {out}\n{}",
        node_log()
    );

    // And cqlsh (PyPI) from outside the root.
    let home = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new(gyre_tests::cqlsh::cqlsh())
        .env("HOME", home.path())
        .args([IP, "9042", "-e", "SELECT v FROM deb.t WHERE k = 1"]));
    assert!(
        ok && out.contains("packaged"),
        "cqlsh: {out}\n{}",
        node_log()
    );

    // Graceful stop: SIGTERM, the node flushes and exits 0.
    let pid = node.0.id() as i32;
    // chroot execs sh, which execs gyre: the child's pid is gyre's.
    assert_eq!(send_signal(pid, libc::SIGTERM), 0);
    let mut exit = None;
    poll(Duration::from_secs(60), || {
        exit = node.0.try_wait().unwrap();
        exit.is_some()
    });
    let exit = exit.unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", node_log()));
    assert!(
        exit.success(),
        "gyre exited with {exit} after SIGTERM:\n{}",
        node_log()
    );
    let sstables = std::fs::read_dir(root.join("var/lib/gyre/data"))
        .unwrap()
        .count();
    assert!(sstables > 0, "no data written under /var/lib/gyre/data");

    // Installing again (an upgrade to the same version): postinst runs
    // again with the user and directories there, and the edited conffile
    // and the data stay.
    run_ok(
        Command::new("dpkg")
            .arg("--root")
            .arg(&root)
            .arg("-i")
            .arg(&deb),
    );
    let kept = std::fs::read_to_string(&conf).unwrap();
    assert!(
        kept.contains(&format!("listen_address = \"{IP}\"")),
        "the edited config was replaced"
    );
    assert_eq!(ids(&root, "gyre"), Some((uid, gid)), "the same gyre user");
    assert!(
        std::fs::read_dir(root.join("var/lib/gyre/data"))
            .unwrap()
            .count()
            > 0
    );

    // Remove keeps data, config and user; purge deletes them.
    run_ok(
        Command::new("dpkg")
            .arg("--root")
            .arg(&root)
            .args(["--remove", "gyre"]),
    );
    assert!(!root.join("usr/bin/gyre").exists());
    assert!(
        root.join("var/lib/gyre/data").is_dir(),
        "remove kept the data"
    );
    assert!(conf.is_file(), "remove keeps the conffile");
    assert!(ids(&root, "gyre").is_some(), "remove keeps the user");
    run_ok(
        Command::new("dpkg")
            .arg("--root")
            .arg(&root)
            .args(["--purge", "gyre"]),
    );
    assert!(
        !root.join("var/lib/gyre").exists(),
        "purge deletes the data"
    );
    assert!(!root.join("etc/gyre").exists(), "purge deletes the config");
    assert!(ids(&root, "gyre").is_none(), "purge deletes the user");
}

/// `systemd-analyze verify` of the installed unit. The root has no systemd
/// (minbase), so the unit is checked against this machine's systemd, with
/// one change: ExecStart names the installed binary by its path in the
/// root (verify checks that it is an executable). Then its exposure score
/// (`systemd-analyze security --offline`) must stay "OK" (below 3).
fn verify_unit(root: &Path, tmp: &Path) {
    if !have("systemd-analyze") {
        eprintln!("NOT CHECKED: systemd-analyze is not installed: the unit was not verified");
        assert!(std::env::var_os("CI").is_none(), "CI installs systemd");
        return;
    }
    let text = std::fs::read_to_string(root.join("lib/systemd/system/gyre.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/gyre --config /etc/gyre/gyre.toml"));
    for line in [
        "User=gyre",
        "Restart=on-failure",
        "LimitNOFILE=",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
    ] {
        assert!(text.contains(line), "gyre.service lacks {line}");
    }
    let dir = tmp.join("unit");
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("gyre.service");
    let bin = root.join("usr/bin/gyre");
    std::fs::write(
        &unit,
        text.replace(
            "ExecStart=/usr/bin/gyre",
            &format!("ExecStart={}", bin.display()),
        ),
    )
    .unwrap();
    let (ok, out) = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(
        ok && !out.contains("gyre.service:"),
        "systemd-analyze verify gyre.service:\n{out}"
    );
    // Its table is long: only the verdict is echoed.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for gyre.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score < 3.0, "gyre.service exposure {score}:\n{out}");
}

fn not_root() -> bool {
    // getuid through id(1): the workspace denies unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() != "0")
        .unwrap_or(true)
}

fn send_signal(pid: i32, sig: i32) -> i32 {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| if s.success() { 0 } else { 1 })
        .unwrap_or(1)
}
