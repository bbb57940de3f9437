//! Prepared plans against the general path: for the statements a plan
//! covers, EXECUTE through the plan writes the same partitions, reads the
//! same rows and pages, and refuses the same bad values with the same
//! messages as planning the statement on every request.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures::executor::block_on;
use gyre_common::{DecoratedKey, LocalTime, Partition};
use gyre_protocol::Consistency;
use gyre_query::{
    CasDecide, CasResult, DataAccess, LocalData, QueryParams, QueryProcessor, QueryResult, Value,
};
use gyre_schema::Schema;
use gyre_storage::{
    LsmConfig, LsmEngine, ManualClock, ReadFilter, ScanPage, ScanRequest, SyncMode, TableId,
    TableOptions,
};
use parking_lot::Mutex;

/// The engine, with every applied partition recorded.
struct Recorder {
    inner: LocalData,
    applied: Mutex<Vec<(TableId, Partition)>>,
}

#[async_trait::async_trait]
impl DataAccess for Recorder {
    fn create_table(&self, table: TableId, options: TableOptions) -> gyre_query::Result<()> {
        self.inner.create_table(table, options)
    }
    fn drop_table(&self, table: TableId) -> gyre_query::Result<()> {
        self.inner.drop_table(table)
    }
    async fn truncate_table(&self, table: TableId) -> gyre_query::Result<()> {
        self.inner.truncate_table(table).await
    }
    async fn apply(
        &self,
        table: TableId,
        update: Partition,
        cl: Consistency,
    ) -> gyre_query::Result<()> {
        self.applied.lock().push((table, update.clone()));
        self.inner.apply(table, update, cl).await
    }
    async fn read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
        cl: Consistency,
    ) -> gyre_query::Result<Option<Partition>> {
        self.inner.read(table, key, filter, now, cl).await
    }
    async fn scan(
        &self,
        table: TableId,
        request: &ScanRequest,
        now: LocalTime,
        cl: Consistency,
    ) -> gyre_query::Result<ScanPage> {
        self.inner.scan(table, request, now, cl).await
    }
    async fn apply_counter(
        &self,
        table: TableId,
        deltas: Partition,
        cl: Consistency,
    ) -> gyre_query::Result<()> {
        self.inner.apply_counter(table, deltas, cl).await
    }
    async fn cas(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
        serial: Consistency,
        commit: Consistency,
        decide: CasDecide<'_>,
    ) -> gyre_query::Result<CasResult> {
        self.inner
            .cas(table, key, filter, now, serial, commit, decide)
            .await
    }
}

/// The general path's and the plan's answers, and the partitions each wrote.
type Both = (
    Result<QueryResult, String>,
    Result<QueryResult, String>,
    Vec<(TableId, Partition)>,
    Vec<(TableId, Partition)>,
);

struct Env {
    qp: QueryProcessor,
    data: Arc<Recorder>,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LsmConfig::in_dir(dir.path());
    cfg.sync = SyncMode::Periodic { period_ms: 1000 };
    let engine = Arc::new(LsmEngine::open(cfg).unwrap());
    let data = Arc::new(Recorder {
        inner: LocalData::new(engine),
        applied: Mutex::default(),
    });
    let qp = QueryProcessor::new(
        Schema::new(),
        None,
        data.clone(),
        Arc::new(ManualClock::new(1_700_000_000)),
    );
    for ddl in [
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE ks.t (k int, c text, s int static, v text, w bigint, PRIMARY KEY (k, c))",
        "CREATE TABLE ks.u (a text, b int, x blob, PRIMARY KEY ((a, b)))",
    ] {
        block_on(qp.execute(ddl, &QueryParams::default())).unwrap();
    }
    Env {
        qp,
        data,
        _dir: dir,
    }
}

fn params(values: Vec<Value>) -> QueryParams {
    QueryParams {
        values,
        keyspace: Some("ks".into()),
        // Fixed times, so both paths write the same cells.
        timestamp: Some(1_234_567),
        now_in_seconds: Some(1_700_000_000),
        ..Default::default()
    }
}

fn int(v: i32) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&v.to_be_bytes()))
}
fn bigint(v: i64) -> Value {
    Value::Bytes(Bytes::copy_from_slice(&v.to_be_bytes()))
}
fn text(v: &str) -> Value {
    Value::Bytes(Bytes::copy_from_slice(v.as_bytes()))
}
fn raw(v: &[u8]) -> Value {
    Value::Bytes(Bytes::copy_from_slice(v))
}

impl Env {
    /// Runs `cql` with `values` both ways; returns (general, planned).
    fn both(&self, cql: &str, values: Vec<Value>, page_size: Option<usize>) -> Both {
        let parsed = gyre_cql::parse(cql).unwrap();
        let plan = self
            .qp
            .plan(&parsed, Some("ks"))
            .unwrap_or_else(|| panic!("no plan for {cql}"));
        let mut p = params(values);
        p.page_size = page_size;
        let general = block_on(self.qp.execute_parsed(&parsed, &p)).map_err(|e| e.to_string());
        let general_writes = std::mem::take(&mut *self.data.applied.lock());
        let planned = block_on(self.qp.execute_plan(&plan, parsed.bind_markers.len(), &p))
            .map_err(|e| e.to_string());
        let planned_writes = std::mem::take(&mut *self.data.applied.lock());
        // A plan's rows come without columns; they are the plan's.
        let planned = planned.map(|r| match r {
            QueryResult::Rows {
                rows, paging_state, ..
            } => QueryResult::Rows {
                columns: plan.result_columns().to_vec(),
                rows,
                paging_state,
            },
            r => r,
        });
        (general, planned, general_writes, planned_writes)
    }

    fn same(&self, cql: &str, values: Vec<Value>) {
        let (g, p, gw, pw) = self.both(cql, values.clone(), None);
        assert_eq!(p, g, "{cql} {values:?}");
        assert_eq!(pw, gw, "{cql} {values:?}");
    }
}

#[test]
fn planned_writes_are_the_general_paths_partitions() {
    let e = env();
    let ins = "INSERT INTO t (k, c, v, w) VALUES (?, ?, ?, ?)";
    e.same(ins, vec![int(1), text("a"), text("x"), bigint(5)]);
    e.same(ins, vec![int(1), text("b"), Value::Unset, Value::Null]);
    e.same(ins, vec![int(1), text(""), text("é"), bigint(-1)]);
    e.same(
        "INSERT INTO t (c, k, v) VALUES (?, ?, ?) USING TTL ? AND TIMESTAMP ?",
        vec![text("c"), int(2), text("y"), int(60), bigint(99)],
    );
    e.same(
        "INSERT INTO ks.t (k, c, v) VALUES (?, 'lit', ?)",
        vec![int(3), text("z")],
    );
    e.same(
        "INSERT INTO u (a, b, x) VALUES (?, ?, ?)",
        vec![text("p"), int(7), raw(&[0, 1])],
    );
    e.same(
        "UPDATE t SET v = ?, s = ? WHERE k = ? AND c = ?",
        vec![text("v2"), int(9), int(1), text("a")],
    );
    e.same(
        "UPDATE t USING TTL 30 SET w = ? WHERE k = ? AND c = ?",
        vec![Value::Unset, int(1), text("a")],
    );
    e.same(
        "UPDATE u SET x = ? WHERE a = ? AND b = ?",
        vec![Value::Null, text("p"), int(7)],
    );
    e.same(
        "DELETE FROM t WHERE k = ? AND c = ?",
        vec![int(1), text("a")],
    );
    e.same("DELETE FROM t WHERE k = ?", vec![int(2)]);
    e.same(
        "DELETE v, s FROM t WHERE k = ? AND c = ?",
        vec![int(1), text("b")],
    );
    e.same(
        "DELETE FROM u USING TIMESTAMP 5 WHERE a = ? AND b = ?",
        vec![text("p"), int(7)],
    );
}

#[test]
fn planned_reads_return_the_general_paths_rows_and_pages() {
    let e = env();
    for (k, c, v) in [(1, "a", "x"), (1, "b", "y"), (1, "c", "z"), (2, "a", "w")] {
        e.same(
            "INSERT INTO t (k, c, v, s) VALUES (?, ?, ?, ?)",
            vec![int(k), text(c), text(v), int(k * 10)],
        );
    }
    e.same("SELECT * FROM t WHERE k = ?", vec![int(1)]);
    e.same("SELECT * FROM t WHERE k = ?", vec![int(5)]);
    e.same(
        "SELECT v, writetime(v), ttl(v), s FROM t WHERE k = ? AND c = ?",
        vec![int(1), text("b")],
    );
    e.same(
        "SELECT c, v FROM t WHERE k = ? LIMIT ?",
        vec![int(1), int(2)],
    );
    e.same("SELECT c FROM ks.t WHERE k = 1 LIMIT 1", vec![]);
    // Pages: the same rows and the same paging state, page after page.
    let q = "SELECT c, v FROM t WHERE k = ?";
    let (g, p, _, _) = e.both(q, vec![int(1)], Some(2));
    assert_eq!(p, g);
    let Ok(QueryResult::Rows {
        paging_state: Some(state),
        ..
    }) = g
    else {
        panic!("a first page with more to come: {g:?}")
    };
    let parsed = gyre_cql::parse(q).unwrap();
    let plan = e.qp.plan(&parsed, Some("ks")).unwrap();
    let mut pp = params(vec![int(1)]);
    pp.page_size = Some(2);
    pp.paging_state = Some(state);
    let general = block_on(e.qp.execute_parsed(&parsed, &pp)).unwrap();
    let QueryResult::Rows {
        rows, paging_state, ..
    } = block_on(e.qp.execute_plan(&plan, 1, &pp)).unwrap()
    else {
        panic!("rows expected")
    };
    let QueryResult::Rows {
        rows: grows,
        paging_state: gstate,
        ..
    } = general
    else {
        panic!("rows expected")
    };
    assert_eq!((rows, paging_state), (grows, gstate));
}

#[test]
fn bad_values_get_the_general_paths_messages() {
    let e = env();
    let ins = "INSERT INTO t (k, c, v, w) VALUES (?, ?, ?, ?)";
    let bad: Vec<Vec<Value>> = vec![
        vec![raw(&[0, 1, 2]), text("a"), text("x"), bigint(1)],
        vec![int(1), raw(&[0xff]), text("x"), bigint(1)],
        vec![int(1), text("a"), raw(&[0xc3]), bigint(1)],
        vec![int(1), text("a"), text("x"), raw(&[0; 4])],
        vec![Value::Null, text("a"), text("x"), bigint(1)],
        vec![int(1), Value::Null, text("x"), bigint(1)],
        vec![Value::Unset, text("a"), text("x"), bigint(1)],
        vec![int(1), text("a")],
    ];
    for values in bad {
        let (g, p, gw, pw) = e.both(ins, values.clone(), None);
        assert!(g.is_err(), "{values:?}: {g:?}");
        assert_eq!(p, g, "{values:?}");
        assert!(gw.is_empty() && pw.is_empty());
    }
    // An empty component of a composite key is a key (Cassandra checks the
    // serialized key); an empty one-column key is not.
    let (g, p, gw, pw) = e.both(
        "INSERT INTO u (a, b, x) VALUES (?, ?, ?)",
        vec![text(""), int(1), raw(&[])],
        None,
    );
    assert!(g.is_ok(), "{g:?}");
    assert_eq!(p, g);
    assert_eq!(gw, pw);
    let (g, p, _, _) = e.both(
        "INSERT INTO t (k, c, v) VALUES (?, ?, ?)",
        vec![raw(&[]), text("a"), text("x")],
        None,
    );
    assert_eq!(g, Err("Key may not be empty".into()));
    assert_eq!(p, g);
    for (q, values) in [
        ("SELECT * FROM t WHERE k = ?", vec![raw(&[1])]),
        ("SELECT * FROM t WHERE k = ?", vec![Value::Null]),
        (
            "SELECT * FROM t WHERE k = ? AND c = ?",
            vec![int(1), raw(&[0xfe])],
        ),
        ("SELECT * FROM t WHERE k = ? LIMIT ?", vec![int(1), int(0)]),
        (
            "UPDATE t SET v = ? WHERE k = ? AND c = ?",
            vec![raw(&[0xff]), int(1), text("a")],
        ),
        (
            "UPDATE t SET v = ? WHERE k = ? AND c = ?",
            vec![text("v"), Value::Unset, text("a")],
        ),
        ("DELETE FROM t WHERE k = ?", vec![raw(&[0; 8])]),
        (
            "DELETE FROM t USING TIMESTAMP ? WHERE k = ?",
            vec![raw(&[0; 3]), int(1)],
        ),
    ] {
        let (g, p, _, _) = e.both(q, values.clone(), None);
        assert!(g.is_err(), "{q} {values:?}: {g:?}");
        assert_eq!(p, g, "{q} {values:?}");
    }
}

#[test]
fn statements_a_plan_does_not_cover_have_none() {
    let e = env();
    for q in [
        "INSERT INTO t (k, c, v) VALUES (?, ?, ?) IF NOT EXISTS",
        "INSERT INTO t (k, c, v) VALUES (?, ?, toJson(?))",
        "INSERT INTO t JSON ?",
        "INSERT INTO t (k, s) VALUES (?, ?)",
        "UPDATE t SET v = ? WHERE k = ? AND c = ? IF v = ?",
        "UPDATE t SET v = ? WHERE k = ?",
        "DELETE FROM t WHERE k = ? AND c > ?",
        "SELECT * FROM t WHERE v = ? ALLOW FILTERING",
        "SELECT * FROM t WHERE k IN (1, 2)",
        "SELECT count(*) FROM t WHERE k = ?",
        "SELECT * FROM t WHERE k = ? ORDER BY c DESC",
        "SELECT * FROM t",
        "SELECT * FROM nope WHERE k = ?",
        "TRUNCATE t",
    ] {
        let parsed = gyre_cql::parse(q).unwrap();
        assert!(e.qp.plan(&parsed, Some("ks")).is_none(), "{q}");
    }
}
