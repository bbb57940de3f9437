//! The node process of the `tcp` rung: a real node in its own process,
//! either a built `gyre` binary (`--gyre-bin`) or this binary re-executed
//! with `--serve-node CONFIG`, which runs exactly what `gyre`'s main does
//! (same node library, a default multi-thread runtime, tracing to stderr)
//! with allocation counting off. Stopped with SIGTERM (then SIGKILL).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gyre_node::NodeConfig;

/// Runs a node until SIGTERM or SIGINT (the `--serve-node` mode).
pub fn serve(config: &Path) -> anyhow::Result<()> {
    crate::alloc::set_enabled(false);
    let cfg = NodeConfig::resolve(Some(config), &gyre_node::Overrides::default())?;
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .context("log.level is not a valid filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let signal = async {
            if let Err(e) = gyre_node::shutdown_signal().await {
                eprintln!("cannot listen for signals ({e}); stopping");
            }
        };
        gyre_node::run(cfg, signal).await
    })?;
    Ok(())
}

/// A node process, killed on drop if still running.
pub struct NodeProcess {
    child: Child,
    log: PathBuf,
}

impl NodeProcess {
    /// Writes `cfg` to `dir/gyre.toml`, starts the node and waits until its
    /// CQL port accepts connections.
    pub fn start(cfg: &NodeConfig, dir: &Path, gyre_bin: Option<&Path>) -> anyhow::Result<Self> {
        let conf = dir.join("gyre.toml");
        std::fs::write(&conf, cfg.to_toml()?).context("writing the node config")?;
        let log = dir.join("gyre.log");
        let out = std::fs::File::create(&log).context("creating the node log")?;
        let err = out.try_clone().context("opening the node log")?;
        let mut cmd = match gyre_bin {
            Some(bin) => {
                let mut c = Command::new(bin);
                c.arg("--config").arg(&conf);
                c
            }
            None => {
                let mut c = Command::new(std::env::current_exe().context("locating this binary")?);
                c.arg("--serve-node").arg(&conf);
                c
            }
        };
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting the node process")?;
        let mut node = NodeProcess { child, log };
        node.wait_ready(cfg.network.cql_addr(), Duration::from_secs(60))?;
        Ok(node)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, cql: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the node exited ({status}) before serving CQL:\n{}",
                    self.tail()
                );
            }
            if TcpStream::connect_timeout(&cql, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the node did not open {cql} within {timeout:?}:\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 20 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("node did not stop within 20 s; killing it");
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time (user + system) of process `pid` from `/proc/<pid>/stat`.
pub fn proc_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th and stime the 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .zip(f.get(12).and_then(|s| s.parse::<u64>().ok()))
        .map(|(u, s)| u + s)
        .context("malformed /proc stat")?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// CPU time of this process (every thread), from getrusage.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
