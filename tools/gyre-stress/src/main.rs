//! `gyre-stress write|read|mixed [options]`: see the library docs.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2Serializer;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::client::PoolSize;
use scylla::errors::{ExecutionError, RequestAttemptError};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use tokio::time::Instant;

use gyre_stress::config::{consistency_name, Amount, Cli, Driver, Mode, Plan};
use gyre_stress::stats::{Cpu, IntervalLine, OpSummary, RateReport, Recorder, Report, Validation};
use gyre_stress::workload::{value_for, Distribution, KeyChooser, OpKind, Schedule, SplitMix64};

mod native_run;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if let Err(e) = cli.apply_cqlshrc() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let plan = match cli.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(&cli, &plan)) {
        Ok(report) => {
            if report.failed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Everything a worker needs, shared.
struct Workload {
    session: Session,
    insert: PreparedStatement,
    select: PreparedStatement,
    plan: Plan,
    cli: Cli,
    chooser: KeyChooser,
    schedule: Option<Schedule>,
    /// `--driver native`: its connections (the load skips the session).
    native: Option<Arc<native_run::NativePool>>,
}

/// One measured (or warm-up) phase.
struct Phase {
    recorder: Recorder,
    next_op: AtomicU64,
    stop: AtomicBool,
    stop_reason: std::sync::Mutex<Option<String>>,
    /// Ops to run, if bounded (fixed --ops, or --duration at a --rate).
    limit: Option<u64>,
    start: Instant,
    deadline: Option<Instant>,
    record: bool,
}

async fn run(cli: &Cli, plan: &Plan) -> Result<Report> {
    let o = &cli.opts;
    let hosts: Vec<String> = o
        .hosts
        .iter()
        .map(|h| {
            if h.contains(':') {
                h.clone()
            } else {
                format!("{h}:9042")
            }
        })
        .collect();
    let connections = NonZeroUsize::new(o.connections).context("--connections must be > 0")?;
    if o.driver == Driver::Native && o.username.is_some() {
        anyhow::bail!("--driver native does not log in: use --driver scylla with -u/--username");
    }
    let mut builder = SessionBuilder::new()
        .known_nodes(&hosts)
        .pool_size(PoolSize::PerHost(connections))
        // Agreement is awaited explicitly, with a short bound, after DDL.
        .auto_await_schema_agreement(false);
    if let Some(user) = &o.username {
        builder = builder.user(user, o.password.as_deref().unwrap_or_default());
    }
    if o.ssl || o.ssl_ca.is_some() || o.ssl_cert.is_some() {
        if o.driver == Driver::Native {
            anyhow::bail!("--driver native does not speak TLS: use --driver scylla with --ssl");
        }
        builder = builder.tls_context(Some(ssl_context(
            o.ssl_ca.as_deref(),
            o.ssl_cert.as_deref().zip(o.ssl_key.as_deref()),
        )?));
    }
    let session = builder
        .build()
        .await
        .with_context(|| format!("connecting to {}", hosts.join(",")))?;
    create_schema(&session, cli).await?;
    let (insert, select) = prepare(&session, cli).await?;
    let statements = [
        insert.get_statement().to_string(),
        select.get_statement().to_string(),
    ];
    let mut workload = Arc::new(Workload {
        session,
        insert,
        select,
        plan: plan.clone(),
        cli: cli.clone(),
        chooser: KeyChooser::new(plan.keys, plan.dist),
        schedule: o.rate.map(Schedule::new),
        native: None,
    });
    if o.driver == Driver::Native {
        anyhow::ensure!(
            !o.lwt && !o.counter,
            "--lwt and --counter need --driver scylla"
        );
        let pool = native_run::connect(&workload, &hosts[0], statements).await?;
        if let Some(w) = Arc::get_mut(&mut workload) {
            w.native = Some(Arc::new(pool));
        }
    }

    if let Some(w) = o.warmup {
        if !o.quiet {
            eprintln!("warming up for {}", humantime::format_duration(w));
        }
        let phase = Arc::new(new_phase(&workload, Amount::Duration(w), false));
        run_workers(&workload, &phase).await;
    }

    let phase = Arc::new(new_phase(&workload, plan.amount, true));
    if !o.quiet {
        println!(
            "gyre-stress {}: {}, concurrency {}, {}, CL {}, keys {} ({}), hosts {}",
            mode_name(plan.mode),
            match plan.amount {
                Amount::Ops(n) => format!("{n} ops"),
                Amount::Duration(d) => humantime::format_duration(d).to_string(),
            },
            o.concurrency,
            o.rate.map_or("closed loop".to_string(), |r| format!(
                "rate {r}/s (open loop)"
            )),
            consistency_name(o.cl),
            plan.keys,
            dist_name(plan.dist),
            hosts.join(",")
        );
    }
    let reporter = tokio::spawn(report_intervals(workload.clone(), phase.clone()));
    let wall_start = SystemTime::now();
    let rusage_start = rusage();
    run_workers(&workload, &phase).await;
    let elapsed = phase.start.elapsed();
    let rusage_end = rusage();
    phase.stop.store(true, Ordering::Relaxed);
    let (lines, interval_hists) = reporter.await.context("interval reporter")?;

    let report = build_report(
        cli,
        plan,
        &hosts,
        &phase,
        elapsed,
        lines,
        rusage_end.0 - rusage_start.0,
        rusage_end.1 - rusage_start.1,
    );
    println!("{}", report.render());
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &o.hdr {
        write_hdr_log(path, wall_start, &interval_hists)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn new_phase(w: &Workload, amount: Amount, record: bool) -> Phase {
    let start = Instant::now();
    let (limit, deadline) = match (amount, &w.schedule) {
        (Amount::Ops(n), _) => (Some(n), None),
        // Open loop: the schedule decides how many ops fit the duration.
        (Amount::Duration(d), Some(s)) => (Some(s.ops_within(d)), None),
        (Amount::Duration(d), None) => (None, Some(start + d)),
    };
    Phase {
        recorder: Recorder::default(),
        next_op: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        stop_reason: std::sync::Mutex::new(None),
        limit,
        start,
        deadline,
        record,
    }
}

async fn create_schema(session: &Session, cli: &Cli) -> Result<()> {
    let o = &cli.opts;
    let ks = &o.keyspace;
    let mut ddl = Vec::new();
    if o.drop {
        ddl.push(format!("DROP KEYSPACE IF EXISTS {ks}"));
    }
    let nodes = session.get_cluster_state().get_nodes_info().len();
    let rf = o.rf.unwrap_or(nodes.clamp(1, 3) as u32);
    ddl.push(format!(
        "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
         {{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
    ));
    let ty = if o.counter { "counter" } else { "blob" };
    let columns: Vec<String> = (0..o.columns).map(|c| format!("c{c} {ty}")).collect();
    ddl.push(format!(
        "CREATE TABLE IF NOT EXISTS {ks}.{} (key bigint PRIMARY KEY, {})",
        o.table,
        columns.join(", ")
    ));
    for stmt in ddl {
        session
            .query_unpaged(stmt.as_str(), ())
            .await
            .with_context(|| format!("running {stmt}"))?;
    }
    // Not fatal: a cluster without schema exchange never agrees, and the
    // run itself will show whether the table is usable.
    match tokio::time::timeout(Duration::from_secs(10), session.await_schema_agreement()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("schema agreement: {e}"),
        Err(_) => tracing::warn!("schema agreement not reached within 10 s"),
    }
    Ok(())
}

async fn prepare(session: &Session, cli: &Cli) -> Result<(PreparedStatement, PreparedStatement)> {
    let o = &cli.opts;
    let names: Vec<String> = (0..o.columns).map(|c| format!("c{c}")).collect();
    let marks = vec!["?"; o.columns].join(", ");
    let insert_cql = if o.counter {
        let incs: Vec<String> = names.iter().map(|n| format!("{n} = {n} + ?")).collect();
        format!(
            "UPDATE {}.{} SET {} WHERE key = ?",
            o.keyspace,
            o.table,
            incs.join(", ")
        )
    } else {
        format!(
            "INSERT INTO {}.{} (key, {}) VALUES (?, {marks}){}",
            o.keyspace,
            o.table,
            names.join(", "),
            if o.lwt { " IF NOT EXISTS" } else { "" }
        )
    };
    let select_cql = format!(
        "SELECT {} FROM {}.{} WHERE key = ?",
        names.join(", "),
        o.keyspace,
        o.table
    );
    let mut statements = Vec::new();
    for cql in [insert_cql, select_cql] {
        let mut p = session
            .prepare(cql.as_str())
            .await
            .with_context(|| format!("preparing {cql}"))?;
        p.set_consistency(o.cl);
        p.set_request_timeout(Some(o.timeout));
        // Plain upserts and reads: safe to retry or speculate. A
        // conditional insert is not (a retry may report "not applied").
        let lwt = o.lwt && cql.starts_with("INSERT");
        // Increments are not idempotent either.
        let counter = o.counter && cql.starts_with("UPDATE");
        p.set_is_idempotent(!lwt && !counter);
        if lwt {
            p.set_serial_consistency(Some(scylla::statement::SerialConsistency::Serial));
        }
        statements.push(p);
    }
    let select = statements.pop().context("prepared select")?;
    let insert = statements.pop().context("prepared insert")?;
    Ok((insert, select))
}

async fn run_workers(w: &Arc<Workload>, phase: &Arc<Phase>) {
    if let Some(pool) = &w.native {
        return native_run::run_workers(w, phase, pool).await;
    }
    let mut tasks = Vec::new();
    for id in 0..w.cli.opts.concurrency {
        let (w, phase) = (w.clone(), phase.clone());
        tasks.push(tokio::spawn(
            async move { worker(id as u64, &w, &phase).await },
        ));
    }
    for t in tasks {
        if let Err(e) = t.await {
            tracing::error!("worker failed: {e}");
        }
    }
}

async fn worker(id: u64, w: &Workload, phase: &Phase) {
    let mut rng = SplitMix64::new(0x5eed ^ (id << 32) ^ u64::from(phase.record));
    let o = &w.cli.opts;
    while !phase.stop.load(Ordering::Relaxed) {
        let op = phase.next_op.fetch_add(1, Ordering::Relaxed);
        if phase.limit.is_some_and(|n| op >= n) {
            break;
        }
        let intended = match &w.schedule {
            Some(s) => {
                let due = phase.start + s.due(op);
                tokio::time::sleep_until(due).await;
                due
            }
            None => {
                let now = Instant::now();
                if phase.deadline.is_some_and(|d| now >= d) {
                    break;
                }
                now
            }
        };
        let kind = match w.plan.mode {
            Mode::Write => OpKind::Write,
            Mode::Read => OpKind::Read,
            Mode::Mixed => o.ratio.pick(rng.next_u64()),
        };
        let key = w.chooser.key(op, &mut rng);
        let result = match kind {
            OpKind::Write => write(w, key).await,
            OpKind::Read => read(w, phase, key).await,
        };
        if !phase.record {
            continue;
        }
        match result {
            // Latency from the intended start: includes any wait for a
            // free worker when the server falls behind the schedule.
            Ok(()) => phase.recorder.record(kind, intended.elapsed()),
            Err(e) => {
                let n = phase.recorder.error(kind, &error_kind(&e));
                tracing::debug!("{} key {key}: {e}", kind.name());
                if o.max_errors > 0 && n >= o.max_errors {
                    let mut reason = phase.stop_reason.lock().unwrap_or_else(|e| e.into_inner());
                    reason.get_or_insert_with(|| format!("{n} errors (--max-errors); last: {e}"));
                    phase.stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn write(w: &Workload, key: u64) -> Result<(), ExecutionError> {
    let size = w.cli.opts.value_size;
    let mut values = Vec::with_capacity(1 + w.cli.opts.columns);
    if w.cli.opts.counter {
        values
            .extend((0..w.cli.opts.columns).map(|_| CqlValue::Counter(scylla::value::Counter(1))));
        values.push(CqlValue::BigInt(key as i64));
        w.session.execute_unpaged(&w.insert, values).await?;
        return Ok(());
    }
    values.push(CqlValue::BigInt(key as i64));
    for c in 0..w.cli.opts.columns {
        values.push(CqlValue::Blob(value_for(key, c, size)));
    }
    w.session.execute_unpaged(&w.insert, values).await?;
    Ok(())
}

async fn read(w: &Workload, phase: &Phase, key: u64) -> Result<(), ExecutionError> {
    let result = w.session.execute_unpaged(&w.select, (key as i64,)).await?;
    if !phase.record {
        return Ok(());
    }
    let r = &phase.recorder;
    let row: Option<Row> = result
        .into_rows_result()
        .ok()
        .and_then(|rows| rows.maybe_first_row::<Row>().ok().flatten());
    let Some(row) = row else {
        r.not_found.fetch_add(1, Ordering::Relaxed);
        if w.cli.opts.validate {
            r.checked.fetch_add(1, Ordering::Relaxed);
            r.missing.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(());
    };
    if w.cli.opts.validate {
        r.checked.fetch_add(1, Ordering::Relaxed);
        let size = w.cli.opts.value_size;
        let ok = row.columns.len() == w.cli.opts.columns
            && row.columns.iter().enumerate().all(|(c, v)| match v {
                Some(CqlValue::Blob(b)) => *b == value_for(key, c, size),
                _ => false,
            });
        if !ok {
            r.wrong.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("key {key}: wrong value");
        }
    }
    Ok(())
}

/// A short name for an error, for the error counts.
fn error_kind(e: &ExecutionError) -> String {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => {
            // The variant name without its fields: "WriteTimeout", ...
            let debug = format!("{db:?}");
            debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("DbError")
                .to_string()
        }
        ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(_)) => {
            "BrokenConnection".into()
        }
        ExecutionError::RequestTimeout(_) => "ClientTimeout".into(),
        ExecutionError::ConnectionPoolError(_) => "NoConnection".into(),
        ExecutionError::EmptyPlan => "NoHost".into(),
        _ => "Other".into(),
    }
}

type IntervalHists = Vec<(Duration, Duration, BTreeMap<OpKind, Histogram<u64>>)>;

/// Prints a line per interval (and drives the progress bar) until the
/// phase stops; returns the lines and their histograms.
async fn report_intervals(
    w: Arc<Workload>,
    phase: Arc<Phase>,
) -> (Vec<IntervalLine>, IntervalHists) {
    let o = &w.cli.opts;
    let bar = if o.quiet {
        ProgressBar::hidden()
    } else {
        match (w.plan.amount, phase.limit) {
            (_, Some(n)) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} ops, eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            (Amount::Duration(d), None) => ProgressBar::new(d.as_secs().max(1)).with_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} s")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            _ => ProgressBar::hidden(),
        }
    };
    let say = |line: &str| {
        if o.quiet {
        } else if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    say(IntervalLine::HEADER);
    let mut lines = Vec::new();
    let mut hists = Vec::new();
    let mut last = phase.start;
    let mut ticker = tokio::time::interval_at(phase.start + o.interval, o.interval);
    loop {
        let done = tokio::select! {
            _ = ticker.tick() => false,
            _ = wait_stopped(&phase) => true,
        };
        let now = Instant::now();
        let (h, errors) = phase.recorder.take_interval();
        let length = now - last;
        let line = IntervalLine::new((now - phase.start).as_secs_f64(), length, &h, errors);
        // A final sliver shorter than a tenth of an interval would print a
        // noisy rate; its ops still count in the totals.
        if !done || length >= o.interval / 10 {
            say(&line.render());
        }
        hists.push((last - phase.start, length, h));
        lines.push(line);
        last = now;
        match phase.limit {
            Some(_) => bar.set_position(phase.recorder.completed()),
            None => bar.set_position((now - phase.start).as_secs()),
        }
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    (lines, hists)
}

async fn wait_stopped(phase: &Phase) {
    while !phase.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    cli: &Cli,
    plan: &Plan,
    hosts: &[String],
    phase: &Phase,
    elapsed: Duration,
    intervals: Vec<IntervalLine>,
    user_s: f64,
    system_s: f64,
) -> Report {
    let o = &cli.opts;
    let r = &phase.recorder;
    let kinds: Vec<OpKind> = match plan.mode {
        Mode::Write => vec![OpKind::Write],
        Mode::Read => vec![OpKind::Read],
        Mode::Mixed => vec![OpKind::Write, OpKind::Read],
    };
    let mut all = gyre_stress::stats::new_histogram();
    let mut ops = BTreeMap::new();
    for k in &kinds {
        let h = r.total(*k);
        let _ = all.add(&h);
        ops.insert(
            k.name().to_string(),
            OpSummary::new(&h, r.errors_of(*k), elapsed),
        );
    }
    let total = OpSummary::new(&all, r.errors_total(), elapsed);
    let completed = r.completed();
    let rate = o.rate.map(|requested| RateReport {
        requested_ops_per_s: requested,
        achieved_ops_per_s: completed as f64 / elapsed.as_secs_f64().max(1e-9),
        scheduled_ops: phase.limit.unwrap_or(0),
        intended_s: phase.limit.unwrap_or(0) as f64 / requested,
    });
    let validation = o.validate.then(|| Validation {
        checked: r.checked.load(Ordering::Relaxed),
        missing: r.missing.load(Ordering::Relaxed),
        wrong: r.wrong.load(Ordering::Relaxed),
    });
    let wall = elapsed.as_secs_f64().max(1e-9);
    Report {
        mode: mode_name(plan.mode).into(),
        hosts: hosts.to_vec(),
        keyspace: o.keyspace.clone(),
        table: o.table.clone(),
        consistency: consistency_name(o.cl).into(),
        concurrency: o.concurrency,
        connections: o.connections,
        keys: plan.keys,
        distribution: dist_name(plan.dist),
        value_size: o.value_size,
        columns: o.columns,
        elapsed_s: elapsed.as_secs_f64(),
        total,
        ops,
        errors: r.errors_by_kind(),
        not_found: r.not_found.load(Ordering::Relaxed),
        rate,
        validation,
        cpu: Cpu {
            user_s,
            system_s,
            percent_of_one_core: 100.0 * (user_s + system_s) / wall,
        },
        stopped_early: phase
            .stop_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        intervals,
    }
}

fn write_hdr_log(path: &std::path::Path, start: SystemTime, hists: &IntervalHists) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2Serializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("gyre-stress latency log, values in microseconds")
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(&mut file, &mut serializer)?;
    for (offset, length, by_kind) in hists {
        for (kind, h) in by_kind {
            log.write_histogram(h, *offset, *length, Tag::new(kind.name()))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    drop(log);
    std::io::Write::flush(&mut file)?;
    Ok(())
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Write => "write",
        Mode::Read => "read",
        Mode::Mixed => "mixed",
    }
}

fn dist_name(d: Distribution) -> String {
    match d {
        Distribution::Uniform => "uniform".into(),
        Distribution::Seq => "seq".into(),
        Distribution::Zipf(s) => format!("zipf:{s}"),
    }
}

/// This process's user and system CPU seconds so far.
#[allow(unsafe_code)] // getrusage(2) into a zeroed struct, nothing else.
fn rusage() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// The client TLS of `--ssl` (rustls, the ring provider, as the node's
/// own TLS): the node's certificate must verify against `--ssl-ca` and be
/// valid for the node's IP address (the driver checks that); an optional
/// client certificate and key.
fn ssl_context(
    ca: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<scylla::client::session::TlsContext> {
    let config = gyre_protocol::tls_client_config_from_files(ca, client)?;
    Ok(scylla::client::session::TlsContext::Rustls023(config))
}
