//! Snapshots on a real node through `gyrectl`: a snapshot by tag (an
//! existing tag refused), `auto_snapshot` before DROP TABLE and TRUNCATE,
//! and a restore after a DROP: the table re-created, the snapshot loaded
//! with `gyrectl refresh` without a restart, every row back (with the
//! table's index components, so its secondary index answers). Also the
//! compaction option through CQL: an unknown strategy or option refused
//! with Cassandra's message, ALTER TABLE switching strategy.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gyre_protocol::Consistency;
use gyre_tests::cluster::TestCluster;
use gyre_tests::cql_client::{CqlClient, Outcome};

const ROWS: usize = 300;

fn exec(c: &mut CqlClient, cql: &str) -> Outcome {
    c.query(cql, Consistency::One).unwrap().ok()
}

fn error(c: &mut CqlClient, cql: &str) -> String {
    match c.query(cql, Consistency::One).unwrap() {
        Outcome::Error(e) => e.message,
        other => panic!("{cql}: expected an error, got {other:?}"),
    }
}

fn count(c: &mut CqlClient) -> usize {
    exec(c, "SELECT k FROM snap.t").rows().len()
}

fn snapshots(cluster: &TestCluster) -> Vec<gyre_storage::SnapshotInfo> {
    let body =
        gyre_node::http::get(cluster.admin(1), "/snapshots", Duration::from_secs(10)).unwrap();
    serde_json::from_str(&body).unwrap()
}

#[test]
fn snapshot_drop_and_restore_without_restart() {
    let cluster = TestCluster::new(1, 60);
    cluster.up();
    let host = "127.0.60.1";
    let mut c = CqlClient::connect(cluster.cql(1)).unwrap();
    exec(
        &mut c,
        "CREATE KEYSPACE snap WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    );
    exec(
        &mut c,
        "CREATE TABLE snap.t (k int PRIMARY KEY, v text) WITH compaction = {'class': 'LeveledCompactionStrategy', 'sstable_size_in_mb': 1}",
    );
    // The compaction option: refused with Cassandra's messages, switched
    // on the live table.
    assert_eq!(
        error(&mut c, "ALTER TABLE snap.t WITH compaction = {'class': 'NoSuchStrategy'}"),
        "Unable to find compaction strategy class 'org.apache.cassandra.db.compaction.NoSuchStrategy'"
    );
    assert_eq!(
        error(&mut c, "ALTER TABLE snap.t WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'fanout_size': 3}"),
        "Properties specified [fanout_size] are not understood by TimeWindowCompactionStrategy"
    );
    for i in 0..ROWS {
        exec(
            &mut c,
            &format!("INSERT INTO snap.t (k, v) VALUES ({i}, 'value {i}')"),
        );
        if i == ROWS / 2 {
            exec(
                &mut c,
                "ALTER TABLE snap.t WITH compaction = {'class': 'SizeTieredCompactionStrategy', 'min_threshold': 2}",
            );
        }
    }
    assert_eq!(count(&mut c), ROWS);
    exec(&mut c, "CREATE INDEX by_v ON snap.t (v)");

    let out = cluster.gyrectl_ok(&["snapshot", "snap.t", "-t", "before-drop", "--host", host]);
    assert!(
        out.contains("snapshot before-drop of 1 table(s) taken"),
        "{out}"
    );
    // The SSTables' index components are in it too.
    let taken = snapshots(&cluster);
    let files = &taken.iter().find(|s| s.tag == "before-drop").unwrap().files;
    assert!(
        files.iter().any(|f| f.ends_with(".db")) && files.iter().any(|f| f.ends_with(".sai")),
        "{files:?}"
    );
    let again = cluster.gyrectl(&["snapshot", "snap", "-t", "before-drop", "--host", host]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("Snapshot before-drop already exists."),
        "{again:?}"
    );
    let bad = cluster.gyrectl(&["snapshot", "snap.t", "-t", "../escape", "--host", host]);
    assert!(!bad.status.success());

    exec(&mut c, "DROP TABLE snap.t");
    let tags: Vec<String> = snapshots(&cluster).into_iter().map(|s| s.tag).collect();
    assert!(tags.iter().any(|t| t == "before-drop"), "{tags:?}");
    assert!(
        tags.iter()
            .any(|t| t.starts_with("dropped-") && t.ends_with("-snap.t")),
        "auto_snapshot before DROP: {tags:?}"
    );
    let listed = cluster.gyrectl_ok(&["listsnapshots", "--host", host]);
    assert!(
        listed.contains("before-drop") && listed.contains("snap.t"),
        "{listed}"
    );

    // Restore: re-create the table, load the snapshot, live.
    exec(&mut c, "CREATE TABLE snap.t (k int PRIMARY KEY, v text)");
    exec(&mut c, "CREATE INDEX by_v ON snap.t (v)");
    assert_eq!(count(&mut c), 0);
    let out = cluster.gyrectl_ok(&[
        "refresh",
        "snap.t",
        "--from-snapshot",
        "before-drop",
        "--host",
        host,
    ]);
    assert!(out.contains("imported"), "{out}");
    assert_eq!(count(&mut c), ROWS, "every row is back");
    let row = exec(&mut c, "SELECT v FROM snap.t WHERE k = 7").rows();
    assert_eq!(row[0][0].as_deref(), Some(&b"value 7"[..]));
    // The index answers over the restored SSTables (segments loaded from
    // the restored components).
    let row = exec(&mut c, "SELECT k FROM snap.t WHERE v = 'value 7'").rows();
    assert_eq!(row.len(), 1);
    assert_eq!(row[0][0].as_deref(), Some(&7i32.to_be_bytes()[..]));

    // TRUNCATE snapshots first too; clearing frees them.
    exec(&mut c, "TRUNCATE snap.t");
    assert_eq!(count(&mut c), 0);
    assert!(snapshots(&cluster)
        .iter()
        .any(|s| s.tag.starts_with("truncated-")));
    let cleared = cluster.gyrectl(&["clearsnapshot", "--host", host]);
    assert!(!cleared.status.success(), "clearing needs a tag or --all");
    cluster.gyrectl_ok(&["clearsnapshot", "-t", "before-drop", "--host", host]);
    assert!(!snapshots(&cluster).iter().any(|s| s.tag == "before-drop"));
    cluster.gyrectl_ok(&["clearsnapshot", "--all", "--host", host]);
    assert!(snapshots(&cluster).is_empty());
}
