//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use scylla::statement::Consistency;

use crate::workload::{Distribution, Mix};

/// Load generator for Gyre (and any CQL server).
#[derive(Parser, Debug, Clone)]
#[command(name = "gyre-stress", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Mode,
    #[command(flatten)]
    pub opts: Options,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Insert rows (values derived from the key).
    Write,
    /// Read rows; with --validate, check every key's value.
    Read,
    /// Writes and reads mixed by --ratio.
    Mixed,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Number of operations (after warmup). Default: the population
    /// (--keys) for write and validating reads, else 1000000.
    #[arg(long, global = true, conflicts_with = "duration")]
    pub ops: Option<u64>,
    /// Run for this long instead of a fixed number of ops (e.g. 30s, 2m).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Requests in flight.
    #[arg(long, global = true, default_value_t = 128)]
    pub concurrency: usize,
    /// Connections per host.
    #[arg(long, global = true, default_value_t = 2)]
    pub connections: usize,
    /// Fixed rate in ops/s (open loop, latency from intended start).
    /// Without it: closed loop, as fast as the server answers.
    #[arg(long, global = true)]
    pub rate: Option<f64>,
    /// Consistency level of every request.
    #[arg(long, global = true, default_value = "ONE", value_parser = parse_consistency)]
    pub cl: Consistency,
    /// Population: keys are 0..N. Default: --ops if given, else 1000000.
    #[arg(long, global = true)]
    pub keys: Option<u64>,
    /// Key distribution: uniform, zipf:S or seq. Default: seq for write
    /// and --validate, uniform otherwise.
    #[arg(long, global = true, value_parser = parse_distribution)]
    pub dist: Option<Distribution>,
    /// Bytes per value column.
    #[arg(long, global = true, default_value_t = 100)]
    pub value_size: usize,
    /// Value columns per row.
    #[arg(long, global = true, default_value_t = 1)]
    pub columns: usize,
    /// Mix for `mixed`, e.g. write=1,read=3.
    #[arg(long, global = true, default_value = "write=1,read=1", value_parser = parse_mix)]
    pub ratio: Mix,
    /// Contact points, host or host:port, comma separated.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1",
        value_delimiter = ','
    )]
    pub hosts: Vec<String>,
    /// Keyspace of the stress table (created if missing).
    #[arg(long, global = true, default_value = "gyre_stress")]
    pub keyspace: String,
    /// Table name (created if missing).
    #[arg(long, global = true, default_value = "kv")]
    pub table: String,
    /// Replication factor for a keyspace this tool creates. Default: the
    /// number of nodes the driver sees, at most 3.
    #[arg(long, global = true)]
    pub rf: Option<u32>,
    /// Drop the keyspace first.
    #[arg(long, global = true)]
    pub drop: bool,
    /// Unmeasured warm-up before the run (e.g. 5s).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Interval of the progress lines.
    #[arg(long, global = true, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Write the full report as JSON.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Write the interval histograms as an HdrHistogram log.
    #[arg(long, global = true)]
    pub hdr: Option<PathBuf>,
    /// Check every read value (reads the whole population, in order);
    /// exit non-zero if any row is missing or wrong.
    #[arg(long, global = true)]
    pub validate: bool,
    /// Stop once this many requests failed (0: never).
    #[arg(long, global = true, default_value_t = 0)]
    pub max_errors: u64,
    /// Client-side request timeout.
    #[arg(long, global = true, default_value = "12s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Client for the load: `scylla` (the scylla driver: token-aware,
    /// retries, reconnects) or `native` (a lean built-in CQL v4 client, an
    /// event loop per connection set with no per-request task, so the tool
    /// takes little CPU from the server it measures; no retries or
    /// reconnection). Schema set-up always goes through the scylla driver.
    #[arg(long, global = true, value_enum, default_value_t = Driver::Scylla)]
    pub driver: Driver,
    /// No interval lines or progress bar; only the summary.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Writes are lightweight transactions: `INSERT ... IF NOT EXISTS` at
    /// serial consistency SERIAL (commit at --cl). Scylla driver only.
    #[arg(long, global = true)]
    pub lwt: bool,
    /// With `--driver native`: send every request to the first contact
    /// point, which coordinates them all (to check what one node serves),
    /// instead of routing each to a replica of its key.
    #[arg(long, global = true)]
    pub coordinator_only: bool,
    /// Role to log in as (nodes with the PasswordAuthenticator).
    #[arg(short = 'u', long, global = true)]
    pub username: Option<String>,
    /// Password of --username.
    #[arg(short = 'p', long, global = true, requires = "username")]
    pub password: Option<String>,
    /// TLS to the CQL port (nodes with `[client_encryption]`), the
    /// node's certificate verified against --ssl-ca (else the system's
    /// CAs). Scylla driver only.
    #[arg(long, global = true)]
    pub ssl: bool,
    /// PEM CA that signed the nodes' certificates (implies --ssl).
    #[arg(long, global = true, value_name = "FILE")]
    pub ssl_ca: Option<std::path::PathBuf>,
    /// PEM client certificate, for nodes that require one (implies --ssl).
    #[arg(long, global = true, value_name = "FILE", requires = "ssl_key")]
    pub ssl_cert: Option<std::path::PathBuf>,
    /// PEM private key of --ssl-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "ssl_cert")]
    pub ssl_key: Option<std::path::PathBuf>,
    /// Login and TLS (and, without --hosts, the host and port) from this
    /// cqlshrc, as cqlsh reads it; options on the command line win.
    #[arg(long, global = true, value_name = "FILE")]
    pub cqlshrc: Option<std::path::PathBuf>,
    /// The table's value columns are counters and writes increment them
    /// by 1 (`UPDATE ... SET c0 = c0 + ?`). Scylla driver only.
    #[arg(long, global = true, conflicts_with_all = ["lwt", "validate"])]
    pub counter: bool,
}

/// The client that carries the load.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Scylla,
    Native,
}

/// How much work a run does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Ops(u64),
    Duration(Duration),
}

/// The settings a run actually uses, defaults resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub amount: Amount,
    pub keys: u64,
    pub dist: Distribution,
}

impl Cli {
    /// Fills what the command line left out from `--cqlshrc`: the login
    /// (user and password together), TLS (`ssl`, the CA, the client
    /// certificate and key), and the host and port when `--hosts` was not
    /// given (still the default).
    pub fn apply_cqlshrc(&mut self) -> Result<(), String> {
        let Some(path) = self.opts.cqlshrc.clone() else {
            return Ok(());
        };
        let rc = gyre_protocol::cqlshrc::Cqlshrc::load(&path)?
            .ok_or_else(|| format!("{} does not exist", path.display()))?;
        let o = &mut self.opts;
        if o.username.is_none() {
            o.username = rc.username.clone();
            o.password = rc.password.clone();
        }
        o.ssl |= rc.ssl;
        if o.ssl_ca.is_none() {
            o.ssl_ca = rc.certfile.clone();
        }
        if o.ssl_cert.is_none() && o.ssl_key.is_none() {
            o.ssl_cert = rc.usercert.clone();
            o.ssl_key = rc.userkey.clone();
        }
        if o.hosts == ["127.0.0.1"] {
            if let Some(h) = rc.hostname {
                o.hosts = vec![match rc.port {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                }];
            }
        }
        Ok(())
    }

    /// Resolves the defaults that depend on each other.
    pub fn plan(&self) -> Result<Plan, String> {
        let o = &self.opts;
        if o.validate && self.command != Mode::Read {
            return Err("--validate applies to `read`".into());
        }
        if o.concurrency == 0 || o.connections == 0 || o.columns == 0 {
            return Err("--concurrency, --connections and --columns must be at least 1".into());
        }
        if o.driver == Driver::Native && o.concurrency.div_ceil(o.connections) > 32_000 {
            return Err("--driver native: at most 32000 requests in flight per connection".into());
        }
        if o.driver == Driver::Native && o.columns > 1000 {
            return Err("--driver native: at most 1000 columns".into());
        }
        if let Some(r) = o.rate {
            if !(r > 0.0 && r.is_finite()) {
                return Err("--rate must be positive".into());
            }
        }
        let keys = o.keys.or(o.ops).unwrap_or(1_000_000).max(1);
        let dist = match (o.dist, o.validate) {
            (Some(d), false) => d,
            (Some(Distribution::Seq) | None, true) => Distribution::Seq,
            (Some(_), true) => {
                return Err("--validate reads every key in order: use --dist seq".into())
            }
            (None, false) if self.command == Mode::Write => Distribution::Seq,
            (None, false) => Distribution::Uniform,
        };
        let amount = match (o.ops, o.duration) {
            (_, Some(d)) => Amount::Duration(d),
            (Some(n), None) => Amount::Ops(n),
            (None, None) if self.command == Mode::Write || o.validate => Amount::Ops(keys),
            (None, None) => Amount::Ops(1_000_000),
        };
        Ok(Plan {
            mode: self.command,
            amount,
            keys,
            dist,
        })
    }
}

/// A consistency level by its CQL name, any case.
pub fn parse_consistency(s: &str) -> Result<Consistency, String> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => return Err(format!("unknown consistency level {s:?}")),
    })
}

/// The CQL name of a consistency level.
pub fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Any => "ANY",
        Consistency::One => "ONE",
        Consistency::Two => "TWO",
        Consistency::Three => "THREE",
        Consistency::Quorum => "QUORUM",
        Consistency::All => "ALL",
        Consistency::LocalQuorum => "LOCAL_QUORUM",
        Consistency::EachQuorum => "EACH_QUORUM",
        Consistency::LocalOne => "LOCAL_ONE",
        Consistency::Serial => "SERIAL",
        Consistency::LocalSerial => "LOCAL_SERIAL",
    }
}

/// `uniform`, `seq` or `zipf:S` (S > 0, S != 1 is fine too).
pub fn parse_distribution(s: &str) -> Result<Distribution, String> {
    match s.to_ascii_lowercase().as_str() {
        "uniform" => Ok(Distribution::Uniform),
        "seq" | "sequential" => Ok(Distribution::Seq),
        other => {
            let exp = other
                .strip_prefix("zipf:")
                .or_else(|| (other == "zipf").then_some("1.0"))
                .ok_or_else(|| format!("unknown distribution {s:?} (uniform, zipf:S, seq)"))?;
            let exp: f64 = exp
                .parse()
                .map_err(|_| format!("bad zipf exponent in {s:?}"))?;
            if exp > 0.0 && exp.is_finite() {
                Ok(Distribution::Zipf(exp))
            } else {
                Err(format!("zipf exponent must be positive in {s:?}"))
            }
        }
    }
}

/// `write=1,read=3`: relative weights, at least one positive.
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut mix = Mix { write: 0, read: 0 };
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("expected op=weight in {part:?}"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("bad weight in {part:?}"))?;
        match name.trim().to_ascii_lowercase().as_str() {
            "write" | "insert" => mix.write = weight,
            "read" | "select" => mix.read = weight,
            other => return Err(format!("unknown operation {other:?} (write, read)")),
        }
    }
    if mix.write + mix.read == 0 {
        return Err("--ratio needs a positive weight".into());
    }
    Ok(mix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["gyre-stress"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn parses_small_values() {
        assert_eq!(parse_distribution("zipf:1.2"), Ok(Distribution::Zipf(1.2)));
        assert_eq!(parse_distribution("SEQ"), Ok(Distribution::Seq));
        assert!(parse_distribution("zipf:-1").is_err());
        assert!(parse_distribution("gauss").is_err());
        assert_eq!(parse_mix("write=1,read=3"), Ok(Mix { write: 1, read: 3 }));
        assert!(parse_mix("write=0").is_err());
        assert!(parse_mix("delete=1").is_err());
        assert_eq!(parse_consistency("quorum"), Ok(Consistency::Quorum));
        assert!(parse_consistency("most").is_err());
    }

    #[test]
    fn write_defaults_to_sequential_population() {
        let p = cli(&["write", "--ops", "20000"])
            .plan()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.keys, 20000);
        assert_eq!(p.dist, Distribution::Seq);
        assert_eq!(p.amount, Amount::Ops(20000));
    }

    #[test]
    fn validating_read_covers_the_population() {
        let p = cli(&["read", "--validate", "--keys", "500"])
            .plan()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.dist, Distribution::Seq);
        assert_eq!(p.amount, Amount::Ops(500));
        assert!(cli(&["read", "--validate", "--dist", "uniform"])
            .plan()
            .is_err());
        assert!(cli(&["write", "--validate"]).plan().is_err());
    }

    #[test]
    fn options_after_the_subcommand() {
        let c = cli(&[
            "mixed",
            "--duration",
            "30s",
            "--ratio",
            "write=1,read=3",
            "--hosts",
            "a,b:9043",
            "--rate",
            "2000",
            "--cl",
            "QUORUM",
        ]);
        let p = c.plan().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.amount, Amount::Duration(Duration::from_secs(30)));
        assert_eq!(p.dist, Distribution::Uniform);
        assert_eq!(c.opts.hosts, vec!["a", "b:9043"]);
        assert_eq!(c.opts.rate, Some(2000.0));
        assert_eq!(c.opts.cl, Consistency::Quorum);
    }

    #[test]
    fn a_cqlshrc_fills_what_the_command_line_left_out() {
        let dir = std::env::temp_dir().join(format!("gyre-stress-rc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let rc = dir.join("cqlshrc");
        std::fs::write(
            &rc,
            "[connection]\nhostname = 10.0.0.9\nport = 9043\nssl = true\n[ssl]\ncertfile = ca.crt\n\
             [authentication]\nusername = alice\npassword = pw\n",
        )
        .expect("write");
        let rc = rc.to_str().expect("utf-8");
        let mut c = cli(&["write", "--cqlshrc", rc]);
        c.apply_cqlshrc().expect("applies");
        assert_eq!(c.opts.hosts, vec!["10.0.0.9:9043"]);
        assert_eq!(c.opts.username.as_deref(), Some("alice"));
        assert_eq!(c.opts.password.as_deref(), Some("pw"));
        assert!(c.opts.ssl);
        assert_eq!(c.opts.ssl_ca, Some(dir.join("ca.crt")));
        // The command line wins.
        let mut c = cli(&["write", "--cqlshrc", rc, "--hosts", "h", "-u", "bob"]);
        c.apply_cqlshrc().expect("applies");
        assert_eq!(c.opts.hosts, vec!["h"]);
        assert_eq!(c.opts.username.as_deref(), Some("bob"));
        assert_eq!(c.opts.password, None);
        let mut c = cli(&["write", "--cqlshrc", "/nonexistent/cqlshrc"]);
        assert!(c.apply_cqlshrc().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
