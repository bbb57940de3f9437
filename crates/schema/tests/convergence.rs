//! Concurrent schema changes converge: every node that merges the same
//! mutations, in any order, ends with the same rows and version.
#![allow(clippy::unwrap_used)]

use gyre_schema::{statement_to_change, Schema, SchemaRows};

fn change(schema: &Schema, cql: &str) -> gyre_schema::SchemaChange {
    let stmt = gyre_cql::parse_statement(cql).unwrap();
    statement_to_change(&stmt, schema, Some("ks"))
        .unwrap()
        .unwrap()
}

/// The mutation a node holding `base` makes when it runs `cql` at `ts`.
fn mutation(base: &Schema, ts: i64, cql: &str) -> SchemaRows {
    let mut node = base.clone();
    node.apply_change(change(base, cql), ts).unwrap()
}

fn base() -> Schema {
    let mut s = Schema::new();
    s.apply_change(
        change(&s, "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"),
        1,
    )
    .unwrap();
    s.apply_change(
        change(
            &s,
            "CREATE TABLE t (k int, c int, v int, PRIMARY KEY (k, c))",
        ),
        2,
    )
    .unwrap();
    s
}

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

fn check_all_orders(base: &Schema, mutations: &[SchemaRows]) -> Schema {
    let mut result: Option<Schema> = None;
    for order in permutations(mutations) {
        let mut node = base.clone();
        for m in order {
            node.merge(m);
        }
        // Merging everything again changes nothing.
        for m in mutations {
            assert!(!node.merge(m.clone()));
        }
        match &result {
            None => result = Some(node),
            Some(r) => {
                assert_eq!(r.version(), node.version());
                assert_eq!(r.rows(), node.rows());
                assert_eq!(r.tables(), node.tables());
                assert_eq!(r.keyspaces(), node.keyspaces());
            }
        }
    }
    result.unwrap()
}

#[test]
fn concurrent_conflicting_changes_converge_in_any_order() {
    let b = base();
    let ms = vec![
        mutation(&b, 10, "CREATE TABLE u (k int PRIMARY KEY, a text)"),
        mutation(&b, 10, "CREATE TABLE u (k text PRIMARY KEY, b int)"),
        mutation(&b, 11, "ALTER TABLE t ADD w text"),
        mutation(&b, 12, "ALTER TABLE t WITH comment = 'one'"),
        mutation(&b, 12, "ALTER TABLE t WITH comment = 'two'"),
        mutation(&b, 13, "ALTER KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"),
    ];
    let s = check_all_orders(&b, &ms);
    // Equal timestamps: the greater value wins, the same way everywhere.
    assert_eq!(s.table("ks", "t").unwrap().options.comment, "two");
    let u = s.table("ks", "u").unwrap();
    assert_eq!(
        u.columns.len(),
        2,
        "one incarnation's columns, not a mix: {u:?}"
    );
    assert!(s.table("ks", "t").unwrap().column("w").is_some());
}

#[test]
fn drops_race_with_creates_and_alters() {
    let b = base();
    let ms = vec![
        mutation(&b, 20, "DROP TABLE t"),
        mutation(&b, 21, "ALTER TABLE t ADD late int"),
        mutation(&b, 19, "ALTER TABLE t ADD early int"),
        mutation(&b, 25, "CREATE TABLE x (k int PRIMARY KEY)"),
        mutation(&b, 24, "DROP KEYSPACE ks"),
    ];
    let s = check_all_orders(&b, &ms);
    // The keyspace drop at 24 shadows everything older; the table created
    // at 25 survives in rows, but without a live keyspace row it is hidden.
    assert!(s.keyspace("ks").is_none());
    assert!(s.table("ks", "t").is_none());
    assert!(s.tables().is_empty());
}

#[test]
fn recreated_table_never_reuses_the_id() {
    let mut s = base();
    let old = s.table("ks", "t").unwrap().id;
    s.apply_change(change(&s, "DROP TABLE t"), 3).unwrap();
    let mut with_old_id = change(&s, "CREATE TABLE t (k int PRIMARY KEY)");
    if let gyre_schema::SchemaChange::CreateTable(def) = &mut with_old_id {
        def.id = old;
    }
    assert!(s.apply_change(with_old_id, 4).is_err());
    s.apply_change(change(&s, "CREATE TABLE t (k int PRIMARY KEY)"), 5)
        .unwrap();
    assert_ne!(s.table("ks", "t").unwrap().id, old);
}

#[test]
fn version_is_a_content_digest() {
    let a = base();
    let b = Schema::from_rows(a.rows().clone());
    assert_eq!(a.version(), b.version());
    assert_ne!(a.version(), Schema::new().version());
    let mut c = a.clone();
    c.apply_change(change(&c, "ALTER TABLE t ADD z int"), 3)
        .unwrap();
    assert_ne!(a.version(), c.version());
    // Stable across runs: a fixed schema has a fixed version.
    let mut rows = SchemaRows::default();
    rows.merge(a.rows().clone());
    assert_eq!(Schema::from_rows(rows).version(), a.version());
}

#[test]
fn diff_and_json_shipping() {
    let b = base();
    let mut mine = b.clone();
    mine.apply_change(change(&mine, "ALTER TABLE t ADD mine int"), 5)
        .unwrap();
    mine.apply_change(change(&mine, "CREATE TABLE other (k int PRIMARY KEY)"), 6)
        .unwrap();
    let mut theirs = b.clone();
    theirs
        .apply_change(change(&theirs, "ALTER TABLE t ADD theirs int"), 7)
        .unwrap();

    let diff = mine.rows().diff(theirs.rows());
    assert!(diff.partitions["ks"].rows.len() < mine.rows().partitions["ks"].rows.len());
    let json = serde_json::to_string(&diff).unwrap();
    let shipped: SchemaRows = serde_json::from_str(&json).unwrap();
    assert_eq!(shipped, diff);

    let mut via_diff = theirs.clone();
    via_diff.merge(shipped);
    let mut via_all = theirs.clone();
    via_all.merge(mine.rows().clone());
    assert_eq!(via_diff.version(), via_all.version());
    // And the other way round, both nodes agree.
    let mut back = mine.clone();
    back.merge(theirs.rows().diff(mine.rows()));
    assert_eq!(back.version(), via_all.version());
    let t = back.table("ks", "t").unwrap();
    assert!(t.column("mine").is_some() && t.column("theirs").is_some());
    assert!(theirs.rows().diff(theirs.rows()).is_empty());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Random changes made on random nodes at random times, then gossiped
    /// in random orders: every node ends with the same schema.
    #[test]
    fn random_histories_converge(
        ops in proptest::collection::vec((0usize..3, 0usize..8, 1i64..40), 1..12),
        seed in proptest::num::u64::ANY,
    ) {
        use rand::{seq::SliceRandom, SeedableRng};
        let cqls = [
            "CREATE TABLE IF NOT EXISTS a (k int PRIMARY KEY, v int)",
            "CREATE TABLE IF NOT EXISTS a (k text, c int, PRIMARY KEY (k, c))",
            "DROP TABLE IF EXISTS a",
            "ALTER TABLE IF EXISTS a WITH comment = 'c'",
            "ALTER TABLE IF EXISTS t ADD IF NOT EXISTS n int",
            "ALTER TABLE IF EXISTS t DROP IF EXISTS v",
            "DROP KEYSPACE IF EXISTS ks",
            "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 2}",
        ];
        let b = base();
        let mut nodes = vec![b.clone(), b.clone(), b];
        let mut all = Vec::new();
        for (node, op, ts) in ops {
            let stmt = gyre_cql::parse_statement(cqls[op]).unwrap();
            let s = &mut nodes[node];
            if let Ok(Some(c)) = statement_to_change(&stmt, s, Some("ks")) {
                if let Ok(m) = s.apply_change(c, ts) {
                    all.push(m);
                }
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for n in &mut nodes {
            let mut order = all.clone();
            order.shuffle(&mut rng);
            for m in order {
                n.merge(m);
            }
        }
        proptest::prop_assert_eq!(nodes[0].version(), nodes[1].version());
        proptest::prop_assert_eq!(nodes[1].version(), nodes[2].version());
        proptest::prop_assert_eq!(nodes[0].tables(), nodes[2].tables());
    }
}
