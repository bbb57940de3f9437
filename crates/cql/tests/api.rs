//! Behaviour of the public entry points beyond the golden corpus.

use gyre_cql::{
    parse, parse_all, parse_statement, parse_statements, quote_identifier, BindMarker, CqlType,
    Literal, Predicate, Relation, Statement, Term,
};

fn marker(index: usize, name: Option<&str>) -> BindMarker {
    BindMarker {
        index,
        name: name.map(str::to_owned),
    }
}

#[test]
fn bind_markers_are_numbered_in_source_order() {
    let p = parse("UPDATE t USING TTL ? SET a = :a, m[?] = ? WHERE k IN ? AND c = :a IF v = ?")
        .expect("parses");
    assert_eq!(
        p.bind_markers,
        vec![
            marker(0, None),
            marker(1, Some("a")),
            marker(2, None),
            marker(3, None),
            marker(4, None),
            marker(5, Some("a")),
            marker(6, None),
        ]
    );
}

#[test]
fn batch_markers_span_the_batch_and_statements_restart() {
    let p = parse(
        "BEGIN BATCH INSERT INTO t (a) VALUES (?); INSERT INTO t (a) VALUES (?); APPLY BATCH",
    )
    .expect("parses");
    assert_eq!(p.bind_markers.len(), 2);
    let all =
        parse_all("SELECT * FROM t WHERE a = ?; SELECT * FROM t WHERE b = ?").expect("parses");
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].bind_markers, vec![marker(0, None)]);
}

#[test]
fn multiple_statements_and_empty_input() {
    assert_eq!(parse_statements("").expect("empty is fine"), vec![]);
    assert_eq!(
        parse_statements(" ; ;; -- nothing\n").expect("only separators"),
        vec![]
    );
    let stmts = parse_statements("USE a; USE \"B\"; use c").expect("parses");
    assert_eq!(
        stmts,
        vec![
            Statement::Use("a".into()),
            Statement::Use("B".into()),
            Statement::Use("c".into())
        ]
    );
}

#[test]
fn identifiers_fold_case_unless_quoted() {
    let Statement::Select(s) =
        parse_statement("SELECT * FROM MyKs.\"MyTable\" WHERE Key = 1").expect("parses")
    else {
        panic!("not a select")
    };
    assert_eq!(s.table.keyspace.as_deref(), Some("myks"));
    assert_eq!(s.table.name, "MyTable");
    assert!(matches!(&s.where_clause[0], Relation::Column { column, .. } if column == "key"));
    assert_eq!(quote_identifier("key"), "key");
    assert_eq!(quote_identifier("Key"), "\"Key\"");
    assert_eq!(quote_identifier("select"), "\"select\"");
    assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
}

#[test]
fn negative_numbers_and_subtraction() {
    let Statement::Select(s) =
        parse_statement("SELECT * FROM t WHERE a = -5 AND b = - 2.5").expect("parses")
    else {
        panic!("not a select")
    };
    let values: Vec<&Term> = s
        .where_clause
        .iter()
        .map(|r| match r {
            Relation::Column {
                predicate: Predicate::Compare(_, t),
                ..
            } => t,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(values[0], &Term::Literal(Literal::Integer("-5".into())));
    assert_eq!(values[1], &Term::Literal(Literal::Float("-2.5".into())));
}

#[test]
fn cql_type_display_is_canonical() {
    let cases = [
        ("varchar", "text"),
        ("MAP<TEXT,INT>", "map<text, int>"),
        ("frozen<list<int>>", "frozen<list<int>>"),
        (
            "tuple<int,frozen<set<blob>>>",
            "tuple<int, frozen<set<blob>>>",
        ),
        ("\"MyType\"", "\"MyType\""),
    ];
    for (src, want) in cases {
        let cql = format!("CREATE TABLE t (k int PRIMARY KEY, v {src})");
        let Statement::CreateTable(t) = parse_statement(&cql).expect("parses") else {
            panic!("not a create table")
        };
        assert_eq!(t.columns[1].ty.to_string(), want);
    }
    assert_eq!(CqlType::native("varchar"), Some(CqlType::Text));
}

#[test]
fn unsupported_statements_are_named() {
    let kinds: Vec<String> =
        parse_statements("CREATE TRIGGER a ON t USING 'c'; DROP MATERIALIZED VIEW v")
            .expect("parses")
            .into_iter()
            .map(|s| match s {
                Statement::Unsupported { kind } => kind,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
    assert_eq!(kinds, ["CREATE TRIGGER", "DROP MATERIALIZED VIEW"]);
}

#[test]
fn type_statements_and_field_selectors_parse_and_print_back() {
    for (cql, printed) in [
        (
            "create type if not exists ks.addr (street text, \"Zip\" int, tags frozen<list<text>>, home frozen<other>)",
            "CREATE TYPE IF NOT EXISTS ks.addr (street text, \"Zip\" int, tags frozen<list<text>>, home frozen<other>)",
        ),
        ("alter type addr add if not exists c text", "ALTER TYPE addr ADD IF NOT EXISTS c text"),
        ("alter type if exists addr rename a to b and c to d", "ALTER TYPE IF EXISTS addr RENAME a TO b AND c TO d"),
        ("alter type addr alter a type blob", "ALTER TYPE addr ALTER a TYPE blob"),
        ("drop type if exists ks.addr", "DROP TYPE IF EXISTS ks.addr"),
        ("select a.city, p.home.zip as z, f(x).y from t", "SELECT a.city, p.home.zip AS z, f(x).y FROM t"),
        ("select writetime(a.city), ttl(a.b.\"C\"), maxwritetime(l), writetime(v), ttl(w) from t", "SELECT writetime(a.city), ttl(a.b.\"C\"), maxwritetime(l), writetime(v), ttl(w) FROM t"),
        ("update t set a.city = ? where k = 1", "UPDATE t SET a.city = ? WHERE k = 1"),
        ("delete a.city from t where k = 1", "DELETE a.city FROM t WHERE k = 1"),
        ("insert into t (k, a) values (1, {street: 'x', city: null})", "INSERT INTO t (k, a) VALUES (1, {street: 'x', city: null})"),
    ] {
        let p = parse(cql).unwrap_or_else(|e| panic!("{cql}: {e}"));
        assert_eq!(p.statement.to_string(), printed);
        assert_eq!(parse(printed).expect("reparses").statement, p.statement);
    }
    let Statement::CreateType(ct) =
        parse_statement("CREATE TYPE t (a int, b frozen<u>)").expect("parses")
    else {
        panic!("not CREATE TYPE")
    };
    assert_eq!(ct.fields.len(), 2);
    assert!(
        matches!(&ct.fields[1].1, CqlType::Frozen(inner) if matches!(**inner, CqlType::Udt(_)))
    );
    // No field relations in Cassandra 5.0's grammar: a syntax error that says why.
    for cql in [
        "SELECT * FROM t WHERE a.city = 'x' ALLOW FILTERING",
        "DELETE FROM t WHERE k = 1 AND a.\"City\" IN (1, 2)",
    ] {
        let err = parse(cql).expect_err(cql).to_string();
        assert!(
            err.contains(
                "no viable alternative at input '.': restrictions on fields of user types"
            ),
            "{cql}: {err}"
        );
    }
    assert!(parse("SELECT * FROM t WHERE a.city = 'x'")
        .expect_err("field relation")
        .to_string()
        .starts_with("line 1:24 "));
    assert!(parse("CREATE TYPE t ()").is_err());
    assert!(parse("ALTER TYPE t DROP a").is_err());
}

#[test]
fn index_statements_parse_and_print_back() {
    for (cql, printed) in [
        ("create index on ks.t (v)", "CREATE INDEX ON ks.t (v)"),
        (
            "CREATE INDEX IF NOT EXISTS i ON t (keys(m))",
            "CREATE INDEX IF NOT EXISTS i ON t (KEYS(m))",
        ),
        ("CREATE INDEX ON t (values(s))", "CREATE INDEX ON t (VALUES(s))"),
        ("CREATE INDEX ON t (entries(m))", "CREATE INDEX ON t (ENTRIES(m))"),
        ("CREATE INDEX ON t (full(f))", "CREATE INDEX ON t (FULL(f))"),
        (
            "CREATE CUSTOM INDEX ann ON t (v) USING 'StorageAttachedIndex' WITH OPTIONS = {'similarity_function': 'cosine'}",
            "CREATE CUSTOM INDEX ann ON t (v) USING 'StorageAttachedIndex' WITH options = {'similarity_function': 'cosine'}",
        ),
        ("DROP INDEX IF EXISTS ks.i", "DROP INDEX IF EXISTS ks.i"),
        (
            "SELECT * FROM t WHERE m['k'] = 1 AND m[?] = ?",
            "SELECT * FROM t WHERE m['k'] = 1 AND m[?] = ?",
        ),
    ] {
        let stmt = gyre_cql::parse_statement(cql).expect(cql);
        assert_eq!(stmt.to_string(), printed, "{cql}");
        assert_eq!(gyre_cql::parse_statement(printed).expect(printed), stmt);
    }
    let Statement::CreateIndex(ci) =
        gyre_cql::parse_statement("CREATE INDEX ON t (keys)").expect("a column named keys")
    else {
        panic!("not CREATE INDEX")
    };
    assert_eq!(ci.targets, [gyre_cql::IndexTarget::Column("keys".into())]);
    assert!(gyre_cql::parse_statement("CREATE INDEX ON t v").is_err());
}

#[test]
fn long_inputs_parse_in_linear_time() {
    let n = 20_000;
    let values = vec!["1"; n].join(", ");
    let cql = format!("SELECT * FROM t WHERE k IN ({values})");
    let start = std::time::Instant::now();
    let Statement::Select(s) = parse_statement(&cql).expect("parses") else {
        panic!("not a select")
    };
    assert!(
        matches!(&s.where_clause[0], Relation::Column { predicate: Predicate::In(gyre_cql::InValues::List(v)), .. } if v.len() == n)
    );
    let nested = |n| {
        format!(
            "INSERT INTO t (k) VALUES ({}1{})",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    assert!(parse_statement(&nested(90)).is_ok());
    // Deep nesting is an error, not a stack overflow.
    let e = parse_statement(&nested(100_000)).expect_err("too deep");
    assert!(e.to_string().contains("nested more than"), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    // Types nest as far as the protocol decoder accepts, no further.
    let typed = |n: usize| {
        format!(
            "CREATE TABLE t (k int PRIMARY KEY, v {}int{})",
            "frozen<list<".repeat(n / 2) + &"list<".repeat(n % 2),
            ">".repeat(n)
        )
    };
    let max = gyre_common::MAX_TYPE_NESTING;
    // `n` collection levels plus the innermost `int` make n + 1 types.
    assert!(parse_statement(&typed(max - 1)).is_ok());
    let e = parse_statement(&typed(max)).expect_err("one level too deep");
    assert!(e.to_string().contains("type nested more than"), "{e}");
}

#[test]
fn durations_in_all_three_forms() {
    let nanos = (89 * 3600 + 9 * 60 + 9) * 1_000_000_000i64;
    for (cql, months, days, ns) in [
        ("INSERT INTO t (d) VALUES (89h9m9s)", 0, 0, nanos),
        ("INSERT INTO t (d) VALUES (PT89H9M9S)", 0, 0, nanos),
        (
            "INSERT INTO t (d) VALUES (P0000-00-00T89:09:09)",
            0,
            0,
            nanos,
        ),
        (
            "INSERT INTO t (d) VALUES (P0001-02-03T00:00:01)",
            14,
            3,
            1_000_000_000,
        ),
        (
            "INSERT INTO t (d) VALUES (-P0000-00-00T89:09:09)",
            0,
            0,
            -nanos,
        ),
    ] {
        let p = parse(cql).unwrap_or_else(|e| panic!("{cql}: {e}"));
        let Statement::Insert(i) = &p.statement else {
            panic!("{cql}: not an insert");
        };
        let gyre_cql::InsertValues::Columns { values: v, .. } = &i.values else {
            panic!("{cql}: no values");
        };
        let Term::Literal(Literal::Duration(d)) = &v[0] else {
            panic!("{cql}: {:?}", v[0]);
        };
        assert_eq!((d.months, d.days, d.nanos), (months, days, ns), "{cql}");
    }
    assert_eq!(
        gyre_cql::parse_duration("P0000-00-00T89:09:09").map(|d| d.nanos),
        Some(nanos)
    );
    // Not the pattern: an identifier, or an error.
    assert!(parse("INSERT INTO t (d) VALUES (P0000-00-00T89:09)").is_err());
}
