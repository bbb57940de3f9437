//! DDL statements to schema changes: Cassandra's checks and messages.
#![allow(clippy::unwrap_used)]

use gyre_schema::{
    statement_to_change, ClusteringOrder, ColumnKind, Replication, Schema, SchemaError,
};

/// Runs one statement at `ts`; `Ok(false)` when it was a no-op.
fn run(schema: &mut Schema, ts: i64, cql: &str) -> Result<bool, SchemaError> {
    let stmt = gyre_cql::parse_statement(cql).unwrap();
    match statement_to_change(&stmt, schema, Some("ks"))? {
        Some(change) => {
            schema.apply_change(change, ts)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn err(schema: &mut Schema, cql: &str) -> String {
    run(schema, 1000, cql).unwrap_err().to_string()
}

fn with_ks() -> Schema {
    let mut s = Schema::new();
    run(
        &mut s,
        1,
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    )
    .unwrap();
    s
}

#[test]
fn keyspace_lifecycle_and_replication_options() {
    let mut s = Schema::new();
    run(&mut s, 1, "CREATE KEYSPACE a WITH replication = {'class': 'org.apache.cassandra.locator.SimpleStrategy', 'replication_factor': '3'} AND durable_writes = false").unwrap();
    let a = s.keyspace("a").unwrap();
    assert_eq!(
        a.replication,
        Replication::Simple {
            replication_factor: 3
        }
    );
    assert!(!a.durable_writes);
    run(&mut s, 2, "CREATE KEYSPACE b WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}").unwrap();
    match &s.keyspace("b").unwrap().replication {
        Replication::NetworkTopology(m) => assert_eq!(m.get("dc2"), Some(&2)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        run(&mut s, 3, "CREATE KEYSPACE a WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"),
        Err(SchemaError::AlreadyExists { ref keyspace, table: None }) if keyspace == "a"
    ));
    assert!(!run(&mut s, 3, "CREATE KEYSPACE IF NOT EXISTS a WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}").unwrap());
    run(
        &mut s,
        4,
        "ALTER KEYSPACE a WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}",
    )
    .unwrap();
    let a = s.keyspace("a").unwrap();
    assert_eq!(
        a.replication,
        Replication::Simple {
            replication_factor: 2
        }
    );
    assert!(!a.durable_writes, "ALTER keeps options it does not name");
    run(&mut s, 5, "DROP KEYSPACE a").unwrap();
    assert!(s.keyspace("a").is_none());
    assert!(!run(&mut s, 6, "DROP KEYSPACE IF EXISTS a").unwrap());
    assert_eq!(
        err(&mut s, "DROP KEYSPACE a"),
        "Keyspace 'a' does not exist"
    );
    assert_eq!(
        err(&mut s, "ALTER KEYSPACE a WITH durable_writes = true"),
        "Keyspace 'a' does not exist"
    );

    let bad = [
        ("CREATE KEYSPACE x WITH replication = {'replication_factor': 1}", "Missing replication strategy class"),
        ("CREATE KEYSPACE x WITH replication = {'class': 'SimpleStrategy'}", "SimpleStrategy requires a replication_factor strategy option."),
        ("CREATE KEYSPACE x WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 'three'}", "Replication factor must be numeric; found three"),
        ("CREATE KEYSPACE x WITH replication = {'class': 'SimpleStrategy', 'replication_factor': -1}", "Replication factor must be non-negative; found -1"),
        ("CREATE KEYSPACE x WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1, 'dc1': 1}", "Unrecognized strategy option {dc1} passed to SimpleStrategy for keyspace x"),
        ("CREATE KEYSPACE x WITH replication = {'class': 'FooStrategy', 'replication_factor': 1}", "Unable to find replication strategy class 'org.apache.cassandra.locator.FooStrategy'"),
        ("CREATE KEYSPACE x WITH durable_writes = true", "Missing mandatory replication strategy class"),
        ("CREATE KEYSPACE x WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1} AND foo = 1", "Unknown property 'foo'"),
        ("CREATE KEYSPACE \"has-dash\" WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}", "Keyspace name must not be empty, more than 48 characters long, or contain non-alphanumeric-underscore characters (got 'has-dash')"),
    ];
    for (cql, want) in bad {
        assert_eq!(err(&mut s, cql), want, "{cql}");
    }
}

#[test]
fn system_keyspaces_are_built_in_and_read_only() {
    let mut s = Schema::new();
    for ks in gyre_schema::SYSTEM_KEYSPACES {
        assert!(s.keyspace(ks).is_some(), "{ks}");
    }
    assert_eq!(
        s.keyspace("system").unwrap().replication,
        Replication::Local
    );
    assert_eq!(
        err(&mut s, "DROP KEYSPACE system"),
        "Cannot drop system keyspace system"
    );
    for ks in ["system", "system_schema"] {
        assert_eq!(
            err(&mut s, &format!("ALTER KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 3}}")),
            format!("Cannot alter system keyspace {ks}")
        );
    }
    assert!(matches!(
        run(&mut s, 1, "CREATE KEYSPACE system WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"),
        Err(SchemaError::AlreadyExists { .. })
    ));
    assert!(matches!(
        run(&mut s, 1, "CREATE TABLE system.t (k int PRIMARY KEY)"),
        Err(SchemaError::Unauthorized(_))
    ));
    assert_eq!(s.rows().partitions.len(), 0);
}

/// As in Cassandra, the replicated system keyspaces' replication can be
/// altered (roles in system_auth on several nodes); the change is schema
/// like any other (a peer merging the rows gets it) and leaves the built-in
/// tables alone.
#[test]
fn system_auth_replication_can_be_altered() {
    let mut s = Schema::new();
    run(&mut s, 5, "ALTER KEYSPACE system_auth WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}").unwrap();
    assert_eq!(
        s.keyspace("system_auth").unwrap().replication,
        Replication::Simple {
            replication_factor: 3
        }
    );
    assert!(s.table("system_auth", "roles").is_some());
    assert_eq!(
        err(
            &mut s,
            "ALTER KEYSPACE system_auth WITH replication = {'class': 'LocalStrategy'}"
        ),
        "LocalStrategy is only for internal use"
    );
    assert_eq!(
        err(&mut s, "DROP KEYSPACE system_auth"),
        "Cannot drop system keyspace system_auth"
    );
    // A peer (or a restart) that merges the rows sees the same.
    let mut peer = Schema::new();
    assert!(peer.merge(s.rows().clone()));
    assert_eq!(peer.keyspace("system_auth"), s.keyspace("system_auth"));
    assert_eq!(peer.version(), s.version());
    let restarted = Schema::from_rows(s.rows().clone());
    assert_eq!(restarted.keyspace("system_auth"), s.keyspace("system_auth"));
    // Rows for a local system keyspace or a system table are never taken.
    let mut forged = Schema::new();
    run(&mut forged, 1, "CREATE KEYSPACE k2 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}").unwrap();
    run(&mut forged, 2, "CREATE TABLE k2.roles (k int PRIMARY KEY)").unwrap();
    let mut rows = forged.rows().clone();
    let p = rows.partitions.remove("k2").unwrap();
    rows.partitions.insert("system".into(), p.clone());
    rows.partitions.insert("system_auth".into(), p);
    let mut victim = Schema::new();
    victim.merge(rows.clone());
    assert_eq!(
        victim.keyspace("system").unwrap().replication,
        Replication::Local
    );
    assert!(victim.tables().is_empty());
    assert_eq!(
        Schema::from_rows(rows)
            .keyspace("system")
            .unwrap()
            .replication,
        Replication::Local
    );
}

#[test]
fn create_table_builds_the_model() {
    let mut s = with_ks();
    run(&mut s, 2, "CREATE TABLE t (a int, b text, c timeuuid, d bigint, s text STATIC, v blob, w int, PRIMARY KEY ((a, b), c, d)) WITH CLUSTERING ORDER BY (c DESC) AND gc_grace_seconds = 10 AND comment = 'hi' AND compaction = {'class': 'LeveledCompactionStrategy'}").unwrap();
    let t = s.table("ks", "t").unwrap();
    let names: Vec<_> = t.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "s", "v", "w"]);
    assert_eq!(t.column("a").unwrap().kind, ColumnKind::PartitionKey(0));
    assert_eq!(t.column("b").unwrap().kind, ColumnKind::PartitionKey(1));
    assert_eq!(
        t.column("c").unwrap().kind,
        ColumnKind::Clustering(0, ClusteringOrder::Desc)
    );
    assert_eq!(
        t.column("d").unwrap().kind,
        ColumnKind::Clustering(1, ClusteringOrder::Asc)
    );
    assert_eq!(t.column("s").unwrap().kind, ColumnKind::Static);
    assert_eq!(t.column("c").unwrap().ty, gyre_cql::CqlType::Timeuuid);
    assert_eq!(t.options.gc_grace_seconds, 10);
    assert_eq!(t.options.default_time_to_live, 0);
    assert_eq!(t.options.comment, "hi");
    assert_eq!(t.options.speculative_retry, "99p");
    assert_eq!(
        t.options.compaction.get("class").map(String::as_str),
        Some("org.apache.cassandra.db.compaction.LeveledCompactionStrategy")
    );
    assert_eq!(t.storage_options().gc_grace_seconds, 10);
    assert_eq!(
        t.storage_options().compaction,
        gyre_storage::CompactionOptions::Leveled(Default::default())
    );
    assert_eq!(s.table_by_id(t.id).unwrap().name, "t");
    assert_eq!(s.tables_in("ks").count(), 1);

    assert!(matches!(
        run(&mut s, 3, "CREATE TABLE t (k int PRIMARY KEY)"),
        Err(SchemaError::AlreadyExists { ref table, .. }) if table.as_deref() == Some("t")
    ));
    assert!(!run(
        &mut s,
        3,
        "CREATE TABLE IF NOT EXISTS t (k int PRIMARY KEY)"
    )
    .unwrap());
}

#[test]
fn create_table_errors() {
    let mut s = with_ks();
    let bad = [
        ("CREATE TABLE nope.t (k int PRIMARY KEY)", "Keyspace 'nope' does not exist"),
        ("CREATE TABLE t (k int, v int)", "No PRIMARY KEY specifed for table 't' (exactly one required)"),
        ("CREATE TABLE t (k int PRIMARY KEY, k text)", "Multiple definition of identifier k"),
        ("CREATE TABLE t (k int, PRIMARY KEY (x))", "Unknown definition x referenced in PRIMARY KEY"),
        ("CREATE TABLE t (k int PRIMARY KEY, s int STATIC)", "Static columns are only useful (and thus allowed) if the table has at least one clustering column"),
        (
            "CREATE TABLE t (k int PRIMARY KEY, c counter, v int)",
            "Cannot mix counter and non counter columns in the same table",
        ),
        (
            "CREATE TABLE t (k counter PRIMARY KEY, c counter)",
            "counter type is not supported for PRIMARY KEY column 'k'",
        ),
        (
            "CREATE TABLE t (k int PRIMARY KEY, c counter) WITH default_time_to_live = 5",
            "Cannot set default_time_to_live on a table with counters",
        ),
        ("CREATE TABLE t (k int, v int, PRIMARY KEY (k)) WITH CLUSTERING ORDER BY (v DESC)", "Only clustering key columns can be defined in CLUSTERING ORDER directive: v is not a clustering column"),
        ("CREATE TABLE t (k int, a int, b int, PRIMARY KEY (k, a, b)) WITH CLUSTERING ORDER BY (b DESC)", "The order of columns in the CLUSTERING ORDER directive must match that of the clustering columns"),
        ("CREATE TABLE t (k list<int> PRIMARY KEY)", "Invalid non-frozen collection type list<int> for PRIMARY KEY component k"),
        ("CREATE TABLE t (k int, c duration, PRIMARY KEY (k, c))", "duration type is not supported for PRIMARY KEY column 'c'"),
        ("CREATE TABLE t (k int PRIMARY KEY, v list<list<int>>)", "Non-frozen collections are not allowed inside collections: list<list<int>>"),
        ("CREATE TABLE t (k int PRIMARY KEY, v set<duration>)", "Durations are not allowed inside sets"),
        ("CREATE TABLE t (k int PRIMARY KEY, v frozen<int>)", "frozen<> is only allowed on collections, tuples, and user-defined types (got int)"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH COMPACT STORAGE", "Compact tables are not allowed in Cassandra starting with 4.0 version."),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH gc_grace_seconds = -1", "gc_grace_seconds must be greater than or equal to 0 (got -1)"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH default_time_to_live = 630720001", "default_time_to_live must be less than or equal to 630720000 (got 630720001)"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH bogus = 1", "Unknown property 'bogus'"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'min_threshold': 2}", "Missing sub-option 'class' for the 'compaction' option."),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'FooCompactionStrategy'}", "Unable to find compaction strategy class 'org.apache.cassandra.db.compaction.FooCompactionStrategy'"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'LeveledCompactionStrategy', 'bogus': 1}", "Properties specified [bogus] are not understood by LeveledCompactionStrategy"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'SizeTieredCompactionStrategy', 'sstable_size_in_mb': 1}", "Properties specified [sstable_size_in_mb] are not understood by SizeTieredCompactionStrategy"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'LeveledCompactionStrategy', 'sstable_size_in_mb': 0}", "sstable_size_in_mb must be larger than 0, but was 0"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'LeveledCompactionStrategy', 'sstable_size_in_mb': 'big'}", "big is not a parsable int (base10) for sstable_size_in_mb"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'WEEKS'}", "WEEKS is not valid for compaction_window_unit"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_size': 0}", "0 must be greater than 1 for compaction_window_size"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'timestamp_resolution': 'DAYS'}", "DAYS is not valid for timestamp_resolution"),
        ("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = {'class': 'SizeTieredCompactionStrategy', 'min_threshold': 1}", "Min compaction threshold cannot be less than 2 (got 1)"),
    ];
    for (cql, want) in bad {
        assert_eq!(err(&mut s, cql), want, "{cql}");
    }
    let stmt = gyre_cql::parse_statement("CREATE TABLE t (k int PRIMARY KEY)").unwrap();
    assert_eq!(
        statement_to_change(&stmt, &s, None)
            .unwrap_err()
            .to_string(),
        "No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename"
    );
}

#[test]
fn alter_and_drop_table() {
    let mut s = with_ks();
    run(
        &mut s,
        2,
        "CREATE TABLE t (k int, c int, v text, PRIMARY KEY (k, c))",
    )
    .unwrap();
    run(&mut s, 3, "ALTER TABLE t ADD (w int, st text static)").unwrap();
    assert_eq!(
        s.table("ks", "t").unwrap().column("st").unwrap().kind,
        ColumnKind::Static
    );
    assert!(!run(&mut s, 4, "ALTER TABLE t ADD IF NOT EXISTS w int").unwrap());
    assert_eq!(
        err(&mut s, "ALTER TABLE t ADD w int"),
        "Invalid column name w because it conflicts with an existing column"
    );
    run(&mut s, 4, "ALTER TABLE t DROP w").unwrap();
    assert!(s.table("ks", "t").unwrap().column("w").is_none());
    assert_eq!(
        err(&mut s, "ALTER TABLE t DROP w"),
        "Column w was not found in table t"
    );
    assert!(!run(&mut s, 5, "ALTER TABLE t DROP IF EXISTS w").unwrap());
    assert_eq!(
        err(&mut s, "ALTER TABLE t DROP c"),
        "Cannot drop PRIMARY KEY column c"
    );
    run(&mut s, 5, "ALTER TABLE t RENAME c TO cc").unwrap();
    assert_eq!(
        s.table("ks", "t").unwrap().column("cc").unwrap().kind,
        ColumnKind::Clustering(0, ClusteringOrder::Asc)
    );
    assert_eq!(
        err(&mut s, "ALTER TABLE t RENAME v TO vv"),
        "Cannot rename non PRIMARY KEY column v"
    );
    run(
        &mut s,
        6,
        "ALTER TABLE t WITH default_time_to_live = 100 AND comment = 'x'",
    )
    .unwrap();
    let t = s.table("ks", "t").unwrap();
    assert_eq!(t.options.default_time_to_live, 100);
    assert_eq!(t.options.comment, "x");
    assert_eq!(
        err(&mut s, "ALTER TABLE t ALTER v TYPE blob"),
        "Altering column types is no longer supported"
    );
    assert_eq!(
        err(&mut s, "ALTER TABLE t ADD cnt counter"),
        "Cannot add a counter column (cnt) in a non counter column family"
    );
    assert_eq!(
        err(&mut s, "ALTER TABLE nope ADD x int"),
        "Table 'ks.nope' doesn't exist"
    );
    assert!(!run(&mut s, 7, "ALTER TABLE IF EXISTS nope ADD x int").unwrap());

    let id = s.table("ks", "t").unwrap().id;
    run(&mut s, 8, "DROP TABLE t").unwrap();
    assert!(s.table("ks", "t").is_none());
    assert_eq!(err(&mut s, "DROP TABLE t"), "Table 'ks.t' doesn't exist");
    assert!(!run(&mut s, 9, "DROP TABLE IF EXISTS t").unwrap());
    run(&mut s, 10, "CREATE TABLE t (k int PRIMARY KEY)").unwrap();
    let t = s.table("ks", "t").unwrap();
    assert_ne!(t.id, id, "re-created table gets a new id");
    assert_eq!(t.columns.len(), 1, "old columns do not come back");

    // Dropping the keyspace takes its tables; re-creating it brings none back.
    run(&mut s, 11, "DROP KEYSPACE ks").unwrap();
    run(&mut s, 12, "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}").unwrap();
    assert_eq!(s.tables_in("ks").count(), 0);
}

#[test]
fn query_time_lookups_and_timestamps() {
    let mut s = with_ks();
    run(&mut s, 100, "CREATE TABLE t (k int PRIMARY KEY)").unwrap();
    assert_eq!(s.require_table("ks", "t").unwrap().name, "t");
    assert_eq!(
        s.require_table("ks", "nope").unwrap_err().to_string(),
        "unconfigured table nope"
    );
    assert_eq!(
        s.require_table("zz", "t").unwrap_err().to_string(),
        "Keyspace 'zz' does not exist"
    );
    assert!(s.require_keyspace("system").is_ok());
    assert_eq!(
        s.next_timestamp(50),
        101,
        "a lagging clock still moves forward"
    );
    assert_eq!(s.next_timestamp(500), 500);
    // A change timestamped after the drop it follows is visible.
    let ts = s.next_timestamp(0);
    run(&mut s, ts, "DROP TABLE t").unwrap();
    let ts = s.next_timestamp(0);
    run(&mut s, ts, "CREATE TABLE t (k text PRIMARY KEY)").unwrap();
    assert_eq!(
        s.table("ks", "t").unwrap().columns[0].ty,
        gyre_cql::CqlType::Text
    );
}

#[test]
fn changes_older_than_a_drop_are_rejected_not_lost() {
    let mut s = with_ks();
    run(&mut s, 10, "CREATE TABLE t (k int PRIMARY KEY)").unwrap();
    run(&mut s, 20, "DROP TABLE t").unwrap();
    assert!(run(&mut s, 20, "CREATE TABLE t (k int PRIMARY KEY)").is_err());
    run(&mut s, 30, "DROP KEYSPACE ks").unwrap();
    assert!(run(&mut s, 25, "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}").is_err());
    assert!(s.keyspace("ks").is_none());
}

#[test]
fn describe_output_parses_back_to_the_same_definition() {
    let mut s = with_ks();
    let tables = [
        "CREATE TABLE a (k int PRIMARY KEY, v text)",
        "CREATE TABLE b (x int, y text, c1 timeuuid, c2 bigint, s blob STATIC, \"Quoted\" frozen<map<text, int>>, PRIMARY KEY ((x, y), c1, c2)) WITH CLUSTERING ORDER BY (c1 DESC, c2 ASC) AND comment = 'it''s' AND compaction = {'class': 'LeveledCompactionStrategy', 'sstable_size_in_mb': 160} AND read_repair = 'NONE' AND default_time_to_live = 60",
        "CREATE TABLE c (k int, c int, PRIMARY KEY (k, c))",
    ];
    for (i, cql) in tables.iter().enumerate() {
        run(&mut s, 10 + i as i64, cql).unwrap();
    }
    let ks_cql = s.keyspace("ks").unwrap().to_cql();
    let mut other = Schema::new();
    run(&mut other, 1, &ks_cql).unwrap();
    assert_eq!(other.keyspace("ks"), s.keyspace("ks"), "{ks_cql}");
    for name in ["a", "b", "c"] {
        let t = s.table("ks", name).unwrap();
        let cql = t.to_cql();
        run(&mut other, 100, &cql).unwrap_or_else(|e| panic!("{e}: {cql}"));
        let back = other.table("ks", name).unwrap();
        assert_eq!(back.columns, t.columns, "{cql}");
        assert_eq!(back.options, t.options, "{cql}");
    }
}

#[test]
fn dropped_columns_are_remembered() {
    let mut s = with_ks();
    run(
        &mut s,
        2,
        "CREATE TABLE t (k int PRIMARY KEY, v int, w text)",
    )
    .unwrap();
    run(&mut s, 3, "ALTER TABLE t DROP v").unwrap();
    let d = &s.table("ks", "t").unwrap().dropped_columns["v"];
    assert_eq!((d.ty.clone(), d.dropped_at), (gyre_cql::CqlType::Int, 3));
    assert_eq!(
        err(&mut s, "ALTER TABLE t ADD v text"),
        "Cannot re-add previously dropped column 'v' of type text, incompatible with previous type int"
    );
    run(&mut s, 4, "ALTER TABLE t ADD v int").unwrap();
    let t = s.table("ks", "t").unwrap();
    assert!(t.column("v").is_some());
    assert_eq!(
        t.dropped_columns["v"].dropped_at, 3,
        "data before the drop stays dead"
    );
    // A re-created table starts with no history.
    run(&mut s, 5, "DROP TABLE t").unwrap();
    run(&mut s, 6, "CREATE TABLE t (k int PRIMARY KEY, v text)").unwrap();
    assert!(s.table("ks", "t").unwrap().dropped_columns.is_empty());
}

#[test]
fn alter_table_switches_the_compaction_strategy() {
    let mut s = with_ks();
    run(&mut s, 2, "CREATE TABLE t (k int PRIMARY KEY, v int)").unwrap();
    let st = |s: &Schema| s.table("ks", "t").unwrap().storage_options().compaction;
    assert!(matches!(
        st(&s),
        gyre_storage::CompactionOptions::SizeTiered(_)
    ));
    run(&mut s, 3, "ALTER TABLE t WITH compaction = {'class': 'LeveledCompactionStrategy', 'sstable_size_in_mb': 2, 'fanout_size': 4}").unwrap();
    assert_eq!(
        st(&s),
        gyre_storage::CompactionOptions::Leveled(gyre_storage::LeveledOptions {
            sstable_size_bytes: 2 << 20,
            fanout: 4,
            ..Default::default()
        })
    );
    run(&mut s, 4, "ALTER TABLE t WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': 6}").unwrap();
    match st(&s) {
        gyre_storage::CompactionOptions::TimeWindow(o) => assert_eq!(o.window_seconds, 6 * 3600),
        other => panic!("time window expected: {other:?}"),
    }
    run(&mut s, 5, "ALTER TABLE t WITH compaction = {'class': 'SizeTieredCompactionStrategy', 'enabled': 'false'}").unwrap();
    assert_eq!(st(&s), gyre_storage::CompactionOptions::None);
    assert_eq!(
        err(&mut s, "ALTER TABLE t WITH compaction = {'class': 'DateTieredCompactionStrategy'}"),
        "Unable to find compaction strategy class 'org.apache.cassandra.db.compaction.DateTieredCompactionStrategy'"
    );
}

/// Runs one statement in a cluster of datacenters `dcs`.
fn run_in(schema: &mut Schema, ts: i64, cql: &str, dcs: &[&str]) -> Result<bool, SchemaError> {
    let stmt = gyre_cql::parse_statement(cql).unwrap();
    let dcs: Vec<String> = dcs.iter().map(|d| d.to_string()).collect();
    match gyre_schema::statement_to_change_in(&stmt, schema, Some("ks"), &dcs)? {
        Some(change) => {
            schema.apply_change(change, ts)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn nts(schema: &Schema, ks: &str) -> Vec<(String, u32)> {
    match &schema.keyspace(ks).unwrap().replication {
        Replication::NetworkTopology(m) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        other => panic!("{other:?}"),
    }
}

fn dcs(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(d, n)| (d.to_string(), *n)).collect()
}

/// Cassandra 4.0+: NetworkTopologyStrategy's `replication_factor` is the
/// factor of every datacenter not named; ALTER keeps the datacenters the
/// keyspace has; 0 drops a datacenter; DESCRIBE prints the expanded map,
/// which reads back to the same keyspace.
#[test]
fn nts_replication_factor_expands_to_every_datacenter() {
    let mut s = Schema::new();
    let two = ["dc1", "dc2"];
    run_in(&mut s, 1, "CREATE KEYSPACE a WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}", &two).unwrap();
    assert_eq!(nts(&s, "a"), dcs(&[("dc1", 3), ("dc2", 3)]));
    let described = s.keyspace("a").unwrap().to_cql();
    assert_eq!(
        described,
        "CREATE KEYSPACE a WITH replication = {'class': 'org.apache.cassandra.locator.NetworkTopologyStrategy', 'dc1': '3', 'dc2': '3'} AND durable_writes = true;"
    );
    let mut other = Schema::new();
    run_in(&mut other, 1, &described, &["dc1"]).unwrap();
    assert_eq!(other.keyspace("a"), s.keyspace("a"));

    // Explicit datacenters win; 0 removes one.
    run_in(&mut s, 2, "CREATE KEYSPACE b WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 2, 'dc2': 1}", &two).unwrap();
    assert_eq!(nts(&s, "b"), dcs(&[("dc1", 2), ("dc2", 1)]));
    run_in(&mut s, 3, "CREATE KEYSPACE c WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 2, 'dc2': 0}", &two).unwrap();
    assert_eq!(nts(&s, "c"), dcs(&[("dc1", 2)]));

    // ALTER with replication_factor: existing datacenters keep their
    // factors, new ones get it.
    run_in(&mut s, 4, "ALTER KEYSPACE c WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 1}", &["dc1", "dc2", "dc3"]).unwrap();
    assert_eq!(nts(&s, "c"), dcs(&[("dc1", 2), ("dc2", 1), ("dc3", 1)]));
    // ALTER naming datacenters sets exactly those.
    run_in(
        &mut s,
        5,
        "ALTER KEYSPACE c WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3}",
        &two,
    )
    .unwrap();
    assert_eq!(nts(&s, "c"), dcs(&[("dc1", 3)]));
    // From SimpleStrategy, a bare class keeps the factor.
    run_in(
        &mut s,
        6,
        "CREATE KEYSPACE d WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}",
        &two,
    )
    .unwrap();
    run_in(
        &mut s,
        7,
        "ALTER KEYSPACE d WITH replication = {'class': 'NetworkTopologyStrategy'}",
        &two,
    )
    .unwrap();
    assert_eq!(nts(&s, "d"), dcs(&[("dc1", 2), ("dc2", 2)]));

    // Without a topology (a lone schema) the factor cannot be expanded.
    assert!(err(&mut s, "CREATE KEYSPACE e WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}")
        .contains("give a replication factor per datacenter"));
    assert_eq!(
        run_in(&mut s, 8, "CREATE KEYSPACE e WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 'x'}", &two)
            .unwrap_err()
            .to_string(),
        "Replication factor must be numeric; found x"
    );
}

/// Cassandra: `compression = {}` and `{'enabled': 'false'}` turn
/// compression off (described as the latter); other options next to
/// `'enabled': 'false'` are refused.
#[test]
fn empty_or_disabled_compression_means_none() {
    let mut s = with_ks();
    run(
        &mut s,
        2,
        "CREATE TABLE a (k int PRIMARY KEY) WITH compression = {}",
    )
    .unwrap();
    run(
        &mut s,
        3,
        "CREATE TABLE b (k int PRIMARY KEY) WITH compression = {'enabled': 'false'}",
    )
    .unwrap();
    run(
        &mut s,
        4,
        "CREATE TABLE c (k int PRIMARY KEY) WITH compression = {'enabled': false}",
    )
    .unwrap();
    for t in ["a", "b", "c"] {
        let def = s.table("ks", t).unwrap();
        assert_eq!(
            def.options.compression.get("enabled").map(String::as_str),
            Some("false"),
            "{t}"
        );
        assert_eq!(def.options.compression.len(), 1, "{t}");
        assert_eq!(
            def.storage_options().compression,
            gyre_storage::Compression::None
        );
        assert!(
            def.to_cql().contains("compression = {'enabled': 'false'}"),
            "{}",
            def.to_cql()
        );
    }
    run(
        &mut s,
        5,
        "ALTER TABLE a WITH compression = {'class': 'LZ4Compressor'}",
    )
    .unwrap();
    assert_eq!(
        s.table("ks", "a").unwrap().storage_options().compression,
        gyre_storage::Compression::Lz4
    );
    run(&mut s, 6, "ALTER TABLE a WITH compression = {}").unwrap();
    assert_eq!(
        s.table("ks", "a").unwrap().storage_options().compression,
        gyre_storage::Compression::None
    );
    assert_eq!(
        err(&mut s, "CREATE TABLE d (k int PRIMARY KEY) WITH compression = {'enabled': 'false', 'chunk_length_in_kb': 16}"),
        "If the 'enabled' option is set to false no other options must be specified"
    );
    assert_eq!(
        err(
            &mut s,
            "CREATE TABLE d (k int PRIMARY KEY) WITH compression = {'chunk_length_in_kb': 16}"
        ),
        "Missing sub-option 'class' for the 'compression' option."
    );
}

#[test]
fn vector_elements_are_frozen_and_checked() {
    let mut s = with_ks();
    run(
        &mut s,
        2,
        "CREATE TABLE v (k int PRIMARY KEY, f vector<float, 3>, t vector<text, 2>, l vector<list<int>, 3>, m vector<map<text, int>, 1>)",
    )
    .unwrap();
    let t = s.table("ks", "v").unwrap();
    let ty = |c: &str| t.column(c).unwrap().ty.to_string();
    assert_eq!(ty("f"), "vector<float, 3>");
    assert_eq!(ty("t"), "vector<text, 2>");
    assert_eq!(ty("l"), "vector<frozen<list<int>>, 3>");
    assert_eq!(ty("m"), "vector<frozen<map<text, int>>, 1>");
    assert_eq!(
        err(
            &mut s,
            "CREATE TABLE w (k int PRIMARY KEY, v vector<int, 0>)"
        ),
        "vectors may only have positive dimensions"
    );
    assert_eq!(
        err(
            &mut s,
            "CREATE TABLE w (k int PRIMARY KEY, v vector<counter, 2>)"
        ),
        "Counters are not allowed inside collections"
    );
    assert_eq!(
        err(&mut s, "CREATE TABLE w (k vector<int, 2> PRIMARY KEY)"),
        "vector type is not supported for PRIMARY KEY column 'k'"
    );
}
