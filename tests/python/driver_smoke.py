"""Drives a single Gyre node with the DataStax Python driver.

Usage: driver_smoke.py HOST PORT. Exits non-zero (with a traceback) on the
first failed step; prints one line per step so failures show how far it got.
"""

import datetime
import decimal
import sys
import uuid

from cassandra import InvalidRequest
from cassandra.cluster import Cluster
from cassandra.protocol import SyntaxException
from cassandra.query import BatchStatement, SimpleStatement


def step(msg):
    print("step:", msg, flush=True)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    step("connect")
    cluster = Cluster([host], port=port)
    session = cluster.connect()
    print("protocol version", cluster.protocol_version)

    row = session.execute("SELECT cluster_name, release_version FROM system.local").one()
    print("system.local:", row.cluster_name, row.release_version)
    assert row.release_version == "5.0.0", row

    step("create keyspace and table")
    session.execute(
        "CREATE KEYSPACE ks WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute(
        "CREATE TABLE ks.t (k int, c int, v text, PRIMARY KEY (k, c))"
    )
    session.execute(
        "CREATE TABLE ks.types (k text PRIMARY KEY, i int, b bigint, d double, f float, "
        "bo boolean, u uuid, bl blob, ts timestamp, de decimal, l list<int>, "
        "s set<text>, m map<text, int>)"
    )
    assert cluster.control_connection.wait_for_schema_agreement(wait_time=10), "no schema agreement"
    meta = cluster.metadata.keyspaces["ks"].tables["t"]
    assert [c.name for c in meta.partition_key] == ["k"], meta.partition_key
    assert [c.name for c in meta.clustering_key] == ["c"], meta.clustering_key
    assert "v" in meta.columns, meta.columns

    session.set_keyspace("ks")

    step("simple inserts")
    for c in range(0, 400):
        session.execute("INSERT INTO t (k, c, v) VALUES (%s, %s, %s)", (1, c, "simple-%d" % c))

    step("prepared inserts")
    ins = session.prepare("INSERT INTO t (k, c, v) VALUES (?, ?, ?)")
    for c in range(400, 800):
        session.execute(ins, (1, c, "prepared-%d" % c))

    step("batch inserts")
    for start in range(800, 1000, 50):
        batch = BatchStatement()
        for c in range(start, start + 50):
            if c % 2:
                batch.add(ins, (1, c, "batch-%d" % c))
            else:
                batch.add(SimpleStatement("INSERT INTO t (k, c, v) VALUES (%s, %s, %s)"),
                          (1, c, "batch-%d" % c))
        session.execute(batch)

    step("paged read of 1000 rows, fetch_size 100")
    stmt = SimpleStatement("SELECT c, v FROM t WHERE k = 1", fetch_size=100)
    result = session.execute(stmt)
    seen = [r.c for r in result.current_rows]
    pages = 1
    while result.has_more_pages:
        result.fetch_next_page()
        seen.extend(r.c for r in result.current_rows)
        pages += 1
    assert seen == list(range(1000)), "got %d rows" % len(seen)
    assert pages >= 10, pages
    print("rows", len(seen), "pages", pages)

    step("manual paging with paging_state")
    first = session.execute(SimpleStatement("SELECT c FROM t WHERE k = 1", fetch_size=100))
    page1 = first.current_rows
    assert len(page1) == 100 and first.paging_state is not None
    second = session.execute(SimpleStatement("SELECT c FROM t WHERE k = 1", fetch_size=100),
                             paging_state=first.paging_state)
    assert [r.c for r in second.current_rows] == list(range(100, 200))

    step("prepared select")
    sel = session.prepare("SELECT v FROM t WHERE k = ? AND c = ?")
    assert session.execute(sel, (1, 450)).one().v == "prepared-450"
    assert session.execute(sel, (1, 7)).one().v == "simple-7"
    assert session.execute(sel, (1, 801)).one().v == "batch-801"

    step("prepared system query, named markers, routing indexes")
    assert ins.routing_key_indexes == [0], ins.routing_key_indexes
    ps = session.prepare("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?")
    names = sorted(r.table_name for r in session.execute(ps, ("ks",)))
    assert names == ["t", "types"], names
    named = session.prepare("SELECT v FROM t WHERE c = :cc AND k = :kk")
    assert named.routing_key_indexes == [1], named.routing_key_indexes
    assert session.execute(named, {"kk": 1, "cc": 3}).one().v == "simple-3"

    step("prepared statements after ALTER TABLE are re-prepared")
    session.execute("CREATE TABLE ks.evolving (k int PRIMARY KEY, v text)")
    assert cluster.control_connection.wait_for_schema_agreement(wait_time=10), "no schema agreement"
    star = session.prepare("SELECT * FROM evolving WHERE k = ?")
    put = session.prepare("INSERT INTO evolving (k, v) VALUES (?, ?)")
    session.execute(put, (1, "one"))
    assert list(session.execute(star, (1,)).one()._fields) == ["k", "v"]
    session.execute("ALTER TABLE ks.evolving ADD extra int")
    session.execute("INSERT INTO evolving (k, v, extra) VALUES (1, 'one', 7)")
    # The server answers UNPREPARED (the table changed); the driver
    # re-prepares and decodes the row with the new result metadata.
    r = session.execute(star, (1,)).one()
    assert list(r._fields) == ["k", "extra", "v"], r._fields
    assert (r.k, r.extra, r.v) == (1, 7, "one"), r
    session.execute(put, (2, "two"))
    assert session.execute(star, (2,)).one().v == "two"

    step("PREPARE refuses an INSERT without its whole primary key")
    for bad, text in [
        ("INSERT INTO t (c, v) VALUES (?, ?)", "Some partition key parts are missing: k"),
        ("INSERT INTO t (k, v) VALUES (?, ?)", "Some clustering keys are missing: c"),
        ("INSERT INTO t (k, c, v) VALUES (?, ?, ?, ?)", "Unmatched column names/values"),
    ]:
        try:
            session.prepare(bad)
            raise AssertionError("prepared: " + bad)
        except InvalidRequest as e:
            assert text in str(e), e

    step("types round trip")
    u = uuid.uuid4()
    ts = datetime.datetime(2024, 5, 17, 12, 34, 56, 789000)
    values = ("key", 42, -(2 ** 40), 3.25, 1.5, True, u, b"\x00\xffab", ts,
              decimal.Decimal("12.345"), [1, 2, 3], {"a", "b"}, {"x": 1, "y": 2})
    session.execute(
        "INSERT INTO types (k, i, b, d, f, bo, u, bl, ts, de, l, s, m) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", values)
    p = session.prepare(
        "INSERT INTO types (k, i, b, d, f, bo, u, bl, ts, de, l, s, m) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    session.execute(p, ("key2",) + values[1:])
    for k in ("key", "key2"):
        r = session.execute("SELECT * FROM types WHERE k = %s", (k,)).one()
        got = (r.k, r.i, r.b, r.d, r.f, r.bo, r.u, r.bl, r.ts, r.de, r.l, r.s, r.m)
        expected = (k,) + values[1:]
        assert got[0] == expected[0] and got[1:8] == expected[1:8], (got, expected)
        assert got[8] == ts, got[8]
        assert got[9] == expected[9], got[9]
        assert list(got[10]) == [1, 2, 3], got[10]
        assert set(got[11]) == {"a", "b"}, got[11]
        assert dict(got[12]) == {"x": 1, "y": 2}, got[12]
    nulls = session.execute("SELECT i FROM types WHERE k = 'nope'").one()
    assert nulls is None

    step("errors")
    try:
        session.execute("SELEC * FROM t")
        raise AssertionError("syntax error not raised")
    except SyntaxException as e:
        print("syntax error:", e)
    try:
        session.execute("SELECT * FROM ks.nope")
        raise AssertionError("unknown table not rejected")
    except InvalidRequest as e:
        print("invalid:", e)

    cluster.shutdown()
    print("OK")


if __name__ == "__main__":
    main()
