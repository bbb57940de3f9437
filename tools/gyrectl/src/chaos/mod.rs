//! `gyrectl chaos`: workloads against a running local cluster while a
//! nemesis injects faults on a Jepsen-like schedule (healthy, fault,
//! healthy, ...), then heal, wait for hints, read everything back and check
//! the history ([`checker`]).
//!
//! Clients are threads with one blocking CQL connection each (to a node
//! they rotate through when it fails), writing at QUORUM: unique values to
//! shared registers, increasing values to their own keys with a QUORUM read
//! after each write, unique elements to shared sets, increments to shared
//! counters, and lightweight transactions (conditional writes, SERIAL
//! reads) on compare-and-set registers, whose history is checked for
//! linearizability ([`linear`]).

pub mod checker;
pub mod history;
pub mod linear;
pub mod nemesis;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gyre_protocol::{Consistency, ErrorKind};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cql::{CqlClient, Outcome as CqlOutcome};
use crate::{Error, LocalCluster, ProcState, Result};
use checker::{Anomaly, FinalState};
use history::{Op, OpKind, Outcome};
use linear::Cond;
use nemesis::{Active, FaultKind};

/// A chaos run's settings.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub duration: Duration,
    pub healthy: Duration,
    pub fault: Duration,
    pub faults: Vec<FaultKind>,
    pub clients: usize,
    pub registers: usize,
    pub sets: usize,
    /// Compare-and-set registers in use at once (0: no LWT workload).
    pub cas_registers: usize,
    /// Shared counters (0: no counter workload).
    pub counters: usize,
    /// Operations per second per client (pacing, not a target).
    pub client_rate: u32,
    pub seed: u64,
    pub gyre_bin: PathBuf,
}

/// Availability during one kind of phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseStats {
    pub ops: u64,
    pub ok: u64,
    pub unavailable: u64,
    pub timeout: u64,
    pub failed: u64,
    /// Longest time from a heal of this fault to the last failed request
    /// that started before the next fault (ms).
    pub recovery_ms: u64,
    pub windows: u64,
}

/// What a run found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ops: usize,
    pub phases: BTreeMap<String, PhaseStats>,
    pub anomalies: Vec<Anomaly>,
    pub hints_drained: bool,
    pub final_state: FinalState,
    /// Compare-and-set operations checked for linearizability.
    pub cas_ops: usize,
    /// CAS register keys whose linearizability search ran out of budget.
    pub cas_unchecked: Vec<String>,
    pub counters: Vec<checker::CounterStat>,
}

impl Report {
    /// The per-fault availability table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<14} {:>7} {:>8} {:>8} {:>11} {:>8} {:>7} {:>12}\n",
            "phase", "windows", "ops", "ok", "unavailable", "timeout", "failed", "recovery ms"
        );
        for (name, p) in &self.phases {
            s.push_str(&format!(
                "{:<14} {:>7} {:>8} {:>8} {:>11} {:>8} {:>7} {:>12}\n",
                name, p.windows, p.ops, p.ok, p.unavailable, p.timeout, p.failed, p.recovery_ms
            ));
        }
        s
    }
}

const KEYSPACE: &str = "chaos";

/// Longest a membership change (a join's or a leave's streaming) may take.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(600);

/// A compare-and-set register key serves this long, then the clients move
/// to a fresh one: Jepsen's independent keys, which keep each key's
/// history short enough for the linearizability search.
const CAS_KEY_SECS: u64 = 10;

/// CAS registers hold small values, so conditions often match.
const CAS_VALUES: i64 = 5;

fn cql_outcome(r: std::io::Result<CqlOutcome>) -> (Outcome, Option<Vec<Vec<Option<Bytes>>>>) {
    match r {
        Ok(CqlOutcome::Rows(rows, _)) => (Outcome::Ok(None), Some(rows)),
        Ok(CqlOutcome::Done) => (Outcome::Ok(None), None),
        Ok(CqlOutcome::Error(e)) => (
            match e.kind {
                ErrorKind::Unavailable { .. } => Outcome::Unavailable,
                ErrorKind::WriteTimeout { .. } | ErrorKind::ReadTimeout { .. } => Outcome::Timeout,
                _ => Outcome::Failed(e.message),
            },
            None,
        ),
        Err(e) => (Outcome::Failed(e.to_string()), None),
    }
}

/// A conditional statement's `[applied]` (a boolean, the first column).
fn applied_column(rows: &[Vec<Option<Bytes>>]) -> Option<bool> {
    match rows.first()?.first()?.as_deref()? {
        [b] => Some(*b != 0),
        _ => None,
    }
}

fn bigint(rows: &[Vec<Option<Bytes>>]) -> Option<i64> {
    let b = rows.first()?.first()?.as_ref()?;
    Some(i64::from_be_bytes(b.as_ref().try_into().ok()?))
}

/// Decodes a `set<bigint>` cell.
fn bigint_set(rows: &[Vec<Option<Bytes>>]) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    let Some(Some(b)) = rows.first().and_then(|r| r.first()) else {
        return out;
    };
    let rd = |at: usize, n: usize| b.get(at..at + n);
    let Some(count) = rd(0, 4)
        .and_then(|x| x.try_into().ok())
        .map(i32::from_be_bytes)
    else {
        return out;
    };
    let mut at = 4;
    for _ in 0..count.max(0) {
        let len = rd(at, 4)
            .and_then(|x| x.try_into().ok())
            .map(i32::from_be_bytes);
        let val = rd(at + 4, 8)
            .and_then(|x| x.try_into().ok())
            .map(i64::from_be_bytes);
        match (len, val) {
            (Some(8), Some(v)) => {
                out.insert(v);
            }
            _ => break,
        }
        at += 12;
    }
    out
}

struct Shared {
    start: Instant,
    /// The cluster's members now (the membership fault changes them).
    members: Mutex<Vec<usize>>,
    phase: Mutex<String>,
    history: Mutex<Vec<Op>>,
    stop: AtomicBool,
}

fn client_loop(id: usize, cfg: ChaosConfig, cluster: LocalCluster, shared: Arc<Shared>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed.wrapping_mul(1000) + id as u64);
    // The n-th member (wrapping): the members change under the
    // membership fault, so a client looks its node up when it connects.
    let member = |pos: usize| {
        let m = shared.members.lock().map(|m| m.clone()).unwrap_or_default();
        m.get(pos % m.len().max(1)).copied().unwrap_or(1)
    };
    let mut pos = id;
    let mut node = member(pos);
    let mut conn: Option<CqlClient> = None;
    let mut seq: i64 = 0;
    let pace = Duration::from_secs_f64(1.0 / f64::from(cfg.client_rate.max(1)));
    let base = (id as i64 + 1) * 1_000_000_000;
    while !shared.stop.load(Ordering::Relaxed) {
        let next = Instant::now() + pace;
        seq += 1;
        let value = base + seq;
        let mut cond = None;
        let mut cl = Consistency::Quorum;
        let roll = rng.gen_range(0..20);
        let lwt = cfg.cas_registers > 0 && (14..19).contains(&roll);
        let counter = cfg.counters > 0 && roll == 19;
        let (kind, key, value, cql) = if lwt {
            let epoch = shared.start.elapsed().as_secs() / CAS_KEY_SECS;
            let key = format!("c{}-{epoch}", rng.gen_range(0..cfg.cas_registers));
            let v = rng.gen_range(0..CAS_VALUES);
            let c = match rng.gen_range(0..20) {
                0..=5 => None,
                6..=8 => Some(Cond::NotExists),
                9..=11 => Some(Cond::Exists),
                _ => Some(Cond::Equals(rng.gen_range(0..CAS_VALUES))),
            };
            if c.is_some() {
                // The commit consistency varies: at ONE or ANY the commit
                // reaches the other replicas asynchronously (Paxos v2's two
                // round trips), and a later prepare must finish it.
                cl = [Consistency::Quorum, Consistency::One, Consistency::Any][rng.gen_range(0..3)];
            }
            match c {
                None => {
                    cl = Consistency::Serial;
                    let q = format!("SELECT v FROM {KEYSPACE}.cas WHERE k = '{key}'");
                    (OpKind::CasRead, key, 0, q)
                }
                Some(Cond::NotExists) => {
                    cond = c;
                    let q = format!(
                        "INSERT INTO {KEYSPACE}.cas (k, v) VALUES ('{key}', {v}) IF NOT EXISTS"
                    );
                    (OpKind::Cas, key, v, q)
                }
                Some(c) => {
                    cond = Some(c);
                    let q = format!(
                        "UPDATE {KEYSPACE}.cas SET v = {v} WHERE k = '{key}' {}",
                        c.cql()
                    );
                    (OpKind::Cas, key, v, q)
                }
            }
        } else if counter {
            let key = format!("n{}", rng.gen_range(0..cfg.counters));
            let q = format!("UPDATE {KEYSPACE}.counters SET c = c + 1 WHERE k = '{key}'");
            (OpKind::CounterAdd, key, 1, q)
        } else if roll < 8 {
            let key = format!("r{}", rng.gen_range(0..cfg.registers));
            let q = format!("INSERT INTO {KEYSPACE}.registers (k, v) VALUES ('{key}', {value})");
            (OpKind::Write, key, value, q)
        } else if roll < 12 {
            let key = format!("m{id}-{}", rng.gen_range(0..2));
            let q = format!("INSERT INTO {KEYSPACE}.registers (k, v) VALUES ('{key}', {value})");
            (OpKind::OwnWrite, key, value, q)
        } else {
            let key = format!("s{}", rng.gen_range(0..cfg.sets));
            let q = format!("UPDATE {KEYSPACE}.sets SET s = s + {{{value}}} WHERE k = '{key}'");
            (OpKind::SetAdd, key, value, q)
        };
        let mut ops = vec![(kind, key.clone(), value, cql, cl)];
        if kind == OpKind::OwnWrite {
            ops.push((
                OpKind::OwnRead,
                key.clone(),
                0,
                format!("SELECT v FROM {KEYSPACE}.registers WHERE k = '{key}'"),
                Consistency::Quorum,
            ));
        }
        for (kind, key, value, cql, cl) in ops {
            let at = Recorded {
                client: id,
                kind,
                key: &key,
                value,
                cond,
            };
            let phase = shared.phase.lock().map(|p| p.clone()).unwrap_or_default();
            let invoke = shared.start.elapsed();
            if conn.is_none() {
                match cluster
                    .layout
                    .cql_addr(node)
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|a| CqlClient::connect_with(a, Duration::from_secs(8)))
                {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        pos += 1;
                        node = member(pos);
                        record(
                            &shared,
                            &at,
                            invoke,
                            Outcome::Failed(e.to_string()),
                            None,
                            phase,
                        );
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let (mut outcome, rows) = cql_outcome(c.query(&cql, cl));
            if let Outcome::Failed(_) = outcome {
                // The connection may be broken: reconnect to the next node.
                conn = None;
                pos += 1;
                node = member(pos);
            }
            let mut applied = None;
            if let (Outcome::Ok(_), Some(rows)) = (&outcome, &rows) {
                match kind {
                    OpKind::OwnRead | OpKind::CasRead => outcome = Outcome::Ok(bigint(rows)),
                    // The `[applied]` column comes first.
                    OpKind::Cas => applied = applied_column(rows),
                    _ => {}
                }
            }
            record(&shared, &at, invoke, outcome, applied, phase);
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
}

/// What a client is about to do, for [`record`].
struct Recorded<'a> {
    client: usize,
    kind: OpKind,
    key: &'a str,
    value: i64,
    cond: Option<Cond>,
}

fn record(
    shared: &Shared,
    at: &Recorded<'_>,
    invoke: Duration,
    outcome: Outcome,
    applied: Option<bool>,
    phase: String,
) {
    let op = Op {
        client: at.client,
        kind: at.kind,
        key: at.key.to_string(),
        value: at.value,
        invoke,
        complete: shared.start.elapsed(),
        outcome,
        phase,
        cond: at.cond,
        applied,
    };
    if let Ok(mut h) = shared.history.lock() {
        h.push(op);
    }
}

/// Retries `cql` at `cl` on any node until it succeeds or `timeout` passes.
fn query_retry(
    c: &LocalCluster,
    prefer: usize,
    cql: &str,
    cl: Consistency,
    timeout: Duration,
) -> Result<Option<Vec<Vec<Option<Bytes>>>>> {
    let t0 = Instant::now();
    let members = c.members();
    let mut pos = members.iter().position(|n| *n == prefer).unwrap_or(0);
    let mut node = prefer;
    let mut last = String::new();
    while t0.elapsed() < timeout {
        if let Ok(addr) = c.layout.cql_addr(node) {
            match CqlClient::connect_with(addr, Duration::from_secs(10))
                .and_then(|mut cl_| cl_.query(cql, cl))
            {
                Ok(CqlOutcome::Rows(rows, _)) => return Ok(Some(rows)),
                Ok(CqlOutcome::Done) => return Ok(None),
                Ok(CqlOutcome::Error(e)) => last = e.message,
                Err(e) => last = e.to_string(),
            }
        }
        pos += 1;
        node = members
            .get(pos % members.len().max(1))
            .copied()
            .unwrap_or(prefer);
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(Error::Cluster(format!("{cql}: {last}")))
}

fn hint_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => hint_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Brings every node back: starts stopped ones, resumes paused ones,
/// clears fault rules, and waits until all are UP and NORMAL.
pub fn heal_all(c: &LocalCluster, gyre_bin: &Path) -> Result<()> {
    for n in c.members() {
        match c.state(n) {
            ProcState::Paused(_) => {
                c.signal_node(n, libc::SIGCONT)?;
            }
            ProcState::Stopped => {
                c.start_node(n, gyre_bin)?;
            }
            ProcState::Running(_) => {}
        }
    }
    nemesis::clear_faults(c);
    c.wait_for(
        "every node UP and NORMAL",
        Duration::from_secs(120),
        &[],
        |c| c.all_up_normal(),
    )
}

/// Runs the workloads and the nemesis on the cluster in `c`, then checks.
pub fn run(c: &LocalCluster, cfg: &ChaosConfig, log: &mut dyn FnMut(&str)) -> Result<Report> {
    // Owned: the membership fault adds and removes nodes (and saves the
    // layout); everything below asks `c.members()`, never 1..=nodes.
    let mut cluster = c.clone();
    let c = &mut cluster;
    let first = *c
        .members()
        .first()
        .ok_or_else(|| Error::Cluster("the cluster has no member".into()))?;
    let rf = c.members().len().min(3);
    heal_all(c, &cfg.gyre_bin)?;
    let long = Duration::from_secs(30);
    for q in [
        format!("DROP KEYSPACE IF EXISTS {KEYSPACE}"),
        format!("CREATE KEYSPACE {KEYSPACE} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"),
        format!("CREATE TABLE {KEYSPACE}.registers (k text PRIMARY KEY, v bigint)"),
        format!("CREATE TABLE {KEYSPACE}.sets (k text PRIMARY KEY, s set<bigint>)"),
        format!("CREATE TABLE {KEYSPACE}.cas (k text PRIMARY KEY, v bigint)"),
        format!("CREATE TABLE {KEYSPACE}.counters (k text PRIMARY KEY, c counter)"),
    ] {
        query_retry(c, first, &q, Consistency::One, long)?;
    }
    // Schema on every node before load starts.
    for n in c.members() {
        query_retry(
            c,
            n,
            &format!("SELECT k FROM {KEYSPACE}.sets LIMIT 1"),
            Consistency::One,
            long,
        )?;
    }
    let shared = Arc::new(Shared {
        start: Instant::now(),
        members: Mutex::new(c.members()),
        phase: Mutex::new("healthy".into()),
        history: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let workers: Vec<_> = (0..cfg.clients)
        .map(|id| {
            let (cfg, cl, sh) = (cfg.clone(), c.clone(), shared.clone());
            std::thread::spawn(move || client_loop(id, cfg, cl, sh))
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut membership_step = 0;
    let mut heals: Vec<(String, Duration)> = Vec::new();
    let mut windows: BTreeMap<String, u64> = BTreeMap::new();
    let mut i = 0;
    let end = shared.start + cfg.duration;
    let mut failure = None;
    while Instant::now() < end && !cfg.faults.is_empty() {
        std::thread::sleep(
            cfg.healthy
                .min(end.saturating_duration_since(Instant::now())),
        );
        if Instant::now() >= end {
            break;
        }
        let kind = cfg.faults[i % cfg.faults.len()];
        i += 1;
        log(&format!(
            "{:>6.1}s fault {}",
            shared.start.elapsed().as_secs_f64(),
            kind.name()
        ));
        if let Ok(mut p) = shared.phase.lock() {
            *p = kind.name().to_string();
        }
        *windows.entry(kind.name().to_string()).or_default() += 1;
        if kind == FaultKind::Membership {
            // The change is the fault: it runs (streaming under the
            // clients' load) until done, then the schedule goes on.
            let t0 = Instant::now();
            let done = nemesis::membership_change(
                c,
                membership_step,
                rf,
                &cfg.gyre_bin,
                &mut rng,
                MEMBERSHIP_TIMEOUT,
            );
            membership_step += 1;
            if let Ok(mut m) = shared.members.lock() {
                *m = c.members();
            }
            match done {
                Ok(what) => {
                    heals.push((kind.name().to_string(), shared.start.elapsed()));
                    log(&format!(
                        "{:>6.1}s membership: {what} ({:.1} s); members {:?}",
                        shared.start.elapsed().as_secs_f64(),
                        t0.elapsed().as_secs_f64(),
                        c.members()
                    ));
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            if let Ok(mut p) = shared.phase.lock() {
                *p = "healthy".into();
            }
            continue;
        }
        let active = match Active::start(kind, c, &cfg.gyre_bin, &mut rng) {
            Ok(a) => a,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        std::thread::sleep(
            cfg.fault.min(
                end.saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1)),
            ),
        );
        if let Err(e) = active.heal(c, &cfg.gyre_bin) {
            failure = Some(e);
            break;
        }
        heals.push((kind.name().to_string(), shared.start.elapsed()));
        log(&format!(
            "{:>6.1}s healed {} (node {})",
            shared.start.elapsed().as_secs_f64(),
            kind.name(),
            active.node
        ));
        if let Ok(mut p) = shared.phase.lock() {
            *p = "healthy".into();
        }
    }
    if cfg.faults.is_empty() {
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
    }
    let healed = heal_all(c, &cfg.gyre_bin);
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    healed?;
    log(&format!(
        "{:>6.1}s all healed; waiting for hints",
        shared.start.elapsed().as_secs_f64()
    ));
    let t0 = Instant::now();
    let members = c.members();
    let hints_drained = loop {
        let left: u64 = members
            .iter()
            .map(|n| hint_bytes(&c.node_dir(*n).join("data/hints")))
            .sum();
        if left == 0 {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            log(&format!(
                "hints not drained after 120 s ({left} bytes left)"
            ));
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let history = shared.history.lock().map(|h| h.clone()).unwrap_or_default();
    // Final reads: QUORUM, then ALL (which repairs every replica), then ONE
    // on each node.
    let mut fin = FinalState::default();
    let registers: BTreeSet<String> = history
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Write))
        .map(|o| o.key.clone())
        .collect();
    for key in &registers {
        let q = format!("SELECT v FROM {KEYSPACE}.registers WHERE k = '{key}'");
        let quorum = query_retry(c, first, &q, Consistency::Quorum, long)?;
        let all = query_retry(c, first, &q, Consistency::All, long)?;
        fin.registers.insert(
            key.clone(),
            (
                quorum.and_then(|r| bigint(&r)),
                all.and_then(|r| bigint(&r)),
            ),
        );
    }
    let sets: BTreeSet<String> = history
        .iter()
        .filter(|o| o.kind == OpKind::SetAdd)
        .map(|o| o.key.clone())
        .collect();
    for key in &sets {
        let q = format!("SELECT s FROM {KEYSPACE}.sets WHERE k = '{key}'");
        let rows = query_retry(c, first, &q, Consistency::All, long)?;
        fin.sets.insert(
            key.clone(),
            rows.map(|r| bigint_set(&r)).unwrap_or_default(),
        );
    }
    let counters: BTreeSet<String> = history
        .iter()
        .filter(|o| o.kind == OpKind::CounterAdd)
        .map(|o| o.key.clone())
        .collect();
    for key in &counters {
        let q = format!("SELECT c FROM {KEYSPACE}.counters WHERE k = '{key}'");
        let rows = query_retry(c, first, &q, Consistency::All, long)?;
        fin.counters
            .insert(key.clone(), rows.and_then(|r| bigint(&r)));
    }
    if rf == members.len() {
        for key in &registers {
            let q = format!("SELECT v FROM {KEYSPACE}.registers WHERE k = '{key}'");
            let per_node = members
                .iter()
                .map(|&n| {
                    let addr = c.layout.cql_addr(n)?;
                    let rows = CqlClient::connect_with(addr, Duration::from_secs(10))
                        .and_then(|mut cl| cl.query(&q, Consistency::One))
                        .map_err(|e| Error::Cluster(e.to_string()))?;
                    Ok(match rows {
                        CqlOutcome::Rows(r, _) => bigint(&r),
                        _ => None,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            fin.per_node.insert(key.clone(), per_node);
        }
        // Whole replicas, not just the values read: an anti-entropy repair
        // of the keyspace from node 1 (which replicates every range when RF
        // equals the node count), then each node's digest of its local copy
        // of both tables.
        let req = gyre_node::RepairRequest {
            keyspace: KEYSPACE.to_string(),
            tables: Vec::new(),
            start_token: None,
            end_token: None,
            primary_range: false,
            depth: None,
        };
        let done = crate::repair(c.layout.admin_addr(first)?, &req, |_| {})?;
        if let Some(e) = done.error {
            return Err(Error::Cluster(format!("final repair failed: {e}")));
        }
        for table in ["registers", "sets"] {
            let digests = c
                .table_digests(KEYSPACE, table)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| members.contains(&(i + 1)))
                .map(|(_, d)| d.map_or_else(|e| format!("error: {e}"), |d| d.digest))
                .collect();
            fin.digests.insert(table.to_string(), digests);
        }
    }
    let mut anomalies = checker::check(&history, &fin);
    let (cas_anomalies, cas_unchecked) = checker::check_cas(&history);
    anomalies.extend(cas_anomalies);
    let cas_ops = history
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Cas | OpKind::CasRead))
        .count();
    let counters = checker::counter_stats(&history, &fin);
    let mut phases: BTreeMap<String, PhaseStats> = BTreeMap::new();
    for op in &history {
        let p = phases.entry(op.phase.clone()).or_default();
        p.ops += 1;
        match op.outcome {
            Outcome::Ok(_) => p.ok += 1,
            Outcome::Unavailable => p.unavailable += 1,
            Outcome::Timeout => p.timeout += 1,
            Outcome::Failed(_) => p.failed += 1,
        }
    }
    for (name, n) in windows {
        phases.entry(name).or_default().windows = n;
    }
    // Recovery: from a heal to the last failure that started before the
    // next fault began (or the end).
    for (idx, (name, at)) in heals.iter().enumerate() {
        let until = heals
            .get(idx + 1)
            .map(|(_, t)| t.saturating_sub(cfg.fault))
            .unwrap_or(Duration::MAX);
        let last_fail = history
            .iter()
            .filter(|o| !o.outcome.is_ok() && o.invoke >= *at && o.invoke < until)
            .map(|o| o.complete)
            .max();
        if let Some(t) = last_fail {
            let p = phases.entry(name.clone()).or_default();
            p.recovery_ms = p.recovery_ms.max(t.saturating_sub(*at).as_millis() as u64);
        }
    }
    Ok(Report {
        ops: history.len(),
        phases,
        anomalies,
        hints_drained,
        final_state: fin,
        cas_ops,
        cas_unchecked,
        counters,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decodes_bigint_sets() {
        let mut b = vec![0, 0, 0, 2];
        for v in [5i64, -1] {
            b.extend_from_slice(&8i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        let rows = vec![vec![Some(Bytes::from(b))]];
        assert_eq!(bigint_set(&rows), BTreeSet::from([5, -1]));
        assert_eq!(bigint_set(&[vec![None]]), BTreeSet::new());
        // Truncated input stops, never panics.
        let rows = vec![vec![Some(Bytes::from_static(&[0, 0, 0, 9, 0, 0]))]];
        assert_eq!(bigint_set(&rows), BTreeSet::new());
    }
}
