//! End to end: CQL text against a real `LsmEngine` in a temp dir.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use gyre_protocol::{ColumnType, CqlValue};
use gyre_query::{LocalData, QueryError, QueryParams, QueryProcessor, QueryResult};
use gyre_schema::{Schema, SchemaStore};
use gyre_storage::{LsmConfig, LsmEngine, ManualClock, StorageEngine, SyncMode};

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
        self.qp.execute(cql, &params())
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
        match self
            .qp
            .execute(cql, p)
            .unwrap_or_else(|e| panic!("{cql}: {e}"))
        {
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
            Some(Bytes::from("x")),
            Some(Bytes::from(7i32.to_be_bytes().to_vec())),
            Some(Bytes::from(5i64.to_be_bytes().to_vec())),
            Some(Bytes::from("bound")),
        ],
        ..params()
    };
    e.qp.execute("INSERT INTO t (a, b, c, v) VALUES (?, ?, ?, ?)", &p)
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
            Some(Bytes::from("x")),
            Some(Bytes::from_static(&[1, 2])),
            None,
            None,
        ],
        ..params()
    };
    let err =
        e.qp.execute("INSERT INTO t (a, b, c, v) VALUES (?, ?, ?, ?)", &bad)
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
        values: vec![Some(Bytes::from(0i64.to_be_bytes().to_vec()))],
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
    let err = e.qp.execute(
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
        e.qp.execute("SELECT * FROM t WHERE k = 1", &QueryParams::default())
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
        e.qp.execute("USE ks", &QueryParams::default()).unwrap(),
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
    let err = e.err("SELECT writetime(s) FROM t");
    assert_eq!(err.code(), 0x2200);
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
        qp.execute("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}", &p).unwrap();
        qp.execute("CREATE TABLE ks.t (k text PRIMARY KEY, v int)", &p)
            .unwrap();
        qp.execute("INSERT INTO ks.t (k, v) VALUES ('a', 1)", &p)
            .unwrap();
        engine.close().unwrap();
    }
    let (qp, _engine) = open();
    match qp
        .execute("SELECT k, v FROM ks.t", &QueryParams::default())
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
