//! End to end: CQL text against a real `LsmEngine` in a temp dir.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use gyre_protocol::{ColumnType, CqlValue};
use gyre_query::{LocalData, QueryError, QueryParams, QueryProcessor, QueryResult, Value};
use gyre_schema::{Schema, SchemaStore};
use gyre_storage::{LsmConfig, LsmEngine, ManualClock, StorageEngine, SyncMode};

/// The processor is async; these tests drive it to completion on the test
/// thread (over `LocalData` every await resolves without a runtime).
trait RunSync {
    fn run(&self, cql: &str, params: &QueryParams) -> gyre_query::Result<QueryResult>;
}

impl RunSync for QueryProcessor {
    fn run(&self, cql: &str, params: &QueryParams) -> gyre_query::Result<QueryResult> {
        futures::executor::block_on(self.execute(cql, params))
    }
}

struct Env {
    qp: QueryProcessor,
    clock: Arc<ManualClock>,
    engine: Arc<LsmEngine>,
    _dir: tempfile::TempDir,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LsmConfig::in_dir(dir.path());
    cfg.sync = SyncMode::Periodic { period_ms: 1000 };
    let engine = Arc::new(LsmEngine::open(cfg).unwrap());
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let store = SchemaStore::open(engine.clone()).unwrap();
    let qp = QueryProcessor::new(
        Schema::new(),
        Some(store),
        Arc::new(LocalData::new(engine.clone())),
        clock.clone(),
    );
    let e = Env {
        qp,
        clock,
        engine,
        _dir: dir,
    };
    e.ok("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
    e
}

fn params() -> QueryParams {
    QueryParams {
        keyspace: Some("ks".into()),
        ..Default::default()
    }
}

type TypedRows = Vec<Vec<Option<CqlValue>>>;

impl Env {
    fn run(&self, cql: &str) -> Result<QueryResult, QueryError> {
        self.qp.run(cql, &params())
    }

    fn ok(&self, cql: &str) -> QueryResult {
        self.run(cql).unwrap_or_else(|e| panic!("{cql}: {e}"))
    }

    fn err(&self, cql: &str) -> QueryError {
        match self.run(cql) {
            Ok(r) => panic!("{cql}: expected an error, got {r:?}"),
            Err(e) => e,
        }
    }

    fn rows_with(&self, cql: &str, p: &QueryParams) -> (TypedRows, Option<Bytes>) {
        match self.qp.run(cql, p).unwrap_or_else(|e| panic!("{cql}: {e}")) {
            QueryResult::Rows {
                columns,
                rows,
                paging_state,
            } => (decode(&columns, rows), paging_state),
            other => panic!("{cql}: expected rows, got {other:?}"),
        }
    }

    fn rows(&self, cql: &str) -> TypedRows {
        self.rows_with(cql, &params()).0
    }

    /// The single column of each row, as ints.
    fn ints(&self, cql: &str) -> Vec<i32> {
        self.rows(cql)
            .into_iter()
            .map(|r| match &r[0] {
                Some(CqlValue::Int(i)) => *i,
                other => panic!("{cql}: not an int: {other:?}"),
            })
            .collect()
    }
}

fn decode(columns: &[(String, ColumnType)], rows: Vec<Vec<Option<Bytes>>>) -> TypedRows {
    rows.into_iter()
        .map(|r| {
            assert_eq!(r.len(), columns.len());
            r.iter()
                .zip(columns)
                .map(|(v, (_, ty))| v.as_ref().map(|b| CqlValue::decode(ty, b).unwrap()))
                .collect()
        })
        .collect()
}

/// A bound value in wire form.
fn val(b: impl Into<Bytes>) -> Value {
    Value::Bytes(b.into())
}

fn int(i: i32) -> Option<CqlValue> {
    Some(CqlValue::Int(i))
}

fn text(s: &str) -> Option<CqlValue> {
    Some(CqlValue::Text(s.into()))
}

#[test]
fn values_of_many_types_round_trip() {
    let e = env();
    let r = e.ok("CREATE TABLE t (k int PRIMARY KEY, b bigint, s text, bl blob, f boolean, u uuid, \
                  ts timestamp, d double, fl float, dt date, tu timeuuid, si smallint, ti tinyint, \
                  vi varint, de decimal, ip inet, tm time, l frozen<list<int>>, m map<text, int>, st set<text>)");
    assert!(matches!(r, QueryResult::SchemaChange(_)));
    e.ok("INSERT INTO t (k, b, s, bl, f, u, ts, d, fl, dt, tu, si, ti, vi, de, ip, tm, l, m, st) VALUES \
          (1, -9000000000, 'héllo', 0xcafe, true, 123e4567-e89b-12d3-a456-426614174000, \
          '2011-02-03T04:05:00.123Z', 1.5, -2.25, '2000-03-01', 50554d6e-29bb-11e5-b345-feff819cdc9f, \
          -3, 7, 123456789012345678901234567890, 12.50, '10.1.2.3', '01:02:03.5', [3, 1, 2], \
          {'b': 2, 'a': 1}, {'y', 'x', 'y'})");
    e.ok("INSERT INTO t (k, ts) VALUES (2, 1000)");
    let rows = e.rows(
        "SELECT k, b, s, bl, f, u, ts, d, fl, dt, tu, si, ti, ip, tm, l, m, st FROM t WHERE k = 1",
    );
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r[0], int(1));
    assert_eq!(r[1], Some(CqlValue::Bigint(-9_000_000_000)));
    assert_eq!(r[2], text("héllo"));
    assert_eq!(
        r[3],
        Some(CqlValue::Blob(Bytes::from_static(&[0xca, 0xfe])))
    );
    assert_eq!(r[4], Some(CqlValue::Boolean(true)));
    assert_eq!(
        r[5],
        Some(CqlValue::Uuid(
            "123e4567-e89b-12d3-a456-426614174000".parse().unwrap()
        ))
    );
    assert_eq!(r[6], Some(CqlValue::Timestamp(1_296_705_900_123)));
    assert_eq!(r[7], Some(CqlValue::Double(1.5)));
    assert_eq!(r[8], Some(CqlValue::Float(-2.25)));
    assert_eq!(
        r[9],
        Some(CqlValue::Date(gyre_protocol::date_from_days(11_017)))
    );
    assert!(matches!(r[10], Some(CqlValue::Timeuuid(_))));
    assert_eq!(r[11], Some(CqlValue::Smallint(-3)));
    assert_eq!(r[12], Some(CqlValue::Tinyint(7)));
    assert_eq!(r[13], Some(CqlValue::Inet("10.1.2.3".parse().unwrap())));
    assert_eq!(r[14], Some(CqlValue::Time(3_723_500_000_000)));
    assert_eq!(
        r[15],
        Some(CqlValue::List(vec![
            CqlValue::Int(3),
            CqlValue::Int(1),
            CqlValue::Int(2)
        ]))
    );
    assert_eq!(
        r[16],
        Some(CqlValue::Map(vec![
            (CqlValue::Text("a".into()), CqlValue::Int(1)),
            (CqlValue::Text("b".into()), CqlValue::Int(2)),
        ]))
    );
    assert_eq!(
        r[17],
        Some(CqlValue::Set(vec![
            CqlValue::Text("x".into()),
            CqlValue::Text("y".into())
        ]))
    );
    // Unset columns are null; an integer timestamp is milliseconds.
    let rows = e.rows("SELECT k, ts, s FROM t WHERE k = 2");
    assert_eq!(
        rows,
        vec![vec![int(2), Some(CqlValue::Timestamp(1000)), None]]
    );
    // SELECT * lists key columns first, then the rest by name.
    match e.ok("SELECT * FROM t WHERE k = 2") {
        QueryResult::Rows { columns, .. } => {
            let names: Vec<_> = columns.iter().map(|c| c.0.as_str()).collect();
            assert_eq!(names[..4], ["k", "b", "bl", "d"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bound_values_and_composite_keys() {
    let e = env();
    e.ok("CREATE TABLE t (a text, b int, c bigint, v text, PRIMARY KEY ((a, b), c))");
    let p = QueryParams {
        values: vec![
            val("x"),
            val(7i32.to_be_bytes().to_vec()),
            val(5i64.to_be_bytes().to_vec()),
            val("bound"),
        ],
        ..params()
    };
    e.qp.run("INSERT INTO t (a, b, c, v) VALUES (?, ?, ?, ?)", &p)
        .unwrap();
    let (rows, _) = e.rows_with(
        "SELECT a, b, c, v FROM t WHERE a = ? AND b = ? AND c = ?",
        &QueryParams {
            values: p.values[..3].to_vec(),
            ..params()
        },
    );
    assert_eq!(
        rows,
        vec![vec![
            text("x"),
            int(7),
            Some(CqlValue::Bigint(5)),
            text("bound")
        ]]
    );
    // A wrongly sized bound int is refused.
    let bad = QueryParams {
        values: vec![
            val("x"),
            val(Bytes::from_static(&[1, 2])),
            Value::Null,
            Value::Null,
        ],
        ..params()
    };
    let err =
        e.qp.run("INSERT INTO t (a, b, c, v) VALUES (?, ?, ?, ?)", &bad)
            .unwrap_err();
    assert_eq!(err.code(), 0x2200, "{err}");
    // The whole key is required.
    let err = e.err("SELECT * FROM t WHERE a = 'x'");
    assert!(err.to_string().contains("ALLOW FILTERING"), "{err}");
    assert_eq!(
        e.rows("SELECT v FROM t WHERE a = 'x' ALLOW FILTERING"),
        vec![vec![text("bound")]]
    );
}

#[test]
fn clustering_slices_order_and_limit() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, v text, PRIMARY KEY (k, c))");
    e.ok("CREATE TABLE d (k int, c int, v text, PRIMARY KEY (k, c)) WITH CLUSTERING ORDER BY (c DESC)");
    for c in 0..10 {
        for t in ["t", "d"] {
            e.ok(&format!(
                "INSERT INTO {t} (k, c, v) VALUES (1, {c}, 'v{c}')"
            ));
            e.ok(&format!(
                "INSERT INTO {t} (k, c, v) VALUES (2, {c}, 'w{c}')"
            ));
        }
    }
    assert_eq!(
        e.ints("SELECT c FROM t WHERE k = 1"),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        e.ints("SELECT c FROM d WHERE k = 1"),
        (0..10).rev().collect::<Vec<_>>()
    );
    for t in ["t", "d"] {
        let mut got = e.ints(&format!(
            "SELECT c FROM {t} WHERE k = 1 AND c >= 3 AND c < 6"
        ));
        got.sort();
        assert_eq!(got, vec![3, 4, 5], "{t}");
        let mut got = e.ints(&format!("SELECT c FROM {t} WHERE k = 1 AND c > 7"));
        got.sort();
        assert_eq!(got, vec![8, 9], "{t}");
        let mut got = e.ints(&format!("SELECT c FROM {t} WHERE k = 1 AND c <= 1"));
        got.sort();
        assert_eq!(got, vec![0, 1], "{t}");
        assert_eq!(
            e.ints(&format!("SELECT c FROM {t} WHERE k = 1 AND c = 4")),
            vec![4]
        );
        assert_eq!(
            e.ints(&format!("SELECT c FROM {t} WHERE k = 1 AND c IN (7, 2)"))
                .len(),
            2
        );
        assert_eq!(
            e.ints(&format!(
                "SELECT c FROM {t} WHERE k = 1 ORDER BY c DESC LIMIT 3"
            )),
            vec![9, 8, 7]
        );
        assert_eq!(
            e.ints(&format!(
                "SELECT c FROM {t} WHERE k = 1 ORDER BY c ASC LIMIT 3"
            )),
            vec![0, 1, 2]
        );
        assert_eq!(
            e.ints(&format!(
                "SELECT c FROM {t} WHERE k = 1 AND c > 2 AND c <= 5 ORDER BY c DESC"
            )),
            vec![5, 4, 3]
        );
    }
    assert_eq!(
        e.ints("SELECT c FROM t WHERE k IN (1, 2) AND c = 3"),
        vec![3, 3]
    );
    let rows = e.rows("SELECT count(*) FROM t WHERE k IN (1, 2)");
    assert_eq!(rows, vec![vec![Some(CqlValue::Bigint(20))]]);
    let err = e.err("SELECT c FROM t ORDER BY c DESC");
    assert!(
        err.to_string().contains("ORDER BY is only supported"),
        "{err}"
    );
}

#[test]
fn multi_column_clustering_prefixes() {
    let e = env();
    e.ok("CREATE TABLE t (k int, a int, b text, v int, PRIMARY KEY (k, a, b)) WITH CLUSTERING ORDER BY (a ASC, b DESC)");
    for a in 0..3 {
        for b in ["x", "y", "z"] {
            e.ok(&format!(
                "INSERT INTO t (k, a, b, v) VALUES (0, {a}, '{b}', {a})"
            ));
        }
    }
    let rows = e.rows("SELECT a, b FROM t WHERE k = 0 AND a = 1");
    assert_eq!(
        rows,
        vec![
            vec![int(1), text("z")],
            vec![int(1), text("y")],
            vec![int(1), text("x")]
        ]
    );
    let rows = e.rows("SELECT b FROM t WHERE k = 0 AND a = 2 AND b < 'z'");
    assert_eq!(rows, vec![vec![text("y")], vec![text("x")]]);
    let err = e.err("SELECT * FROM t WHERE k = 0 AND b = 'x'");
    assert!(
        err.to_string()
            .contains("preceding column \"a\" is not restricted"),
        "{err}"
    );
    // With ALLOW FILTERING (or an index on b) the restriction filters rows,
    // as in Cassandra; with the partition key or without.
    let filtered = "SELECT a FROM t WHERE k = 0 AND b = 'x' ALLOW FILTERING";
    assert_eq!(e.ints(filtered), vec![0, 1, 2]);
    assert_eq!(
        e.ints("SELECT a FROM t WHERE a > 0 AND b = 'y' ALLOW FILTERING"),
        vec![1, 2]
    );
    e.ok("CREATE INDEX ON t (b)");
    assert_eq!(e.ints("SELECT a FROM t WHERE b = 'z'"), vec![0, 1, 2]);
    assert_eq!(
        e.ints("SELECT a FROM t WHERE k = 0 AND b = 'z'"),
        vec![0, 1, 2]
    );
    e.ok("DELETE FROM t WHERE k = 0 AND a = 1");
    assert_eq!(
        e.rows("SELECT count(*) FROM t WHERE k = 0"),
        vec![vec![Some(CqlValue::Bigint(6))]]
    );
    e.ok("DELETE FROM t WHERE k = 0 AND a = 2 AND b >= 'y'");
    assert_eq!(
        e.rows("SELECT b FROM t WHERE k = 0 AND a = 2"),
        vec![vec![text("x")]]
    );
}

#[test]
fn deletes_at_every_level() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, v text, w text, s text static, PRIMARY KEY (k, c))");
    for k in 0..3 {
        for c in 0..10 {
            e.ok(&format!(
                "INSERT INTO t (k, c, v, w) VALUES ({k}, {c}, 'v', 'w')"
            ));
        }
    }
    // Column: the row stays (row marker), the cell is gone.
    e.ok("DELETE v FROM t WHERE k = 0 AND c = 1");
    assert_eq!(
        e.rows("SELECT v, w FROM t WHERE k = 0 AND c = 1"),
        vec![vec![None, text("w")]]
    );
    // Null writes a tombstone.
    e.ok("INSERT INTO t (k, c, w) VALUES (0, 1, null)");
    assert_eq!(
        e.rows("SELECT c, v, w FROM t WHERE k = 0 AND c = 1"),
        vec![vec![int(1), None, None]]
    );
    // Row.
    e.ok("DELETE FROM t WHERE k = 0 AND c = 2");
    assert!(e.rows("SELECT * FROM t WHERE k = 0 AND c = 2").is_empty());
    // Clustering range.
    e.ok("DELETE FROM t WHERE k = 0 AND c > 5");
    assert_eq!(e.ints("SELECT c FROM t WHERE k = 0"), vec![0, 1, 3, 4, 5]);
    e.ok("DELETE FROM t WHERE k = 0 AND c >= 0 AND c < 1");
    assert_eq!(e.ints("SELECT c FROM t WHERE k = 0"), vec![1, 3, 4, 5]);
    // Whole partition.
    e.ok("DELETE FROM t WHERE k = 1");
    assert!(e.rows("SELECT * FROM t WHERE k = 1").is_empty());
    assert_eq!(
        e.rows("SELECT count(*) FROM t"),
        vec![vec![Some(CqlValue::Bigint(14))]]
    );
    // A row made by UPDATE has no marker: it goes when its cells do.
    e.ok("UPDATE t SET v = 'u' WHERE k = 5 AND c = 0");
    assert_eq!(e.rows("SELECT v FROM t WHERE k = 5"), vec![vec![text("u")]]);
    e.ok("DELETE v FROM t WHERE k = 5 AND c = 0");
    assert!(e.rows("SELECT * FROM t WHERE k = 5").is_empty());
    // Static columns: one per partition; a static-only partition shows one row.
    e.ok("UPDATE t SET s = 'static' WHERE k = 2");
    assert_eq!(
        e.rows("SELECT s FROM t WHERE k = 2 AND c = 3"),
        vec![vec![text("static")]]
    );
    e.ok("INSERT INTO t (k, s) VALUES (7, 'alone')");
    assert_eq!(
        e.rows("SELECT k, c, s FROM t WHERE k = 7"),
        vec![vec![int(7), None, text("alone")]]
    );
    assert!(e
        .rows("SELECT k, c, s FROM t WHERE k = 7 AND c = 1")
        .is_empty());
    e.ok("DELETE s FROM t WHERE k = 7");
    assert!(e.rows("SELECT * FROM t WHERE k = 7").is_empty());
    // A later write wins over an earlier delete; an older one does not.
    e.ok("DELETE FROM t USING TIMESTAMP 100 WHERE k = 8");
    e.ok("INSERT INTO t (k, c, v) VALUES (8, 0, 'old') USING TIMESTAMP 50");
    assert!(e.rows("SELECT * FROM t WHERE k = 8").is_empty());
    e.ok("INSERT INTO t (k, c, v) VALUES (8, 0, 'new') USING TIMESTAMP 150");
    assert_eq!(
        e.rows("SELECT v FROM t WHERE k = 8"),
        vec![vec![text("new")]]
    );
    // TRUNCATE empties the table.
    e.ok("TRUNCATE t");
    assert_eq!(
        e.rows("SELECT count(*) FROM t"),
        vec![vec![Some(CqlValue::Bigint(0))]]
    );
}

#[test]
fn ttl_and_writetime_follow_the_clock() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, v text, w text)");
    e.ok("INSERT INTO t (k, v) VALUES (1, 'short') USING TTL 10 AND TIMESTAMP 1234");
    e.ok("UPDATE t USING TTL 100 SET w = 'long' WHERE k = 1");
    assert_eq!(
        e.rows("SELECT ttl(v), writetime(v), ttl(w) FROM t WHERE k = 1"),
        vec![vec![int(10), Some(CqlValue::Bigint(1234)), int(100)]]
    );
    e.clock.advance(4);
    assert_eq!(
        e.rows("SELECT ttl(v) FROM t WHERE k = 1"),
        vec![vec![int(6)]]
    );
    e.clock.advance(6);
    // The row marker expired with v; w keeps the row alive.
    assert_eq!(
        e.rows("SELECT v, w FROM t WHERE k = 1"),
        vec![vec![None, text("long")]]
    );
    e.clock.advance(100);
    assert!(e.rows("SELECT * FROM t WHERE k = 1").is_empty());
    // Table default TTL.
    e.ok("CREATE TABLE d (k int PRIMARY KEY, v text) WITH default_time_to_live = 5");
    e.ok("INSERT INTO d (k, v) VALUES (1, 'x')");
    assert_eq!(
        e.rows("SELECT ttl(v) FROM d WHERE k = 1"),
        vec![vec![int(5)]]
    );
    e.clock.advance(5);
    assert!(e.rows("SELECT * FROM d").is_empty());
    let err = e.err("INSERT INTO t (k, v) VALUES (1, 'x') USING TTL -1");
    assert_eq!(err.code(), 0x2200);
}

#[test]
fn paged_scan_returns_every_row_once() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, v int, PRIMARY KEY (k, c))");
    // 250 partitions of 4 rows: pages cut inside partitions too.
    for k in 0..250 {
        for c in 0..4 {
            e.ok(&format!(
                "INSERT INTO t (k, c, v) VALUES ({k}, {c}, {})",
                k * 4 + c
            ));
        }
    }
    let mut seen = BTreeSet::new();
    let mut state = None;
    let mut pages = 0;
    loop {
        let p = QueryParams {
            page_size: Some(100),
            paging_state: state.take(),
            ..params()
        };
        let (rows, next) = e.rows_with("SELECT v FROM t", &p);
        assert!(rows.len() <= 100);
        for r in rows {
            let Some(CqlValue::Int(v)) = r[0] else {
                panic!("{r:?}")
            };
            assert!(seen.insert(v), "row {v} returned twice");
        }
        pages += 1;
        assert!(pages <= 12, "too many pages");
        match next {
            Some(s) => state = Some(s),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1000);
    assert!(pages >= 10);
    // Unpaged, limited, counted.
    assert_eq!(e.rows("SELECT v FROM t").len(), 1000);
    assert_eq!(e.rows("SELECT v FROM t LIMIT 150").len(), 150);
    assert_eq!(
        e.rows("SELECT count(*) FROM t"),
        vec![vec![Some(CqlValue::Bigint(1000))]]
    );
    assert_eq!(e.rows("SELECT v FROM t PER PARTITION LIMIT 1").len(), 250);
    // LIMIT across pages.
    let p = QueryParams {
        page_size: Some(100),
        ..params()
    };
    let (rows, next) = e.rows_with("SELECT v FROM t LIMIT 150", &p);
    assert_eq!(rows.len(), 100);
    let p = QueryParams {
        page_size: Some(100),
        paging_state: next,
        ..params()
    };
    let (rows, next) = e.rows_with("SELECT v FROM t LIMIT 150", &p);
    assert_eq!(rows.len(), 50);
    assert!(next.is_none());
    // Token ranges split the scan.
    let p = QueryParams {
        values: vec![val(0i64.to_be_bytes().to_vec())],
        ..params()
    };
    let low = e
        .rows_with("SELECT v FROM t WHERE token(k) <= ?", &p)
        .0
        .len();
    let high = e
        .rows_with("SELECT v FROM t WHERE token(k) > ?", &p)
        .0
        .len();
    assert_eq!(low + high, 1000);
    assert!(low > 0 && high > 0);
    // Filtering on a regular column during a scan.
    assert_eq!(
        e.ints("SELECT v FROM t WHERE v = 17 ALLOW FILTERING"),
        vec![17]
    );
    // Data flushed to SSTables reads the same.
    e.engine.flush(None).unwrap();
    assert_eq!(
        e.rows("SELECT count(*) FROM t"),
        vec![vec![Some(CqlValue::Bigint(1000))]]
    );
    let err = e.qp.run(
        "SELECT v FROM t",
        &QueryParams {
            paging_state: Some(Bytes::from_static(b"junk")),
            page_size: Some(10),
            ..params()
        },
    );
    assert_eq!(err.unwrap_err().code(), 0x2200);
}

#[test]
fn errors_map_to_cql_codes() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, v text, PRIMARY KEY (k, c))");
    let err = e.err("SELECT * FORM t");
    assert_eq!(err.code(), 0x2000);
    assert_eq!(
        err.to_string(),
        "line 1:10 mismatched input 'FORM' expecting FROM"
    );
    let err = e.err("SELECT * FROM nope WHERE k = 1");
    assert_eq!(
        (err.code(), err.to_string()),
        (0x2200, "unconfigured table nope".to_owned())
    );
    let err = e.err("INSERT INTO t (k, c, v) VALUES ('text', 1, 'x')");
    assert_eq!(err.code(), 0x2200, "{err}");
    let err = e.err("INSERT INTO t (k, c, v) VALUES (1, 1, 42)");
    assert_eq!(err.code(), 0x2200, "{err}");
    let err = e.err("INSERT INTO t (k, v) VALUES (1, 'x')");
    assert!(
        err.to_string()
            .contains("clustering key parts are missing: c"),
        "{err}"
    );
    let err = e.err("INSERT INTO t (k, c, nope) VALUES (1, 1, 'x')");
    assert_eq!(err.to_string(), "Undefined column name nope");
    let err = e.err("SELECT * FROM t WHERE v = 'x'");
    assert_eq!(
        err.to_string(),
        "Cannot execute this query as it might involve data filtering and thus may have unpredictable performance. If you want to execute this query despite the performance unpredictability, use ALLOW FILTERING"
    );
    let err = e.err("SELECT * FROM t WHERE c = 1");
    assert!(err.to_string().contains("ALLOW FILTERING"));
    let err = e.err("CREATE TABLE t (k int PRIMARY KEY)");
    assert_eq!(err.code(), 0x2400, "{err}");
    let err = e.err("UPDATE t SET v = 'x' WHERE k = 1");
    assert!(
        err.to_string().contains("clustering keys are missing"),
        "{err}"
    );
    let err = e.err("DELETE FROM t WHERE c = 1");
    assert!(
        err.to_string()
            .contains("partition key parts are missing: k"),
        "{err}"
    );
    let err =
        e.qp.run("SELECT * FROM t WHERE k = 1", &QueryParams::default())
            .unwrap_err();
    assert!(
        err.to_string().contains("No keyspace has been specified"),
        "{err}"
    );
    let err = e.err("USE nope");
    assert_eq!(err.code(), 0x2200);
}

#[test]
fn ddl_is_persisted_and_use_switches_keyspace() {
    let e = env();
    assert_eq!(
        e.qp.run("USE ks", &QueryParams::default()).unwrap(),
        QueryResult::SetKeyspace("ks".into())
    );
    e.ok("CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY, v int)");
    assert_eq!(
        e.ok("CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY, v int)"),
        QueryResult::Void
    );
    e.ok("INSERT INTO t (k, v) VALUES (1, 1)");
    e.ok("ALTER TABLE t ADD w text");
    e.ok("INSERT INTO t (k, w) VALUES (1, 'added')");
    assert_eq!(
        e.rows("SELECT v, w FROM t WHERE k = 1"),
        vec![vec![int(1), text("added")]]
    );
    let stored = SchemaStore::open(e.engine.clone()).unwrap().load().unwrap();
    assert!(stored.table("ks", "t").unwrap().column("w").is_some());
    // Dropping and re-creating gives an empty table.
    e.ok("DROP TABLE t");
    e.ok("CREATE TABLE t (k int PRIMARY KEY, v int)");
    assert!(e.rows("SELECT * FROM t").is_empty());
    e.ok("BEGIN BATCH INSERT INTO t (k, v) VALUES (1, 1); INSERT INTO t (k, v) VALUES (2, 2); APPLY BATCH");
    assert_eq!(
        e.rows("SELECT count(*) FROM t"),
        vec![vec![Some(CqlValue::Bigint(2))]]
    );
    e.ok("DROP KEYSPACE ks");
    assert_eq!(e.err("SELECT * FROM t").code(), 0x2200);
}

fn set_of(items: &[&str]) -> Option<CqlValue> {
    Some(CqlValue::Set(
        items.iter().map(|s| CqlValue::Text((*s).into())).collect(),
    ))
}

#[test]
fn non_frozen_collections_by_element() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, s set<text>, m map<int, text>, l list<int>, fs frozen<set<int>>)");
    e.ok("INSERT INTO t (k, s, m, l, fs) VALUES (1, {'b', 'a'}, {2: 'two', -1: 'minus'}, [3, 1], {5, -5})");
    let r = e.rows("SELECT s, m, l, fs FROM t WHERE k = 1");
    assert_eq!(r[0][0], set_of(&["a", "b"]));
    assert_eq!(
        r[0][1],
        Some(CqlValue::Map(vec![
            (CqlValue::Int(-1), CqlValue::Text("minus".into())),
            (CqlValue::Int(2), CqlValue::Text("two".into())),
        ]))
    );
    assert_eq!(
        r[0][2],
        Some(CqlValue::List(vec![CqlValue::Int(3), CqlValue::Int(1)]))
    );
    assert_eq!(
        r[0][3],
        Some(CqlValue::Set(vec![CqlValue::Int(-5), CqlValue::Int(5)]))
    );

    e.ok("UPDATE t SET s = s + {'c'}, l = l + [9], m[7] = 'seven' WHERE k = 1");
    e.ok("UPDATE t SET s = s - {'a'}, m = m - {-1} WHERE k = 1");
    e.ok("DELETE m[2] FROM t WHERE k = 1");
    let r = e.rows("SELECT s, m, l FROM t WHERE k = 1");
    assert_eq!(r[0][0], set_of(&["b", "c"]));
    assert_eq!(
        r[0][1],
        Some(CqlValue::Map(vec![(
            CqlValue::Int(7),
            CqlValue::Text("seven".into())
        )]))
    );
    assert_eq!(
        r[0][2],
        Some(CqlValue::List(vec![
            CqlValue::Int(3),
            CqlValue::Int(1),
            CqlValue::Int(9)
        ]))
    );
    // Overwriting replaces every element; deleting the column empties it (null).
    e.ok("UPDATE t SET s = {'z'} WHERE k = 1");
    e.ok("INSERT INTO t (k, l) VALUES (1, [4])");
    e.ok("DELETE m FROM t WHERE k = 1");
    let r = e.rows("SELECT s, m, l FROM t WHERE k = 1");
    assert_eq!(
        r,
        vec![vec![
            set_of(&["z"]),
            None,
            Some(CqlValue::List(vec![CqlValue::Int(4)]))
        ]]
    );
    e.ok("UPDATE t SET s = null WHERE k = 1");
    assert_eq!(e.rows("SELECT s FROM t WHERE k = 1"), vec![vec![None]]);
    // Cassandra 5.0: writetime of a non-frozen collection is a list (null here: no elements).
    assert_eq!(
        e.rows("SELECT writetime(s) FROM t WHERE k = 1"),
        vec![vec![None]]
    );
}

#[test]
fn data_and_schema_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let mut cfg = LsmConfig::in_dir(dir.path());
        cfg.sync = SyncMode::Batch;
        let engine = Arc::new(LsmEngine::open(cfg).unwrap());
        let store = SchemaStore::open(engine.clone()).unwrap();
        let schema = store.load().unwrap();
        let qp = QueryProcessor::new(
            schema,
            Some(store),
            Arc::new(LocalData::new(engine.clone())),
            Arc::new(ManualClock::new(1_700_000_000)),
        );
        qp.ensure_tables().unwrap();
        (qp, engine)
    };
    {
        let (qp, engine) = open();
        let p = QueryParams::default();
        qp.run("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}", &p).unwrap();
        qp.run("CREATE TABLE ks.t (k text PRIMARY KEY, v int)", &p)
            .unwrap();
        qp.run("INSERT INTO ks.t (k, v) VALUES ('a', 1)", &p)
            .unwrap();
        engine.close().unwrap();
    }
    let (qp, _engine) = open();
    match qp
        .run("SELECT k, v FROM ks.t", &QueryParams::default())
        .unwrap()
    {
        QueryResult::Rows { rows, .. } => assert_eq!(
            rows,
            vec![vec![
                Some(Bytes::from("a")),
                Some(Bytes::from(1i32.to_be_bytes().to_vec()))
            ]]
        ),
        other => panic!("{other:?}"),
    }
}

/// Every page of a query, concatenated.
fn all_pages(e: &Env, cql: &str, page: usize) -> (TypedRows, usize) {
    let mut out = Vec::new();
    let mut state = None;
    let mut pages = 0;
    loop {
        let p = QueryParams {
            page_size: Some(page),
            paging_state: state.take(),
            ..params()
        };
        let (rows, next) = e.rows_with(cql, &p);
        assert!(rows.len() <= page, "{cql}: page of {}", rows.len());
        out.extend(rows);
        pages += 1;
        assert!(pages < 1000, "{cql}: endless paging");
        match next {
            Some(s) => state = Some(s),
            None => return (out, pages),
        }
    }
}

#[test]
fn paged_partition_reads_match_unpaged() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, v int, s int static, PRIMARY KEY (k, c))");
    for k in 0..3 {
        for c in 0..95 {
            e.ok(&format!("INSERT INTO t (k, c, v) VALUES ({k}, {c}, {c})"));
        }
    }
    e.ok("UPDATE t SET s = 1 WHERE k = 9");
    for q in [
        "SELECT k, c, v FROM t WHERE k = 1",
        "SELECT k, c, v FROM t WHERE k = 1 ORDER BY c DESC",
        "SELECT k, c, s FROM t WHERE k IN (0, 9, 2)",
        "SELECT k, c FROM t WHERE k IN (0, 2) AND c > 10 AND c <= 80 ORDER BY c DESC",
        "SELECT c FROM t WHERE k IN (0, 1) AND c IN (3, 50, 90)",
        "SELECT c FROM t WHERE k IN (0, 1, 2) LIMIT 200",
        "SELECT c FROM t WHERE k = 2 AND v IN (5, 6, 70) ALLOW FILTERING",
        "SELECT c FROM t WHERE k = 2 AND v > 5 AND v <= 50 ALLOW FILTERING",
    ] {
        let whole = e.rows(q);
        assert!(!whole.is_empty(), "{q}");
        for page in [1, 7, 30, 95, 1000] {
            let (paged, pages) = all_pages(&e, q, page);
            assert_eq!(paged, whole, "{q} with pages of {page}");
            assert!(pages >= whole.len() / page, "{q}");
        }
    }
    assert_eq!(
        e.rows("SELECT c FROM t WHERE k IN (0, 1, 2) LIMIT 200")
            .len(),
        200
    );
}

#[test]
fn filtering_compares_in_type_order() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, v int, s text)");
    for k in -5..5 {
        e.ok(&format!(
            "INSERT INTO t (k, v, s) VALUES ({k}, {k}, 'x{k}')"
        ));
    }
    let mut got = e.ints("SELECT v FROM t WHERE v >= -2 AND v < 2 ALLOW FILTERING");
    got.sort();
    assert_eq!(got, vec![-2, -1, 0, 1]);
    let err = e.err("SELECT v FROM t WHERE v > 0");
    assert!(err.to_string().contains("ALLOW FILTERING"), "{err}");
    assert_eq!(
        e.ints("SELECT k FROM t WHERE s = 'x3' ALLOW FILTERING"),
        vec![3]
    );
    let mut got = e.ints("SELECT k FROM t WHERE k IN (1, 2) ALLOW FILTERING");
    got.sort();
    assert_eq!(got, vec![1, 2]);
}

#[test]
fn prepare_types_bind_markers_and_results() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c text, v bigint, m map<text, int>, PRIMARY KEY (k, c))");
    let prep = |cql: &str| {
        e.qp.prepare(&gyre_cql::parse(cql).unwrap(), Some("ks"))
            .unwrap()
    };
    let info = prep("INSERT INTO t (k, c, v) VALUES (?, ?, :vee) USING TTL ?");
    assert_eq!(info.table, Some(("ks".into(), "t".into())));
    assert_eq!(
        info.bind_columns,
        vec![
            ("k".into(), ColumnType::Int),
            ("c".into(), ColumnType::Varchar),
            ("vee".into(), ColumnType::Bigint),
            ("[ttl]".into(), ColumnType::Int),
        ]
    );
    let info = prep("SELECT c, writetime(v) FROM t WHERE k IN ? AND c > ? LIMIT ?");
    assert_eq!(
        info.bind_columns,
        vec![
            ("k".into(), ColumnType::List(Box::new(ColumnType::Int))),
            ("c".into(), ColumnType::Varchar),
            ("[limit]".into(), ColumnType::Int),
        ]
    );
    assert_eq!(
        info.result_columns,
        vec![
            ("c".into(), ColumnType::Varchar),
            ("writetime(v)".into(), ColumnType::Bigint)
        ]
    );
    let info = prep("UPDATE t SET m[?] = ?, v = ? WHERE k = ? AND c = ?");
    let types: Vec<_> = info.bind_columns.into_iter().map(|c| c.1).collect();
    assert_eq!(
        types,
        vec![
            ColumnType::Varchar,
            ColumnType::Int,
            ColumnType::Bigint,
            ColumnType::Int,
            ColumnType::Varchar
        ]
    );
    let err =
        e.qp.prepare(&gyre_cql::parse("SELECT * FROM nope").unwrap(), Some("ks"))
            .unwrap_err();
    assert_eq!(err.code(), 0x2200);
}

#[test]
fn describe_renders_schema() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, v text)");
    let rows = e.rows("DESCRIBE TABLE t");
    assert_eq!(rows.len(), 1);
    let Some(CqlValue::Text(cql)) = &rows[0][3] else {
        panic!("{rows:?}")
    };
    assert!(cql.starts_with("CREATE TABLE ks.t ("), "{cql}");
    let rows = e.rows("DESCRIBE KEYSPACE ks");
    assert_eq!(rows.len(), 2);
    assert_eq!(e.rows("DESCRIBE TABLES").len(), 1);
}

#[test]
fn select_distinct_partition_keys() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, s int static, PRIMARY KEY (k, c))");
    for k in 0..20 {
        for c in 0..3 {
            e.ok(&format!("INSERT INTO t (k, c, s) VALUES ({k}, {c}, {k})"));
        }
    }
    let mut ks = e.ints("SELECT DISTINCT k FROM t");
    ks.sort();
    assert_eq!(ks, (0..20).collect::<Vec<_>>());
    let (paged, _) = all_pages(&e, "SELECT DISTINCT k, s FROM t", 7);
    assert_eq!(paged.len(), 20);
    assert_eq!(
        e.rows("SELECT DISTINCT s FROM t WHERE k = 3"),
        vec![vec![int(3)]]
    );
    assert_eq!(e.err("SELECT DISTINCT c FROM t").code(), 0x2200);
}

#[test]
fn dropped_columns_stay_dropped() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, v text, w text)");
    e.ok("INSERT INTO t (k, v, w) VALUES (1, 'old', 'w')");
    e.ok("UPDATE t SET v = 'only v' WHERE k = 2");
    e.ok("ALTER TABLE t DROP v");
    e.ok("ALTER TABLE t ADD v text");
    assert_eq!(
        e.rows("SELECT k, v, w FROM t WHERE k = 1"),
        vec![vec![int(1), None, text("w")]]
    );
    // A row that only had cells of the dropped column is gone.
    assert!(e.rows("SELECT * FROM t WHERE k = 2").is_empty());
    e.ok("UPDATE t SET v = 'new' WHERE k = 2");
    assert_eq!(
        e.rows("SELECT v FROM t WHERE k = 2"),
        vec![vec![text("new")]]
    );
}

fn with_values(values: Vec<Value>) -> QueryParams {
    QueryParams { values, ..params() }
}

fn i32v(i: i32) -> Value {
    val(i.to_be_bytes().to_vec())
}

#[test]
fn unset_values_leave_columns_alone() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, a text, b text, m map<text, int>)");
    e.ok("INSERT INTO t (k, a, b, m) VALUES (1, 'a', 'b', {'x': 1})");
    let run = |cql: &str, values: Vec<Value>| e.qp.run(cql, &with_values(values));
    // INSERT: the unset column keeps its value, the others are written.
    run(
        "INSERT INTO t (k, a, b) VALUES (?, ?, ?)",
        vec![i32v(1), Value::Unset, val("B")],
    )
    .unwrap();
    let all = "SELECT a, b, m FROM t WHERE k = 1";
    let map_x = Some(CqlValue::Map(vec![(
        CqlValue::Text("x".into()),
        CqlValue::Int(1),
    )]));
    assert_eq!(e.rows(all), vec![vec![text("a"), text("B"), map_x.clone()]]);
    // UPDATE: unset assignments, additions and element puts are no-ops.
    run(
        "UPDATE t SET a = ?, m = m + ?, m['y'] = ?, b = ? WHERE k = ?",
        vec![Value::Unset, Value::Unset, Value::Unset, val("C"), i32v(1)],
    )
    .unwrap();
    assert_eq!(e.rows(all), vec![vec![text("a"), text("C"), map_x.clone()]]);
    // Whole-collection replacement with unset leaves the collection too.
    run("UPDATE t SET m = ? WHERE k = 1", vec![Value::Unset]).unwrap();
    assert_eq!(e.rows(all), vec![vec![text("a"), text("C"), map_x]]);
    // Null still deletes.
    run("UPDATE t SET a = ? WHERE k = 1", vec![Value::Null]).unwrap();
    assert_eq!(e.rows("SELECT a FROM t WHERE k = 1"), vec![vec![None]]);
    // A row inserted with only unset values exists (row marker).
    run("INSERT INTO t (k, a) VALUES (2, ?)", vec![Value::Unset]).unwrap();
    assert_eq!(
        e.rows("SELECT k, a FROM t WHERE k = 2"),
        vec![vec![int(2), None]]
    );
    // Unset TTL and timestamp mean the defaults; unset LIMIT means none.
    run(
        "INSERT INTO t (k, b) VALUES (3, 'x') USING TTL ? AND TIMESTAMP ?",
        vec![Value::Unset, Value::Unset],
    )
    .unwrap();
    assert_eq!(e.rows("SELECT ttl(b) FROM t WHERE k = 3"), vec![vec![None]]);
    let (rows, _) = e.rows_with("SELECT k FROM t LIMIT ?", &with_values(vec![Value::Unset]));
    assert_eq!(rows.len(), 3);
    // Unset in a key, a WHERE clause or a map key is an error.
    for (cql, values) in [
        ("INSERT INTO t (k, a) VALUES (?, 'z')", vec![Value::Unset]),
        ("SELECT * FROM t WHERE k = ?", vec![Value::Unset]),
        ("SELECT * FROM t WHERE k IN ?", vec![Value::Unset]),
        ("UPDATE t SET a = 'z' WHERE k = ?", vec![Value::Unset]),
        ("DELETE FROM t WHERE k = ?", vec![Value::Unset]),
        ("UPDATE t SET m[?] = 1 WHERE k = 1", vec![Value::Unset]),
    ] {
        let err = run(cql, values).unwrap_err();
        assert_eq!(err.code(), 0x2200, "{cql}: {err}");
        assert!(err.to_string().contains("unset value"), "{cql}: {err}");
    }
    assert_eq!(
        e.rows("SELECT k FROM t WHERE k = 1"),
        vec![vec![int(1)]],
        "nothing was deleted"
    );
}

fn one(rows: TypedRows) -> Vec<Option<CqlValue>> {
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.into_iter().next().unwrap()
}

#[test]
fn aggregates_fold_the_selected_rows() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, i int, b bigint, d double, f float, dec decimal, vi varint, s text, PRIMARY KEY (k, c))");
    for c in 1..=4 {
        e.ok(&format!(
            "INSERT INTO t (k, c, i, b, d, f, dec, vi, s) VALUES (1, {c}, {c}, {}, {c}.5, {c}.25, {c}.10, {}, 's{c}')",
            i64::from(c) * 1_000_000_000_000,
            i64::from(c) * 10
        ));
    }
    e.ok("INSERT INTO t (k, c) VALUES (1, 5)");
    let r = one(e.rows(
        "SELECT count(*), count(i), min(i), max(i), sum(i), avg(i), sum(b), avg(d), sum(f), sum(dec), avg(dec), sum(vi), min(s), max(s) FROM t WHERE k = 1",
    ));
    assert_eq!(
        r,
        vec![
            Some(CqlValue::Bigint(5)),
            Some(CqlValue::Bigint(4)),
            int(1),
            int(4),
            int(10),
            // avg of ints is an int (truncated), nulls skipped.
            int(2),
            Some(CqlValue::Bigint(10_000_000_000_000)),
            Some(CqlValue::Double(3.0)),
            Some(CqlValue::Float(11.0)),
            Some(CqlValue::Decimal(gyre_protocol::CqlDecimal {
                unscaled: gyre_protocol::CqlVarint::from_i128(1040),
                scale: 2
            })),
            Some(CqlValue::Decimal(gyre_protocol::CqlDecimal {
                unscaled: gyre_protocol::CqlVarint::from_i128(260),
                scale: 2
            })),
            Some(CqlValue::Varint(gyre_protocol::CqlVarint::from_i128(100))),
            text("s1"),
            text("s4"),
        ]
    );
    // Result column names and types as Cassandra gives them.
    let QueryResult::Rows { columns, .. } = e.ok("SELECT count(*), max(i), avg(d) FROM t") else {
        panic!()
    };
    assert_eq!(
        columns,
        vec![
            ("count".to_owned(), ColumnType::Bigint),
            ("system.max(i)".to_owned(), ColumnType::Int),
            ("system.avg(d)".to_owned(), ColumnType::Double),
        ]
    );
    // No rows: count 0, min null, sum 0; a plain column comes from the first row.
    assert_eq!(
        one(e.rows("SELECT count(i), min(i), sum(i), k FROM t WHERE k = 2")),
        vec![Some(CqlValue::Bigint(0)), None, int(0), None]
    );
    assert_eq!(
        one(e.rows("SELECT k, max(c) FROM t WHERE k = 1 AND c < 3")),
        vec![int(1), int(2)]
    );
    // Over a scan, with filtering, and with LIMIT.
    assert_eq!(
        one(e.rows("SELECT sum(i) FROM t WHERE i > 2 ALLOW FILTERING")),
        vec![int(7)]
    );
    assert_eq!(
        one(e.rows("SELECT count(*) FROM t LIMIT 2")),
        vec![Some(CqlValue::Bigint(2))]
    );
    // Errors.
    for cql in [
        "SELECT sum(s) FROM t",
        // GROUP BY only on primary key columns.
        "SELECT k FROM t GROUP BY i",
        "SELECT blobasint(max(i)) FROM t",
        "SELECT max(i, c) FROM t",
    ] {
        assert_eq!(e.err(cql).code(), 0x2200, "{cql}");
    }
}

#[test]
fn native_functions_as_terms_and_selectors() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, u timeuuid, id uuid, ts timestamp, d date, tm time, b blob, i int, s text)");
    e.ok("INSERT INTO t (k, u, id, ts, d, tm, b, i, s) VALUES (1, now(), uuid(), currentTimestamp(), currentDate(), currentTime(), intAsBlob(7), blobAsInt(0x00000009), blobAsText(textAsBlob('hi')))");
    let r = one(e.rows("SELECT u, id, ts, d, tm, b, i, s FROM t WHERE k = 1"));
    let Some(CqlValue::Timeuuid(u)) = &r[0] else {
        panic!("{r:?}")
    };
    assert_eq!(u.get_version_num(), 1);
    assert!(matches!(&r[1], Some(CqlValue::Uuid(id)) if id.get_version_num() == 4));
    let Some(CqlValue::Timestamp(ts)) = r[2] else {
        panic!("{r:?}")
    };
    assert!(ts > 1_600_000_000_000);
    let Some(CqlValue::Date(d)) = r[3] else {
        panic!("{r:?}")
    };
    assert_eq!(
        i64::from(gyre_protocol::date_to_days(d)),
        ts.div_euclid(86_400_000)
    );
    assert!(matches!(r[4], Some(CqlValue::Time(_))));
    assert_eq!(r[5], Some(CqlValue::Blob(Bytes::from(vec![0, 0, 0, 7]))));
    assert_eq!(r[6], int(9));
    assert_eq!(r[7], text("hi"));
    // Conversions as selectors; the timeuuid's time is the insert's.
    let r = one(e.rows(
        "SELECT toTimestamp(u), toUnixTimestamp(u), toDate(ts), blobAsInt(b), intAsBlob(i), token(k), system.tounixtimestamp(d) FROM t WHERE k = 1",
    ));
    let Some(CqlValue::Timestamp(from_u)) = r[0] else {
        panic!("{r:?}")
    };
    assert!((from_u - ts).abs() < 5_000, "{from_u} vs {ts}");
    assert_eq!(r[1], Some(CqlValue::Bigint(from_u)));
    assert_eq!(r[2], Some(CqlValue::Date(d)));
    assert_eq!(r[3], int(7));
    assert_eq!(r[4], Some(CqlValue::Blob(Bytes::from(vec![0, 0, 0, 9]))));
    assert_eq!(
        r[5],
        Some(CqlValue::Bigint(gyre_common::token_of(&1i32.to_be_bytes())))
    );
    let Some(CqlValue::Bigint(d_ms)) = r[6] else {
        panic!("{r:?}")
    };
    assert_eq!(d_ms, i64::from(gyre_protocol::date_to_days(d)) * 86_400_000);
    // Functions in WHERE and in UPDATE.
    e.ok("UPDATE t SET ts = toTimestamp(toDate('2011-02-03')) WHERE k = blobAsInt(0x00000001)");
    assert_eq!(
        e.rows("SELECT ts FROM t WHERE k = 1"),
        vec![vec![Some(CqlValue::Timestamp(1_296_691_200_000))]]
    );
    assert_eq!(
        e.rows("SELECT ts FROM t WHERE k = 1 AND u > minTimeuuid('2000-01-01') ALLOW FILTERING")
            .len(),
        1
    );
    assert_eq!(
        e.rows("SELECT ts FROM t WHERE k = 1 AND u < maxTimeuuid('2000-01-01') ALLOW FILTERING")
            .len(),
        0
    );
    // A bound blob argument is typed by the function at PREPARE.
    let parsed = gyre_cql::parse("UPDATE t SET i = blobAsInt(?) WHERE k = ?").unwrap();
    let info = e.qp.prepare(&parsed, Some("ks")).unwrap();
    assert_eq!(info.bind_columns[0].1, ColumnType::Blob);
    e.qp.run(
        "UPDATE t SET i = blobAsInt(?) WHERE k = ?",
        &with_values(vec![val(vec![0, 0, 0, 42]), i32v(1)]),
    )
    .unwrap();
    assert_eq!(e.ints("SELECT i FROM t WHERE k = 1"), vec![42]);
    // ... and in a selection.
    let parsed = gyre_cql::parse("SELECT blobAsInt(?), i FROM t WHERE k = ?").unwrap();
    let info = e.qp.prepare(&parsed, Some("ks")).unwrap();
    assert_eq!(info.bind_columns[0].1, ColumnType::Blob);
    let (rows, _) = e.rows_with(
        "SELECT blobAsInt(?), i FROM t WHERE k = ?",
        &with_values(vec![val(vec![0, 0, 0, 5]), i32v(1)]),
    );
    assert_eq!(rows, vec![vec![int(5), int(42)]]);
    // Type errors, bad blobs, ambiguity, unknown functions.
    for cql in [
        "INSERT INTO t (k, i) VALUES (2, now())",
        "INSERT INTO t (k, i) VALUES (2, blobAsInt(0x0001))",
        "INSERT INTO t (k, i) VALUES (2, nosuch(1))",
        "INSERT INTO t (k, i) VALUES (2, ks.myfn(1))",
        "SELECT max(i) FROM t WHERE k = max(1)",
        "SELECT token(i) FROM t",
        "SELECT blobAsInt(s) FROM t",
    ] {
        let err = e.err(cql);
        assert_eq!(err.code(), 0x2200, "{cql}: {err}");
    }
    // A bound argument of an overloaded function is ambiguous; a type hint
    // or a literal's form resolves it.
    let err =
        e.qp.run(
            "INSERT INTO t (k, ts) VALUES (2, toTimestamp(?))",
            &with_values(vec![val(vec![0x80, 0, 0, 0])]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("Ambiguous"), "{err}");
    e.ok("INSERT INTO t (k, ts) VALUES (2, toTimestamp((date)'2011-02-03'))");
    e.ok("INSERT INTO t (k, ts) VALUES (3, toTimestamp('2011-02-03'))");
    assert_eq!(
        e.rows("SELECT ts FROM t WHERE k IN (2, 3)"),
        vec![vec![Some(CqlValue::Timestamp(1_296_691_200_000))]; 2]
    );
}

#[test]
fn select_json_formats_values_like_cassandra() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, \"Caps\" text, ts timestamp, d date, tm time, u uuid, b blob, ip inet, l list<text>, m map<int, text>, s set<bigint>, tup frozen<tuple<int, text>>, dur duration, dec decimal, f float, flag boolean)");
    e.ok("INSERT INTO t (k, \"Caps\", ts, d, tm, u, b, ip, l, m, s, tup, dur, dec, f, flag) VALUES (1, 'a\"b', '2011-02-03 04:05:00.123Z', '2011-02-03', '01:02:03.5', 123e4567-e89b-12d3-a456-426655440000, 0xcafe, '127.0.0.1', ['x', 'y'], {1: 'one'}, {3, 2}, (1, 'z'), 1h30m, 1.50, 2.5, true)");
    e.ok("INSERT INTO t (k) VALUES (2)");
    let QueryResult::Rows { columns, rows, .. } = e.ok("SELECT JSON * FROM t WHERE k = 1") else {
        panic!()
    };
    assert_eq!(columns, vec![("[json]".to_owned(), ColumnType::Varchar)]);
    let json = String::from_utf8(rows[0][0].clone().unwrap().to_vec()).unwrap();
    assert_eq!(
        json,
        "{\"k\": 1, \"\\\"Caps\\\"\": \"a\\\"b\", \"b\": \"0xcafe\", \"d\": \"2011-02-03\", \"dec\": 1.50, \"dur\": \"1h30m\", \"f\": 2.5, \"flag\": true, \"ip\": \"127.0.0.1\", \"l\": [\"x\", \"y\"], \"m\": {\"1\": \"one\"}, \"s\": [2, 3], \"tm\": \"01:02:03.500000000\", \"ts\": \"2011-02-03 04:05:00.123Z\", \"tup\": [1, \"z\"], \"u\": \"123e4567-e89b-12d3-a456-426655440000\"}"
    );
    assert_eq!(
        e.rows("SELECT JSON k, ts AS t, count(*) FROM t WHERE k = 2"),
        vec![vec![text("{\"k\": 2, \"t\": null, \"count\": 1}")]]
    );
    // Selector names are not quoted; toJson() and fromJson().
    assert_eq!(
        e.rows("SELECT JSON ttl(f), \"Caps\" AS \"Alias\" FROM t WHERE k = 1"),
        vec![vec![text(
            "{\"ttl(f)\": null, \"\\\"Alias\\\"\": \"a\\\"b\"}"
        )]]
    );
    let QueryResult::Rows { columns, .. } = e.ok("SELECT toJson(m) FROM t WHERE k = 1") else {
        panic!()
    };
    assert_eq!(columns[0].0, "system.tojson(m)");
    assert_eq!(
        e.rows("SELECT toJson(m), toJson(ts), toJson(l) FROM t WHERE k = 1"),
        vec![vec![
            text("{\"1\": \"one\"}"),
            text("\"2011-02-03 04:05:00.123Z\""),
            text("[\"x\", \"y\"]")
        ]]
    );
    e.ok("INSERT INTO t (k, l, m) VALUES (fromJson('3'), fromJson('[\"a\"]'), fromJson('{\"7\": \"seven\"}'))");
    e.qp.run(
        "UPDATE t SET \"Caps\" = fromJson(?) WHERE k = 3",
        &with_values(vec![val("\"bound\"")]),
    )
    .unwrap();
    assert_eq!(
        e.rows("SELECT JSON l, m, \"Caps\" FROM t WHERE k = 3"),
        vec![vec![text(
            "{\"l\": [\"a\"], \"m\": {\"7\": \"seven\"}, \"\\\"Caps\\\"\": \"bound\"}"
        )]]
    );
    for bad in [
        "SELECT fromJson(l) FROM t",
        "INSERT INTO t (k, l) VALUES (4, fromJson('[1, 2]'))",
        "INSERT INTO t JSON 'null'",
    ] {
        assert_eq!(e.err(bad).code(), 0x2200, "{bad}");
    }
    // PREPARE sees the one JSON column.
    let parsed = gyre_cql::parse("SELECT JSON k FROM t").unwrap();
    let info = e.qp.prepare(&parsed, Some("ks")).unwrap();
    assert_eq!(
        info.result_columns,
        vec![("[json]".to_owned(), ColumnType::Varchar)]
    );
}

#[test]
fn insert_json_uses_column_types() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c text, \"Caps\" int, ts timestamp, u uuid, b blob, l list<int>, m map<int, text>, s set<text>, dec decimal, vi varint, dur duration, flag boolean, v text, PRIMARY KEY (k, c))");
    e.ok(r#"INSERT INTO t JSON '{"k": 1, "c": "x", "\"Caps\"": 5, "ts": "2011-02-03 04:05:00.123Z", "u": "123e4567-e89b-12d3-a456-426655440000", "b": "0xcafe", "l": [3, 1], "m": {"2": "two"}, "s": ["b", "a", "b"], "dec": 12345678901234567890.5, "vi": "98765432109876543210", "dur": "1h", "flag": "true", "v": "keep"}'"#);
    let json = e.rows("SELECT JSON * FROM t WHERE k = 1");
    assert_eq!(
        json,
        vec![vec![text(
            r#"{"k": 1, "c": "x", "\"Caps\"": 5, "b": "0xcafe", "dec": 12345678901234567890.5, "dur": "1h", "flag": true, "l": [3, 1], "m": {"2": "two"}, "s": ["a", "b"], "ts": "2011-02-03 04:05:00.123Z", "u": "123e4567-e89b-12d3-a456-426655440000", "v": "keep", "vi": 98765432109876543210}"#
        )]]
    );
    // Timestamps also as numbers; DEFAULT UNSET keeps what the JSON leaves out.
    e.ok(r#"INSERT INTO t JSON '{"k": 1, "c": "x", "ts": 0}' DEFAULT UNSET"#);
    assert_eq!(
        e.rows("SELECT ts, v, \"Caps\" FROM t WHERE k = 1 AND c = 'x'"),
        vec![vec![Some(CqlValue::Timestamp(0)), text("keep"), int(5)]]
    );
    // DEFAULT NULL (the default) nulls them, collections included.
    e.ok(r#"INSERT INTO t JSON '{"k": 1, "c": "x", "v": null}'"#);
    assert_eq!(
        e.rows("SELECT ts, v, l, m, s FROM t WHERE k = 1 AND c = 'x'"),
        vec![vec![None, None, None, None, None]]
    );
    // Bound JSON text, as a prepared statement sends it.
    let parsed = gyre_cql::parse("INSERT INTO t JSON ?").unwrap();
    let info = e.qp.prepare(&parsed, Some("ks")).unwrap();
    assert_eq!(
        info.bind_columns,
        vec![("[json]".to_owned(), ColumnType::Varchar)]
    );
    e.qp.run(
        "INSERT INTO t JSON ?",
        &with_values(vec![val(r#"{"k": 2, "c": "y", "v": "bound"}"#)]),
    )
    .unwrap();
    assert_eq!(
        e.rows("SELECT v FROM t WHERE k = 2"),
        vec![vec![text("bound")]]
    );
    for bad in [
        r#"INSERT INTO t JSON '{"k": 1, "c": "x", "nope": 1}'"#,
        r#"INSERT INTO t JSON '{"k": 1, "c": "x", "v": 5}'"#,
        r#"INSERT INTO t JSON '{"k": "one", "c": "x"}'"#,
        r#"INSERT INTO t JSON '{"k": 1}'"#,
        r#"INSERT INTO t JSON '{"k": 1, "c": "x", "b": "cafe"}'"#,
        r#"INSERT INTO t JSON '[1, 2]'"#,
        r#"INSERT INTO t JSON '{"k": 1,'"#,
    ] {
        let err = e.err(bad);
        assert_eq!(err.code(), 0x2200, "{bad}: {err}");
    }
}

#[test]
fn unsupported_features_are_rejected_clearly() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, v int)");
    for (cql, needle) in [
        (
            "CREATE INDEX ON t (k)",
            "Cannot create secondary index on the only partition key column k",
        ),
        (
            "CREATE CUSTOM INDEX i ON t (v) USING 'x'",
            "Unable to find custom indexer class 'x'",
        ),
        (
            "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t WHERE k IS NOT NULL PRIMARY KEY (k)",
            "not supported",
        ),
        ("DROP TYPE addr", "Type 'ks.addr' doesn't exist"),
        (
            "CREATE FUNCTION f (a int) RETURNS NULL ON NULL INPUT RETURNS int LANGUAGE java AS 'return a;'",
            "not supported",
        ),
        ("DROP INDEX i", "doesn't exist"),
    ] {
        let err = e.err(cql);
        assert_eq!(err.code(), 0x2200, "{cql}: {err}");
        assert!(err.to_string().contains(needle), "{cql}: {err}");
    }
    // Serial consistency is for conditional writes only.
    let p = QueryParams {
        consistency: gyre_protocol::Consistency::Serial,
        ..params()
    };
    let err =
        e.qp.run("INSERT INTO t (k, v) VALUES (1, 1)", &p)
            .unwrap_err();
    assert_eq!(err.code(), 0x2200, "{err}");
    assert!(err.to_string().contains("serializable"), "{err}");
    assert!(e.rows("SELECT * FROM t").is_empty());
}

/// Conditional statements on one engine (`LocalData::cas`): `[applied]`
/// and the current values as Cassandra's buildCasResultSet gives them.
#[test]
fn conditional_statements_on_one_engine() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, v int, s int static, PRIMARY KEY (k, c))");
    let applied = |cql: &str| -> TypedRows { e.rows(cql) };
    let t = Some(CqlValue::Boolean(true));
    let f = Some(CqlValue::Boolean(false));
    assert_eq!(
        applied("INSERT INTO t (k, c, v) VALUES (1, 1, 10) IF NOT EXISTS"),
        vec![vec![t.clone()]]
    );
    assert_eq!(
        applied("INSERT INTO t (k, c, v) VALUES (1, 1, 11) IF NOT EXISTS"),
        vec![vec![f.clone(), int(1), int(1), None, int(10)]]
    );
    assert_eq!(
        applied("UPDATE t SET v = 12 WHERE k = 1 AND c = 1 IF v IN (3, 10)"),
        vec![vec![t.clone()]]
    );
    assert_eq!(
        applied("UPDATE t SET v = 13 WHERE k = 1 AND c = 1 IF v < 12"),
        vec![vec![f.clone(), int(12)]]
    );
    assert_eq!(
        applied("DELETE FROM t WHERE k = 1 AND c = 2 IF EXISTS"),
        vec![vec![f.clone()]]
    );
    assert_eq!(
        applied("UPDATE t SET s = 5 WHERE k = 1 IF s = null"),
        vec![vec![t.clone()]]
    );
    assert_eq!(
        applied(
            "BEGIN BATCH UPDATE t SET v = 1 WHERE k = 1 AND c = 1 IF v = 99; \
             INSERT INTO t (k, c, v) VALUES (1, 3, 3); APPLY BATCH"
        ),
        vec![vec![f.clone(), int(1), int(1), int(12)]]
    );
    assert_eq!(
        e.ints("SELECT c FROM t WHERE k = 1"),
        vec![1],
        "batch half-applied"
    );
    assert_eq!(
        applied("DELETE FROM t WHERE k = 1 AND c = 1 IF v >= 12"),
        vec![vec![t]]
    );
    assert!(e.rows("SELECT v FROM t WHERE k = 1 AND c = 1").is_empty());
    for (cql, needle) in [
        (
            "UPDATE t SET v = 1 WHERE k = 1 AND c = 1 IF c = 1",
            "PRIMARY KEY column 'c' cannot have IF conditions",
        ),
        (
            "BEGIN BATCH UPDATE t SET v = 1 WHERE k = 1 AND c = 1 IF v = 1; \
             UPDATE t SET v = 1 WHERE k = 2 AND c = 1; APPLY BATCH",
            "Batch with conditions cannot span multiple partitions",
        ),
        (
            "UPDATE t USING TIMESTAMP 5 SET v = 1 WHERE k = 1 AND c = 1 IF v = 1",
            "Cannot provide custom timestamp for conditional updates",
        ),
        (
            "UPDATE t SET v = 1 WHERE k = 1 AND c IN (1, 2) IF v = 1",
            "IN on the clustering key columns is not supported with conditional updates",
        ),
        (
            "UPDATE t SET v = 1 WHERE k = 1 AND c = 1 IF v > null",
            "Invalid comparison with null",
        ),
        (
            "DELETE FROM t WHERE k = 1 IF v = 1",
            "DELETE statements must restrict all PRIMARY KEY columns",
        ),
    ] {
        let err = e.err(cql);
        assert_eq!(err.code(), 0x2200, "{cql}: {err}");
        assert!(err.to_string().contains(needle), "{cql}: {err}");
    }
    let serial = QueryParams {
        consistency: gyre_protocol::Consistency::Serial,
        ..params()
    };
    let err =
        e.qp.run("UPDATE t SET v = 1 WHERE k = 1 AND c = 1 IF v = 1", &serial)
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("SERIAL is not supported as conditional update commit consistency"),
        "{err}"
    );
}

/// Counters on one engine (`LocalData::apply_counter`): increments,
/// decrements, a COUNTER BATCH, totals, deletion, refusals.
#[test]
fn counters_on_one_engine() {
    let e = env();
    e.ok("CREATE TABLE c (k int PRIMARY KEY, n counter, m counter)");
    e.ok("UPDATE c SET n = n + 5 WHERE k = 1");
    e.ok("UPDATE c SET n = n - 2, m = m + 1 WHERE k = 1");
    e.ok("BEGIN COUNTER BATCH UPDATE c SET n = n + 10 WHERE k = 1; \
          UPDATE c SET n = n + 1 WHERE k = 2; APPLY BATCH");
    let counter = |n: i64| Some(CqlValue::Counter(n));
    assert_eq!(
        e.rows("SELECT n, m FROM c WHERE k = 1"),
        vec![vec![counter(13), counter(1)]]
    );
    assert_eq!(
        e.rows("SELECT n FROM c WHERE k = 2"),
        vec![vec![counter(1)]]
    );
    e.ok("DELETE FROM c WHERE k = 2");
    assert!(e.rows("SELECT n FROM c WHERE k = 2").is_empty());
    e.ok("CREATE TABLE p (k int PRIMARY KEY, v int)");
    for (cql, needle) in [
        (
            "INSERT INTO c (k, n) VALUES (1, 1)",
            "INSERT statements are not allowed on counter tables",
        ),
        (
            "UPDATE c SET n = 1 WHERE k = 1",
            "Cannot set the value of counter column n",
        ),
        (
            "UPDATE p SET v = v + 1 WHERE k = 1",
            "for non counter column v",
        ),
        (
            "BEGIN UNLOGGED BATCH UPDATE c SET n = n + 1 WHERE k = 1; \
             UPDATE p SET v = 1 WHERE k = 1; APPLY BATCH",
            "Counter and non-counter mutations cannot exist in the same batch",
        ),
        (
            "UPDATE c USING TTL 3 SET n = n + 1 WHERE k = 1",
            "Cannot provide custom TTL for counter updates",
        ),
    ] {
        let err = e.err(cql);
        assert_eq!(err.code(), 0x2200, "{cql}: {err}");
        assert!(err.to_string().contains(needle), "{cql}: {err}");
    }
}

#[test]
fn token_of_a_key_value_in_where() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, v int)");
    for k in 0..20 {
        e.ok(&format!("INSERT INTO t (k, v) VALUES ({k}, {k})"));
    }
    let all: Vec<i32> = e.ints("SELECT k FROM t");
    let after_5: Vec<i32> = all
        .iter()
        .skip_while(|k| **k != 5)
        .skip(1)
        .copied()
        .collect();
    assert_eq!(e.ints("SELECT k FROM t WHERE token(k) > token(5)"), after_5);
    let (rows, _) = e.rows_with(
        "SELECT k FROM t WHERE token(k) > token(?)",
        &with_values(vec![i32v(5)]),
    );
    assert_eq!(rows.len(), after_5.len());
    let parsed = gyre_cql::parse("SELECT k FROM t WHERE token(k) > token(?)").unwrap();
    let info = e.qp.prepare(&parsed, Some("ks")).unwrap();
    assert_eq!(info.bind_columns, vec![("k".to_owned(), ColumnType::Int)]);
    let err = e.err("BEGIN COUNTER BATCH UPDATE t SET v = 1 WHERE k = 1; APPLY BATCH");
    assert!(err.to_string().contains("counter batch"), "{err}");
}

fn list_of(items: &[i32]) -> Option<CqlValue> {
    Some(CqlValue::List(
        items.iter().map(|i| CqlValue::Int(*i)).collect(),
    ))
}

#[test]
fn list_prepend_remove_and_index_operations() {
    let e = env();
    e.ok("CREATE TABLE t (k int PRIMARY KEY, l list<int>)");
    e.ok("INSERT INTO t (k, l) VALUES (1, [3, 4])");
    e.ok("UPDATE t SET l = [1, 2] + l WHERE k = 1");
    e.ok("UPDATE t SET l = l + [5] WHERE k = 1");
    e.ok("UPDATE t SET l = [0] + l WHERE k = 1");
    let get = || e.rows("SELECT l FROM t WHERE k = 1");
    assert_eq!(get(), vec![vec![list_of(&[0, 1, 2, 3, 4, 5])]]);
    // Remove every occurrence of the values given.
    e.ok("UPDATE t SET l = l + [2] WHERE k = 1");
    e.ok("UPDATE t SET l = l - [2, 5] WHERE k = 1");
    assert_eq!(get(), vec![vec![list_of(&[0, 1, 3, 4])]]);
    // Set and delete by index.
    e.ok("UPDATE t SET l[1] = 10 WHERE k = 1");
    assert_eq!(get(), vec![vec![list_of(&[0, 10, 3, 4])]]);
    e.ok("DELETE l[0] FROM t WHERE k = 1");
    assert_eq!(get(), vec![vec![list_of(&[10, 3, 4])]]);
    e.qp.run(
        "UPDATE t SET l[?] = ? WHERE k = 1",
        &with_values(vec![i32v(2), i32v(40)]),
    )
    .unwrap();
    assert_eq!(get(), vec![vec![list_of(&[10, 3, 40])]]);
    let parsed = gyre_cql::parse("UPDATE t SET l[?] = ? WHERE k = ?").unwrap();
    let info = e.qp.prepare(&parsed, Some("ks")).unwrap();
    assert_eq!(
        info.bind_columns,
        vec![
            ("idx(l)".to_owned(), ColumnType::Int),
            ("l".to_owned(), ColumnType::Int),
            ("k".to_owned(), ColumnType::Int)
        ]
    );
    for bad in [
        "UPDATE t SET l[3] = 1 WHERE k = 1",
        "UPDATE t SET l[-1] = 1 WHERE k = 1",
        "DELETE l[7] FROM t WHERE k = 1",
        "UPDATE t SET l[0] = 1 WHERE k = 2",
    ] {
        let err = e.err(bad);
        assert!(err.to_string().contains("Invalid index"), "{bad}: {err}");
    }
}

#[test]
fn forged_paging_state_counters_are_refused() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, PRIMARY KEY (k, c))");
    for c in 0..20 {
        e.ok(&format!("INSERT INTO t (k, c) VALUES (1, {c})"));
        e.ok(&format!("INSERT INTO t (k, c) VALUES ({}, 0)", c + 10));
    }
    for q in [
        "SELECT c FROM t WHERE k = 1 LIMIT 10",
        "SELECT k FROM t LIMIT 10",
    ] {
        let first = QueryParams {
            page_size: Some(3),
            ..params()
        };
        let (_, state) = e.rows_with(q, &first);
        let state = state.expect("a second page");
        // The first 8 bytes count the rows returned so far: claim more than
        // the LIMIT allows.
        let mut forged = state.to_vec();
        forged[..8].copy_from_slice(&1000u64.to_be_bytes());
        let p = QueryParams {
            page_size: Some(3),
            paging_state: Some(Bytes::from(forged)),
            ..params()
        };
        let err = e.qp.run(q, &p).expect_err("forged paging state");
        assert!(
            err.to_string().contains("Invalid paging state"),
            "{q}: {err}"
        );
        // The genuine state still works.
        let p = QueryParams {
            page_size: Some(3),
            paging_state: Some(state),
            ..params()
        };
        assert_eq!(e.rows_with(q, &p).0.len(), 3, "{q}");
    }
}

fn udt(fields: &[(&str, Option<CqlValue>)]) -> Option<CqlValue> {
    Some(CqlValue::Udt(
        fields
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect(),
    ))
}

#[test]
fn user_defined_types() {
    let e = env();
    e.ok("CREATE TYPE addr (street text, city text, zip int)");
    e.ok("CREATE TYPE IF NOT EXISTS addr (x int)");
    e.ok("CREATE TYPE person (name text, home frozen<addr>, tags list<text>)");
    for (cql, needle) in [
        (
            "CREATE TYPE addr (a int)",
            "A user type with name 'addr' already exists",
        ),
        (
            "CREATE TYPE d (a int, a text)",
            "Duplicate field name 'a' in type 'd'",
        ),
        (
            "CREATE TYPE d (a addr)",
            "A user type cannot contain non-frozen UDTs",
        ),
        (
            "CREATE TYPE d (a counter)",
            "A user type cannot contain counters",
        ),
        ("CREATE TYPE d (a frozen<nope>)", "Unknown type ks.nope"),
        (
            "CREATE TABLE bad (k int PRIMARY KEY, v list<addr>)",
            "Non-frozen UDTs are not allowed inside collections",
        ),
        (
            "CREATE TABLE bad (k addr PRIMARY KEY)",
            "non-frozen user-defined type",
        ),
        (
            "ALTER TYPE addr ADD city text",
            "Cannot add field city to type ks.addr: a field with name city already exists",
        ),
        ("ALTER TYPE addr ADD me frozen<addr>", "circular reference"),
        (
            "ALTER TYPE addr RENAME nope TO x",
            "Unkown field nope in user type ks",
        ),
        (
            "ALTER TYPE addr RENAME street TO city",
            "Duplicate field name city in type ks",
        ),
        ("ALTER TYPE nope ADD a int", "Type ks.nope doesn't exist"),
        (
            "DROP TYPE addr",
            "Cannot drop user type 'ks.addr' as it is still used by user types person",
        ),
    ] {
        let err = e.err(cql);
        assert_eq!(err.code(), 0x2200, "{cql}: {err}");
        assert!(err.to_string().contains(needle), "{cql}: {err}");
    }
    e.ok("ALTER TYPE IF EXISTS nope ADD a int");
    let many = (0..40_000)
        .map(|i| format!("f{i} int"))
        .collect::<Vec<_>>()
        .join(", ");
    let err = e.err(&format!("CREATE TYPE wide ({many})"));
    assert!(
        err.to_string()
            .contains("cannot have more than 32767 fields"),
        "{err}"
    );
    e.ok("CREATE TABLE t (k int, c frozen<addr>, a addr, f frozen<addr>, p frozen<person>, l list<frozen<addr>>, PRIMARY KEY (k, c))");
    let err = e.err("DROP TYPE person");
    assert!(err.to_string().contains("still used by tables t"), "{err}");

    e.ok("INSERT INTO t (k, c, a, f, p, l) VALUES (1, {street: 's', city: 'c'}, {street: 'a1', zip: 5}, {city: 'fc'}, {name: 'n', home: {zip: 9}, tags: ['x']}, [{zip: 1}, {zip: 2}])");
    let r = one(e.rows("SELECT c, a, f, p, l FROM t WHERE k = 1"));
    // Key values keep no trailing nulls (so they stay equal after ALTER TYPE ADD).
    assert_eq!(r[0], udt(&[("street", text("s")), ("city", text("c"))]));
    // The non-frozen value leaves trailing nulls out.
    assert_eq!(
        r[1],
        udt(&[("street", text("a1")), ("city", None), ("zip", int(5))])
    );
    assert_eq!(
        r[2],
        udt(&[("street", None), ("city", text("fc")), ("zip", None)])
    );
    // Field updates and deletions on the non-frozen column only.
    e.ok("UPDATE t SET a.city = 'paris' WHERE k = 1 AND c = {street: 's', city: 'c'}");
    e.ok("DELETE a.zip FROM t WHERE k = 1 AND c = {street: 's', city: 'c'}");
    assert_eq!(
        one(e.rows("SELECT a, a.city, p.home.zip, f.zip FROM t WHERE k = 1")),
        vec![
            udt(&[("street", text("a1")), ("city", text("paris"))]),
            text("paris"),
            int(9),
            None
        ]
    );
    let err = e.err("UPDATE t SET f.city = 'x' WHERE k = 1 AND c = {street: 's', city: 'c'}");
    assert!(err.to_string().contains("frozen UDT column f"), "{err}");
    let err = e.err("UPDATE t SET a.nope = 'x' WHERE k = 1 AND c = {street: 's', city: 'c'}");
    assert!(
        err.to_string().contains("does not have a field named nope"),
        "{err}"
    );
    // Cassandra 5.0: writetime of a non-frozen UDT (details in
    // writetime_and_ttl_of_fields_and_non_frozen_values).
    assert!(matches!(
        &one(e.rows("SELECT maxwritetime(a), writetime(a.city) FROM t WHERE k = 1"))[..],
        [Some(CqlValue::Bigint(_)), Some(CqlValue::Bigint(_))]
    ));
    let err = e.err("INSERT INTO t (k, c, a) VALUES (2, {street: 's'}, {nope: 1})");
    assert!(err.to_string().contains("Unknown field 'nope'"), "{err}");
    // Replacing the whole non-frozen value clears the fields not given.
    e.ok("UPDATE t SET a = {zip: 7} WHERE k = 1 AND c = {street: 's', city: 'c'}");
    assert_eq!(
        one(e.rows("SELECT a FROM t WHERE k = 1"))[0],
        udt(&[("street", None), ("city", None), ("zip", int(7))])
    );
    // JSON both ways.
    let json = one(e.rows("SELECT JSON k, f FROM t WHERE k = 1"));
    assert_eq!(
        json[0],
        text(r#"{"k": 1, "f": {"street": null, "city": "fc", "zip": null}}"#)
    );
    e.ok(r#"INSERT INTO t JSON '{"k": 3, "c": {"street": "j"}, "a": {"city": "jc", "zip": 3}}'"#);
    assert_eq!(
        one(e.rows("SELECT a.city, a.zip FROM t WHERE k = 3")),
        vec![text("jc"), int(3)]
    );
    // ALTER TYPE: the new field shows in the table's type; renamed fields keep their data.
    e.ok("ALTER TYPE addr ADD country text");
    e.ok("ALTER TYPE addr RENAME city TO town");
    assert_eq!(
        one(e.rows("SELECT a.town FROM t WHERE k = 3")),
        vec![text("jc")]
    );
    e.ok("UPDATE t SET a.country = 'fr' WHERE k = 3 AND c = {street: 'j'}");
    assert_eq!(
        one(e.rows("SELECT a.country FROM t WHERE k = 3")),
        vec![text("fr")]
    );
    // DESCRIBE puts types first, each after the types it uses.
    let QueryResult::Rows { rows, .. } = e.ok("DESCRIBE KEYSPACE ks") else {
        panic!("rows expected")
    };
    let names: Vec<String> = rows
        .iter()
        .map(|r| String::from_utf8(r[2].clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(names, vec!["ks", "addr", "person", "t"]);
    let stmt = String::from_utf8(rows[1][3].clone().unwrap().to_vec()).unwrap();
    assert_eq!(
        stmt,
        "CREATE TYPE ks.addr (\n    street text,\n    town text,\n    zip int,\n    country text\n);"
    );
    // Lightweight transactions on a field.
    let cas = |cql: &str| match e.ok(cql) {
        QueryResult::Rows { rows, .. } => rows[0][0].clone().unwrap()[0] == 1,
        other => panic!("{cql}: {other:?}"),
    };
    assert!(!cas(
        "UPDATE t SET a.zip = 8 WHERE k = 3 AND c = {street: 'j'} IF a.town = 'nope'"
    ));
    assert!(cas(
        "UPDATE t SET a.zip = 8 WHERE k = 3 AND c = {street: 'j'} IF a.town = 'jc'"
    ));
    assert!(cas(
        "UPDATE t SET a.zip = 9 WHERE k = 3 AND c = {street: 'j'} IF a.zip > 7 AND f.town = null"
    ));
    assert_eq!(one(e.rows("SELECT a.zip FROM t WHERE k = 3")), vec![int(9)]);
    // JSON lists every field, also of values shorter than the type.
    assert_eq!(
        one(e.rows("SELECT JSON c, a FROM t WHERE k = 3"))[0],
        text(
            r#"{"c": {"street": "j", "town": null, "zip": null, "country": null}, "a": {"street": null, "town": "jc", "zip": 9, "country": "fr"}}"#
        )
    );
    // Vectors inside a type, types inside a vector.
    e.ok("CREATE TYPE emb (v vector<float, 2>, label text)");
    e.ok("CREATE TABLE vt (k int PRIMARY KEY, e frozen<emb>, pair vector<frozen<emb>, 2>)");
    e.ok("INSERT INTO vt (k, e, pair) VALUES (1, {v: [1.5, -2], label: 'x'}, [{label: 'a'}, {v: [0, 1]}])");
    let r = one(e.rows("SELECT e, e.v, pair FROM vt WHERE k = 1"));
    let vec2 = |a: f32, b: f32| {
        Some(CqlValue::Vector(vec![
            CqlValue::Float(a),
            CqlValue::Float(b),
        ]))
    };
    assert_eq!(r[0], udt(&[("v", vec2(1.5, -2.0)), ("label", text("x"))]));
    assert_eq!(r[1], vec2(1.5, -2.0));
    assert_eq!(
        r[2],
        Some(CqlValue::Vector(vec![
            udt(&[("v", None), ("label", text("a"))]).unwrap(),
            udt(&[("v", vec2(0.0, 1.0)), ("label", None)]).unwrap(),
        ]))
    );
    e.ok("DROP TABLE vt");
    e.ok("DROP TYPE emb");
    e.ok("DROP TABLE t");
    e.ok("DROP TYPE person");
    e.ok("DROP TYPE addr");
    e.ok("DROP TYPE IF EXISTS addr");
}

/// Cassandra 5.0 (CASSANDRA-8877): `writetime` / `ttl` / `maxwritetime` of
/// non-frozen user types and collections (one value per field or element)
/// and of user type fields, with its result names and types.
#[test]
fn writetime_and_ttl_of_fields_and_non_frozen_values() {
    let e = env();
    e.ok("CREATE TYPE addr (street text, city text, zip int)");
    e.ok("CREATE TABLE t (k int PRIMARY KEY, a addr, f frozen<addr>, l list<int>, s set<text>, v int)");
    e.ok("INSERT INTO t (k, f) VALUES (1, {city: 'fc'}) USING TIMESTAMP 100");
    e.ok("UPDATE t USING TIMESTAMP 200 SET a.street = 's' WHERE k = 1");
    e.ok("UPDATE t USING TIMESTAMP 300 AND TTL 50 SET a.zip = 5 WHERE k = 1");
    e.ok("UPDATE t USING TIMESTAMP 400 SET l = l + [1, 2] WHERE k = 1");
    e.ok("UPDATE t USING TIMESTAMP 500 SET l = l + [3] WHERE k = 1");
    e.ok("UPDATE t USING TIMESTAMP 600 AND TTL 20 SET s = s + {'x'} WHERE k = 1");
    e.ok("INSERT INTO t (k, v) VALUES (2, 1)");
    let cql = "SELECT writetime(a), ttl(a), maxwritetime(a), writetime(a.street), \
               writetime(a.city), ttl(a.zip), writetime(f), writetime(f.city), writetime(f.zip), \
               ttl(f.city), maxwritetime(f), writetime(l), maxwritetime(l), ttl(s) FROM t WHERE k = ?";
    let QueryResult::Rows { columns, .. } = e.ok(&cql.replace('?', "1")) else {
        panic!("no rows")
    };
    let list = |t: ColumnType| ColumnType::List(Box::new(t));
    assert_eq!(
        columns,
        vec![
            ("writetime(a)".into(), list(ColumnType::Bigint)),
            ("ttl(a)".into(), list(ColumnType::Int)),
            ("maxwritetime(a)".into(), ColumnType::Bigint),
            ("writetime(a.street)".into(), ColumnType::Bigint),
            ("writetime(a.city)".into(), ColumnType::Bigint),
            ("ttl(a.zip)".into(), ColumnType::Int),
            ("writetime(f)".into(), ColumnType::Bigint),
            ("writetime(f.city)".into(), ColumnType::Bigint),
            ("writetime(f.zip)".into(), ColumnType::Bigint),
            ("ttl(f.city)".into(), ColumnType::Int),
            ("maxwritetime(f)".into(), ColumnType::Bigint),
            ("writetime(l)".into(), list(ColumnType::Bigint)),
            ("maxwritetime(l)".into(), ColumnType::Bigint),
            ("ttl(s)".into(), list(ColumnType::Int)),
        ]
    );
    // A field without a cell is a null element (length -1), as Cassandra
    // 5.0 serializes it.
    let QueryResult::Rows { rows, .. } = e.ok(&cql.replace('?', "1")) else {
        panic!("no rows")
    };
    let mut wt = vec![0, 0, 0, 3, 0, 0, 0, 8];
    wt.extend_from_slice(&200i64.to_be_bytes());
    wt.extend_from_slice(&[0xFF; 4]);
    wt.extend_from_slice(&[0, 0, 0, 8]);
    wt.extend_from_slice(&300i64.to_be_bytes());
    let mut ttl = vec![0, 0, 0, 3];
    ttl.extend_from_slice(&[0xFF; 8]);
    ttl.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 50]);
    assert_eq!(rows[0][0].as_deref(), Some(&wt[..]));
    assert_eq!(rows[0][1].as_deref(), Some(&ttl[..]));
    let big = |n: i64| Some(CqlValue::Bigint(n));
    let bigs = |v: &[i64]| {
        Some(CqlValue::List(
            v.iter().map(|t| CqlValue::Bigint(*t)).collect(),
        ))
    };
    let cql = cql.replace("writetime(a), ttl(a), ", "");
    assert_eq!(
        one(e.rows(&cql.replace('?', "1"))),
        vec![
            big(300),
            big(200),
            None,
            int(50),
            big(100),
            big(100),
            None,
            None,
            big(100),
            bigs(&[400, 400, 500]),
            big(500),
            Some(CqlValue::List(vec![CqlValue::Int(20)])),
        ]
    );
    // No cells at all: every one is null.
    let QueryResult::Rows { rows, .. } = e.ok("SELECT writetime(a), ttl(a) FROM t WHERE k = 2")
    else {
        panic!("no rows")
    };
    assert_eq!(rows, vec![vec![None, None]]);
    assert!(one(e.rows(&cql.replace('?', "2")))
        .iter()
        .all(Option::is_none));
    for (cql, needle) in [
        (
            "SELECT writetime(k) FROM t",
            "Cannot use selection function writetime on PRIMARY KEY part k",
        ),
        (
            "SELECT maxwritetime(k) FROM t",
            "Cannot use selection function maxwritetime on PRIMARY KEY part k",
        ),
        (
            "SELECT ttl(a.nope) FROM t",
            "a of type addr has no field nope",
        ),
        (
            "SELECT writetime(v.x) FROM t",
            "Invalid field selection: v of type int is not a user type",
        ),
    ] {
        let err = e.err(cql);
        assert_eq!(err.code(), 0x2200, "{cql}: {err}");
        assert!(err.to_string().contains(needle), "{cql}: {err}");
    }
}

/// Cassandra validates the serialized partition key: a component of a
/// composite key may be empty (its composite encoding is not), a
/// one-column key may not.
#[test]
fn empty_components_of_a_composite_partition_key() {
    let e = env();
    e.ok("CREATE TABLE p (a text, b text, c int, v int, PRIMARY KEY ((a, b), c))");
    e.ok("INSERT INTO p (a, b, c, v) VALUES ('', 'x', 1, 10)");
    e.ok("INSERT INTO p (a, b, c, v) VALUES ('', '', 1, 20)");
    e.ok("INSERT INTO p (a, b, c, v) VALUES ('y', '', 1, 30)");
    assert_eq!(
        e.rows("SELECT a, b, v FROM p WHERE a = '' AND b = 'x'"),
        vec![vec![text(""), text("x"), int(10)]]
    );
    assert_eq!(
        e.ints("SELECT v FROM p WHERE a = '' AND b IN ('', 'x') AND c = 1"),
        vec![20, 10]
    );
    let mut all = e.ints("SELECT v FROM p");
    all.sort_unstable();
    assert_eq!(all, vec![10, 20, 30]);
    e.ok("UPDATE p SET v = 21 WHERE a = '' AND b = '' AND c = 1");
    e.ok("DELETE FROM p WHERE a = 'y' AND b = ''");
    let mut all = e.ints("SELECT v FROM p");
    all.sort_unstable();
    assert_eq!(all, vec![10, 21]);
    e.ok("CREATE TABLE s (a text PRIMARY KEY, v int)");
    for cql in [
        "INSERT INTO s (a, v) VALUES ('', 1)",
        "SELECT v FROM s WHERE a = ''",
    ] {
        assert_eq!(e.err(cql).to_string(), "Key may not be empty", "{cql}");
    }
}

/// Types given as class names (issue 17): a native type's class is that
/// type; CompositeType / DynamicCompositeType / LexicalUUIDType values are
/// opaque bytes under the fully qualified class name, as Cassandra keeps
/// them; other classes and custom key columns are refused.
#[test]
fn class_name_types() {
    let e = env();
    e.ok(
        "CREATE TABLE c (k int PRIMARY KEY, t 'org.apache.cassandra.db.marshal.UTF8Type', \
          n 'Int32Type', v 'CompositeType(Int32Type, org.apache.cassandra.db.marshal.UTF8Type)', \
          l list<'LexicalUUIDType'>)",
    );
    let composite = "org.apache.cassandra.db.marshal.CompositeType(\
                     org.apache.cassandra.db.marshal.Int32Type,org.apache.cassandra.db.marshal.UTF8Type)";
    e.ok("INSERT INTO c (k, t, n, v, l) VALUES (1, 'text', 7, 0x000400000001000000, [0x01])");
    let QueryResult::Rows { columns, .. } = e.ok("SELECT t, n, v, l FROM c WHERE k = 1") else {
        panic!("no rows")
    };
    assert_eq!(
        columns,
        vec![
            ("t".into(), ColumnType::Varchar),
            ("n".into(), ColumnType::Int),
            ("v".into(), ColumnType::Custom(composite.into())),
            (
                "l".into(),
                ColumnType::List(Box::new(ColumnType::Custom(
                    "org.apache.cassandra.db.marshal.LexicalUUIDType".into()
                )))
            ),
        ]
    );
    assert_eq!(
        one(e.rows("SELECT t, n, v FROM c WHERE k = 1")),
        vec![
            text("text"),
            int(7),
            Some(CqlValue::Custom(Bytes::from_static(&[
                0, 4, 0, 0, 0, 1, 0, 0, 0
            ])))
        ]
    );
    // Bound bytes are taken as they are.
    e.qp.run(
        "INSERT INTO c (k, v) VALUES (2, ?)",
        &QueryParams {
            values: vec![val(Bytes::from_static(b"\xff"))],
            ..params()
        },
    )
    .unwrap();
    assert_eq!(
        one(e.rows("SELECT v FROM c WHERE k = 2")),
        vec![Some(CqlValue::Custom(Bytes::from_static(b"\xff")))]
    );
    let described = format!("{:?}", e.ok("DESCRIBE TABLE c"));
    assert!(
        described.contains(&format!("v '{composite}'")),
        "{described}"
    );
    assert!(described.contains("t text"), "{described}");
    for (cql, needle) in [
        (
            "CREATE TABLE bad (k int PRIMARY KEY, v 'com.example.MyType')",
            "Unable to find abstract-type class 'com.example.MyType'",
        ),
        (
            "CREATE TABLE bad (k int PRIMARY KEY, v 'ReversedType(Int32Type)')",
            "Custom type org.apache.cassandra.db.marshal.ReversedType(org.apache.cassandra.db.marshal.Int32Type) is not supported",
        ),
        (
            "CREATE TABLE bad (k 'CompositeType(Int32Type)' PRIMARY KEY)",
            "is not supported in the PRIMARY KEY (column k)",
        ),
    ] {
        let err = e.err(cql);
        assert_eq!(err.code(), 0x2200, "{cql}: {err}");
        assert!(err.to_string().contains(needle), "{cql}: {err}");
    }
}

/// A node whose storage engine serves no indexes (RocksDB) refuses CREATE
/// INDEX and the scans an index would serve (an ANN query would otherwise
/// gather the whole table at the coordinator, an equality query scan the
/// ring); ALLOW FILTERING still filters, and a partition read is served.
#[test]
fn indexes_refused_when_the_engine_serves_none() {
    let e = env();
    e.ok("CREATE TABLE t (k int, c int, v int, e vector<float, 2>, PRIMARY KEY (k, c))");
    // Created before the refusal, as a peer's schema could bring it.
    e.ok("CREATE INDEX by_v ON t (v)");
    e.ok("CREATE CUSTOM INDEX by_e ON t (e) USING 'StorageAttachedIndex'");
    e.ok("INSERT INTO t (k, c, v, e) VALUES (1, 1, 5, [1.0, 0.5])");
    e.ok("INSERT INTO t (k, c, v, e) VALUES (2, 1, 6, [0.5, 1.0])");
    e.qp.refuse_indexes("no indexes on this engine");
    for cql in [
        "CREATE INDEX ON t (c)",
        "SELECT k FROM t WHERE v = 5",
        "SELECT k FROM t ORDER BY e ANN OF [1.0, 0.4] LIMIT 1",
        "SELECT k FROM t WHERE v = 5 ORDER BY e ANN OF [1.0, 0.4] LIMIT 1 ALLOW FILTERING",
    ] {
        let err = e.err(cql).to_string();
        assert!(err.contains("no indexes on this engine"), "{cql}: {err}");
    }
    assert_eq!(
        e.ints("SELECT k FROM t WHERE v = 5 ALLOW FILTERING"),
        vec![1]
    );
    assert_eq!(e.ints("SELECT c FROM t WHERE k = 2 AND v = 6"), vec![1]);
    assert_eq!(
        e.ints("SELECT c FROM t WHERE k = 1 ORDER BY e ANN OF [1.0, 0.4] LIMIT 1"),
        vec![1]
    );
}
