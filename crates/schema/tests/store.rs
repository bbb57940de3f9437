//! The schema survives restarts in a real LSM engine.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use gyre_schema::{statement_to_change, Schema, SchemaStore};
use gyre_storage::{LsmConfig, LsmEngine, StorageEngine};

fn open(dir: &std::path::Path) -> SchemaStore {
    let engine: Arc<dyn StorageEngine> = Arc::new(LsmEngine::open(LsmConfig::in_dir(dir)).unwrap());
    SchemaStore::open(engine).unwrap()
}

fn run(schema: &mut Schema, store: &SchemaStore, ts: i64, cql: &str) {
    let stmt = gyre_cql::parse_statement(cql).unwrap();
    let change = statement_to_change(&stmt, schema, Some("ks"))
        .unwrap()
        .unwrap();
    let mutation = schema.apply_change(change, ts).unwrap();
    store.save(&mutation).unwrap();
}

#[test]
fn schema_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (version, tables, keyspaces, rows) = {
        let store = open(dir.path());
        let mut s = store.load().unwrap();
        assert_eq!(s.version(), Schema::new().version());
        run(
            &mut s,
            &store,
            1,
            "CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3}",
        );
        run(&mut s, &store, 2, "CREATE TABLE t (k int, c text, v map<text, int>, PRIMARY KEY (k, c)) WITH CLUSTERING ORDER BY (c DESC) AND comment = 'it''s'");
        run(&mut s, &store, 3, "CREATE TABLE gone (k int PRIMARY KEY)");
        run(&mut s, &store, 4, "DROP TABLE gone");
        run(
            &mut s,
            &store,
            5,
            "ALTER TABLE t ADD w frozen<tuple<int, text>>",
        );
        run(&mut s, &store, 5, "ALTER TABLE t ADD gone_col int");
        run(&mut s, &store, 6, "ALTER TABLE t DROP gone_col");
        run(&mut s, &store, 6, "CREATE KEYSPACE dropped WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
        run(&mut s, &store, 7, "DROP KEYSPACE dropped");
        (
            s.version(),
            s.tables().clone(),
            s.keyspaces().clone(),
            s.rows().clone(),
        )
    };
    let store = open(dir.path());
    let loaded = store.load().unwrap();
    assert_eq!(loaded.rows(), &rows, "tombstones included");
    assert_eq!(loaded.version(), version);
    assert_eq!(loaded.tables(), &tables);
    assert_eq!(loaded.keyspaces(), &keyspaces);
    assert!(loaded.table("ks", "gone").is_none());
    assert_eq!(
        loaded.table("ks", "t").unwrap().dropped_columns["gone_col"].dropped_at,
        6
    );
    assert_eq!(loaded.table("ks", "t").unwrap().options.comment, "it's");
}

#[test]
fn engine_merges_rows_like_the_schema_does() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn StorageEngine> =
        Arc::new(LsmEngine::open(LsmConfig::in_dir(dir.path())).unwrap());
    let store = SchemaStore::open(engine.clone()).unwrap();
    let mut a = Schema::new();
    run(&mut a, &store, 1, "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
    run(
        &mut a,
        &store,
        2,
        "CREATE TABLE t (k int PRIMARY KEY, v int)",
    );
    engine.flush(None).unwrap();
    // A peer's concurrent changes, older and newer, saved out of order.
    let mut peer = a.clone();
    let stmt = |c: &str| gyre_cql::parse_statement(c).unwrap();
    let m1 = peer
        .apply_change(
            statement_to_change(
                &stmt("ALTER TABLE t WITH comment = 'new'"),
                &peer,
                Some("ks"),
            )
            .unwrap()
            .unwrap(),
            9,
        )
        .unwrap();
    let m0 = peer
        .apply_change(
            statement_to_change(
                &stmt("ALTER TABLE t WITH comment = 'old'"),
                &peer,
                Some("ks"),
            )
            .unwrap()
            .unwrap(),
            3,
        )
        .unwrap();
    store.save(&m1).unwrap();
    engine.flush(None).unwrap();
    store.save(&m0).unwrap();
    a.merge(m0);
    a.merge(m1);
    assert_eq!(a.table("ks", "t").unwrap().options.comment, "new");
    engine.compact(gyre_schema::SCHEMA_TABLE_ID).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.version(), a.version());
    assert_eq!(loaded.table("ks", "t").unwrap().options.comment, "new");
}

#[test]
fn user_types_survive_restart_and_resolve_into_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, tables) = {
        let store = open(dir.path());
        let mut s = store.load().unwrap();
        run(&mut s, &store, 1, "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
        run(&mut s, &store, 2, "CREATE TYPE addr (street text, zip int)");
        run(
            &mut s,
            &store,
            3,
            "CREATE TYPE person (name text, home frozen<addr>)",
        );
        run(&mut s, &store, 4, "CREATE TABLE t (k int, c frozen<addr>, p person, l list<frozen<person>>, PRIMARY KEY (k, c))");
        run(&mut s, &store, 5, "ALTER TYPE addr ADD city text");
        run(&mut s, &store, 6, "CREATE TYPE gone (a int)");
        run(&mut s, &store, 7, "DROP TYPE gone");
        (s.rows().clone(), s.tables().clone())
    };
    let loaded = open(dir.path()).load().unwrap();
    assert_eq!(loaded.rows(), &rows);
    assert_eq!(loaded.tables(), &tables);
    assert!(loaded.user_type("ks", "gone").is_none());
    let names: Vec<&String> = loaded.types_in("ks").keys().collect();
    assert_eq!(names, ["addr", "person"]);
    // The table's column carries the type's current fields, nested too.
    let t = loaded.table("ks", "t").unwrap();
    let gyre_cql::CqlType::UserType(p) = &t.column("p").unwrap().ty else {
        panic!("p is not a resolved user type")
    };
    let gyre_cql::CqlType::Frozen(home) = &p.fields[1].1 else {
        panic!("home is not frozen")
    };
    let gyre_cql::CqlType::UserType(home) = &**home else {
        panic!("home is not a user type")
    };
    let fields: Vec<&str> = home.fields.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["street", "zip", "city"]);
    assert_eq!(
        t.column("l").unwrap().ty.to_string(),
        "list<frozen<person>>"
    );
    // DESCRIBE order: a type after the types it uses.
    let order: Vec<String> = gyre_schema::dependency_order(loaded.types_in("ks"))
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(order, ["addr", "person"]);
}
