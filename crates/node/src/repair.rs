//! `POST /repair` and `GET /repair`: anti-entropy repair sessions run by
//! this node (`gyrectl repair`). A session repairs the tables of a keyspace
//! over this node's ranges (only those it is the primary owner of with
//! `pr`, or the given token range), range by range through the
//! coordinator's [`gyre_coordinator::Coordinator::repair_range`], in the
//! background: the POST answers with the session id at once and `GET
//! /repair` reports progress and the summary. One repair per table at a
//! time on a node.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gyre_coordinator::RangeRepair;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::node::Shared;

/// Merkle depth: at most 2^10 leaves per range (Cassandra bounds its trees
/// by memory; ranges here are vnode ranges, so a few thousand leaves
/// suffice; the coordinator uses fewer for ranges with few partitions).
pub const DEFAULT_DEPTH: u8 = 10;
/// Sessions kept for `GET /repair`.
const KEEP_SESSIONS: usize = 32;
/// The repair history: one JSON line per finished session, in the data
/// directory, so repairs from before a restart stay listed (Cassandra's
/// `system_distributed.repair_history`, kept per node here).
const HISTORY_FILE: &str = "repair_history.jsonl";
/// Sessions the history keeps (it is cut back to this past twice as many).
const KEEP_HISTORY: usize = 1000;

/// The request body of `POST /repair`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepairRequest {
    /// The keyspace; empty: every keyspace but the system ones.
    #[serde(default)]
    pub keyspace: String,
    /// Tables to repair (default: every table of the keyspace).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Exclusive start token of a range to repair (with `end_token`).
    #[serde(default)]
    pub start_token: Option<i64>,
    /// Inclusive end token.
    #[serde(default)]
    pub end_token: Option<i64>,
    /// Only the ranges this node is the primary owner of.
    #[serde(default)]
    pub primary_range: bool,
    #[serde(default)]
    pub depth: Option<u8>,
}

/// One table's outcome in a session.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRepair {
    pub table: String,
    pub ranges: u64,
    pub partitions_compared: u64,
    pub mismatched_leaves: u64,
    pub partitions_differing: u64,
    pub mutations_sent: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Bytes of Merkle tree requests sent to other replicas and of the
    /// leaves they answered.
    #[serde(default)]
    pub tree_bytes: u64,
}

/// A repair session, as `GET /repair` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RepairSession {
    pub id: u64,
    pub keyspace: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub ranges_total: u64,
    pub ranges_done: u64,
    pub tables: Vec<TableRepair>,
    pub error: Option<String>,
    pub seconds: f64,
    /// When it started and finished (Unix seconds).
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub finished_at: Option<i64>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The node's repair sessions.
#[derive(Default)]
pub(crate) struct Repairs {
    /// The running and the last finished ones (history included).
    sessions: Mutex<Vec<RepairSession>>,
    /// Where finished sessions are appended (none in tests without a disk).
    history: Option<PathBuf>,
    history_lines: AtomicU64,
    running: Mutex<HashSet<(String, String)>>,
    next_id: Mutex<u64>,
    /// Everything repaired since start, for /metrics.
    totals: Mutex<RangeRepair>,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Repairs {
    /// Sessions with their history in `data_dir` (the last ones loaded, so
    /// ids go on from there).
    pub(crate) fn with_history(data_dir: &Path) -> Self {
        let path = data_dir.join(HISTORY_FILE);
        let past = read_history(&path);
        end_torn_line(&path);
        let keep = past.len().saturating_sub(KEEP_SESSIONS);
        Repairs {
            next_id: Mutex::new(past.iter().map(|s| s.id).max().unwrap_or(0)),
            history_lines: AtomicU64::new(past.len() as u64),
            sessions: Mutex::new(past[keep..].to_vec()),
            history: Some(path),
            ..Default::default()
        }
    }

    pub(crate) fn list(&self) -> Vec<RepairSession> {
        self.sessions.lock().clone()
    }

    /// Appends a finished session to the history, cutting it back to the
    /// last [`KEEP_HISTORY`] when it has grown to twice that. A failure is
    /// logged: the repair itself is done.
    fn record(&self, session: &RepairSession) {
        let Some(path) = &self.history else { return };
        let result = (|| -> std::io::Result<()> {
            let mut line = serde_json::to_vec(session)?;
            line.push(b'\n');
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            f.write_all(&line)?;
            f.sync_data()?;
            if self.history_lines.fetch_add(1, Ordering::Relaxed) + 1 >= 2 * KEEP_HISTORY as u64 {
                let past = read_history(path);
                let keep = &past[past.len().saturating_sub(KEEP_HISTORY)..];
                let mut body = Vec::new();
                for s in keep {
                    body.extend(serde_json::to_vec(s)?);
                    body.push(b'\n');
                }
                let tmp = path.with_extension("jsonl.tmp");
                std::fs::write(&tmp, &body)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, path)?;
                self.history_lines
                    .store(keep.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not record the repair in its history");
        }
    }

    /// Repair counters in Prometheus text.
    pub(crate) fn render_prometheus(&self, m: &mut String) {
        use std::fmt::Write as _;
        let t = self.totals.lock().clone();
        for (name, help, v) in [
            (
                "gyre_repair_sessions_succeeded_total",
                "Repair sessions that finished.",
                self.succeeded.load(Ordering::Relaxed),
            ),
            (
                "gyre_repair_sessions_failed_total",
                "Repair sessions that failed.",
                self.failed.load(Ordering::Relaxed),
            ),
            (
                "gyre_repair_partitions_compared_total",
                "Partitions covered by the replicas' Merkle trees.",
                t.partitions_compared,
            ),
            (
                "gyre_repair_mismatched_leaves_total",
                "Merkle leaves where replicas disagreed.",
                t.mismatched_leaves,
            ),
            (
                "gyre_repair_partitions_differing_total",
                "Partitions that differed on some replica.",
                t.partitions_differing,
            ),
            (
                "gyre_repair_bytes_sent_total",
                "Bytes of repair writes sent.",
                t.bytes_sent,
            ),
            (
                "gyre_repair_bytes_received_total",
                "Bytes read from other replicas in differing slices.",
                t.bytes_received,
            ),
            (
                "gyre_repair_tree_bytes_total",
                "Bytes of Merkle tree requests to and answers from other replicas.",
                t.tree_bytes,
            ),
        ] {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut RepairSession)) {
        if let Some(s) = self.sessions.lock().iter_mut().find(|s| s.id == id) {
            f(s);
        }
    }
}

/// Ends a last line a crash tore (no newline) so the next record starts a
/// line of its own (the torn one is then skipped when read).
fn end_torn_line(path: &Path) {
    let torn = std::fs::read(path).is_ok_and(|b| b.last().is_some_and(|c| *c != b'\n'));
    if torn {
        let fixed = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(b"\n"));
        if let Err(e) = fixed {
            tracing::warn!(path = %path.display(), error = %e, "could not end the repair history's torn line");
        }
    }
}

/// The sessions of a history file, oldest first; a line that does not
/// parse (a torn last write) is skipped with a log line.
fn read_history(path: &Path) -> Vec<RepairSession> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not read the repair history");
            return Vec::new();
        }
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a bad repair history line");
                None
            }
        })
        .collect()
}

/// Validates `req`, then starts the session in the background.
pub(crate) fn start(shared: &Arc<Shared>, req: RepairRequest) -> Result<RepairSession, String> {
    let qp = shared.qp.get().ok_or("the node is still starting")?;
    let coord = shared
        .coordinator
        .get()
        .ok_or("the node is still starting")?
        .clone();
    let schema = qp.schema();
    // (keyspace, table) pairs.
    let names: Vec<(String, String)> = if req.keyspace.is_empty() {
        if !req.tables.is_empty() {
            return Err("name the keyspace of the tables to repair".into());
        }
        schema
            .tables()
            .keys()
            .filter(|(ks, _)| !gyre_schema::is_system_keyspace(ks))
            .cloned()
            .collect()
    } else {
        schema
            .keyspace(&req.keyspace)
            .ok_or_else(|| format!("unknown keyspace {}", req.keyspace))?;
        if req.tables.is_empty() {
            let mut names: Vec<_> = schema
                .tables_in(&req.keyspace)
                .map(|t| (req.keyspace.clone(), t.name.clone()))
                .collect();
            // Built in, so not listed by the schema; repaired when named
            // (as Cassandra advises after raising system_auth's RF).
            if req.keyspace == "system_auth" {
                names.extend(
                    gyre_schema::system_auth_tables()
                        .iter()
                        .map(|t| (req.keyspace.clone(), t.name.clone())),
                );
            }
            names
        } else {
            req.tables
                .iter()
                .map(|t| (req.keyspace.clone(), t.clone()))
                .collect()
        }
    };
    let mut tables = Vec::new();
    for (ks, name) in &names {
        let def = schema
            .table(ks, name)
            .ok_or_else(|| format!("unknown table {ks}.{name}"))?;
        tables.push((format!("{ks}.{name}"), def.id));
    }
    let depth = req.depth.unwrap_or(DEFAULT_DEPTH);
    if depth > gyre_coordinator::MAX_REPAIR_DEPTH {
        return Err(format!(
            "depth {depth} is over {}",
            gyre_coordinator::MAX_REPAIR_DEPTH
        ));
    }
    let mut plan = Vec::new();
    for (name, id) in &tables {
        let ranges = match (req.start_token, req.end_token) {
            (Some(s), Some(e)) => coord.split_by_ring(s, e),
            (None, None) => coord
                .repair_ranges(*id, req.primary_range)
                .map_err(|e| e.to_string())?,
            _ => return Err("give both --start-token and --end-token, or neither".into()),
        };
        plan.push((name.clone(), *id, ranges));
    }
    let repairs = &shared.repairs;
    {
        let mut running = repairs.running.lock();
        if let Some((ks, t)) = names.iter().find(|n| running.contains(*n)) {
            return Err(format!(
                "a repair of {ks}.{t} is already running on this node"
            ));
        }
        for n in &names {
            running.insert(n.clone());
        }
    }
    let id = {
        let mut next = repairs.next_id.lock();
        *next += 1;
        *next
    };
    let session = RepairSession {
        id,
        keyspace: if req.keyspace.is_empty() {
            "(all)".into()
        } else {
            req.keyspace.clone()
        },
        state: "running".into(),
        ranges_total: plan.iter().map(|p| p.2.len() as u64).sum(),
        ranges_done: 0,
        tables: Vec::new(),
        error: None,
        seconds: 0.0,
        started_at: unix_now(),
        finished_at: None,
    };
    {
        let mut sessions = repairs.sessions.lock();
        sessions.push(session.clone());
        let excess = sessions.len().saturating_sub(KEEP_SESSIONS);
        sessions.drain(..excess);
    }
    let shared = shared.clone();
    tokio::runtime::Handle::current().spawn(async move {
        let started = Instant::now();
        let mut error = None;
        'tables: for (name, table, ranges) in plan {
            let mut sum = RangeRepair::default();
            for (start, end) in &ranges {
                match coord.repair_range(table, *start, *end, depth).await {
                    Ok(r) => {
                        shared.repairs.totals.lock().add(&r);
                        sum.add(&r)
                    }
                    Err(e) => {
                        tracing::warn!(table = name, error = %e, "repair failed");
                        error = Some(format!("{name}: {e}"));
                        break 'tables;
                    }
                }
                shared.repairs.update(id, |s| {
                    s.ranges_done += 1;
                    s.seconds = started.elapsed().as_secs_f64();
                });
            }
            let summary = TableRepair {
                table: name.clone(),
                ranges: ranges.len() as u64,
                partitions_compared: sum.partitions_compared,
                mismatched_leaves: sum.mismatched_leaves,
                partitions_differing: sum.partitions_differing,
                mutations_sent: sum.mutations_sent,
                bytes_sent: sum.bytes_sent,
                bytes_received: sum.bytes_received,
                tree_bytes: sum.tree_bytes,
            };
            tracing::info!(table = name, ?summary, "repair of a table finished");
            shared.repairs.update(id, |s| s.tables.push(summary));
        }
        let failed = error.is_some();
        let mut finished = None;
        shared.repairs.update(id, |s| {
            s.state = if failed { "failed" } else { "done" }.into();
            s.error = error;
            s.seconds = started.elapsed().as_secs_f64();
            s.finished_at = Some(unix_now());
            finished = Some(s.clone());
        });
        if let Some(s) = finished {
            shared.repairs.record(&s);
        }
        if failed {
            shared.repairs.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.repairs.succeeded.fetch_add(1, Ordering::Relaxed);
        }
        let mut running = shared.repairs.running.lock();
        for n in &names {
            running.remove(n);
        }
    });
    Ok(session)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn session(id: u64) -> RepairSession {
        RepairSession {
            id,
            keyspace: "ks".into(),
            state: "done".into(),
            ranges_total: 2,
            ranges_done: 2,
            tables: vec![TableRepair {
                table: "ks.t".into(),
                ..TableRepair::default()
            }],
            error: None,
            seconds: 0.5,
            started_at: 1_000 + id as i64,
            finished_at: Some(1_001 + id as i64),
        }
    }

    #[test]
    fn the_history_survives_a_reload_skips_a_torn_line_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let repairs = Repairs::with_history(dir.path());
        assert!(repairs.list().is_empty());
        for id in 1..=3 {
            repairs.record(&session(id));
        }
        // A write torn by a crash, then one more session after a restart.
        let path = dir.path().join(HISTORY_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"id\": 9, \"keysp").unwrap();
        let again = Repairs::with_history(dir.path());
        again.record(&session(4));
        let ids: Vec<u64> = again.list().iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(again.list()[2], session(3));
        assert_eq!(*again.next_id.lock(), 3, "ids go on after the last one");
        let read: Vec<u64> = read_history(&path).iter().map(|s| s.id).collect();
        assert_eq!(read, [1, 2, 3, 4], "the record after the tear is kept");
        // Past 2 x KEEP_HISTORY lines the file is cut back to the last KEEP_HISTORY.
        for id in 5..=(2 * KEEP_HISTORY as u64) {
            again.record(&session(id));
        }
        let kept = read_history(&path);
        assert_eq!(kept.len(), KEEP_HISTORY);
        assert_eq!(kept.last().unwrap().id, 2 * KEEP_HISTORY as u64);
        let last = Repairs::with_history(dir.path()).list();
        assert_eq!(last.len(), KEEP_SESSIONS);
        assert_eq!(last.last().unwrap().id, 2 * KEEP_HISTORY as u64);
    }
}
