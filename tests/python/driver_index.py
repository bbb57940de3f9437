"""Secondary indexes through the DataStax Python driver on a real cluster.

Usage: driver_index.py HOST PORT PHASE STATE_FILE ADMIN[,ADMIN...]

  ADMIN: the nodes' admin endpoints (host:port), for /flush.
  PHASE "main": indexes of every kind (value, keys, values, entries, full) created and described (driver
    metadata, system_schema.indexes, DESCRIBE), bad input refused with
    Cassandra's messages; rows written at QUORUM, then every index queried
    (paged at QUORUM, LIMIT, AND, with a partition key) and compared with a
    client-side filter of what was written; updates, deletes and TTL
    expiry seen at once; an index created on a table that already holds
    rows (memtable and SSTables) answers like the filter once built; DROP
    INDEX brings back the ALLOW FILTERING error. Rows: GYRE_INDEX_ROWS
    (default 3000) for the pre-existing table.
  PHASE "churn": overwrites and deletes indexed values at QUORUM for a few
    seconds (the Rust test kills and restarts a node meanwhile), retrying
    each write with its own timestamp until acknowledged; saves the model.
  PHASE "verify": after the restart, queries by the index at QUORUM and
    at ALL must equal the model (no stale or missing entries).

Exits non-zero (with a traceback) on the first failed check.
"""

import json
import os
import sys
import time
import urllib.request

from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.cluster import Cluster, ExecutionProfile, EXEC_PROFILE_DEFAULT
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import SimpleStatement

FILTERING = "ALLOW FILTERING"


def step(msg):
    print("step:", msg, flush=True)


def connect(host, port):
    profile = ExecutionProfile(consistency_level=ConsistencyLevel.QUORUM, request_timeout=20)
    cluster = Cluster([host], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    return cluster, cluster.connect()


def flush(admins):
    for a in admins:
        # The admin endpoint takes JSON POSTs only.
        req = urllib.request.Request(
            "http://%s/flush" % a, data=b"{}", method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=60).read()


def rows_of(session, cql, params=(), fetch_size=100, cl=ConsistencyLevel.QUORUM):
    st = SimpleStatement(cql, fetch_size=fetch_size, consistency_level=cl)
    return list(session.execute(st, params))


def keys(rows):
    return sorted((r.k, r.c) for r in rows)


def expect_invalid(session, cql, needle):
    try:
        session.execute(cql)
    except InvalidRequest as e:
        assert needle in str(e), (cql, str(e), needle)
        return
    raise AssertionError("not refused: %s" % cql)


def until(what, fn, secs=60):
    deadline = time.time() + secs
    last = None
    while time.time() < deadline:
        try:
            if fn():
                return
        except Exception as e:  # noqa: BLE001 - polled until the deadline
            last = e
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s (last error: %r)" % (what, last))


def main_phase(cluster, s, admins):
    step("schema")
    s.execute("DROP KEYSPACE IF EXISTS ix")
    s.execute(
        "CREATE KEYSPACE ix WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    s.set_keyspace("ix")
    s.execute(
        "CREATE TABLE t (k int, c int, v text, n int, ts timestamp, l list<int>, st set<text>, "
        "m map<text, int>, f frozen<list<int>>, PRIMARY KEY (k, c))"
    )
    s.execute("CREATE TABLE single (k int PRIMARY KEY, v text)")
    for stmt in [
        "CREATE INDEX ON t (v)",
        "CREATE INDEX IF NOT EXISTS by_n ON t (n)",
        "CREATE CUSTOM INDEX by_ts ON t (ts) USING 'StorageAttachedIndex'",
        "CREATE INDEX by_l ON t (l)",
        "CREATE INDEX by_st ON t (values(st))",
        "CREATE INDEX by_mk ON t (keys(m))",
        "CREATE INDEX by_mv ON t (values(m))",
        "CREATE INDEX by_f ON t (full(f))",
        "CREATE INDEX by_me ON t (entries(m))",
    ]:
        s.execute(stmt)
    # IF NOT EXISTS on an existing name or target is no change.
    s.execute("CREATE INDEX IF NOT EXISTS by_n ON t (n)")
    s.execute("CREATE INDEX IF NOT EXISTS other ON t (n)")
    assert cluster.control_connection.wait_for_schema_agreement(wait_time=20)

    step("bad input")
    expect_invalid(s, "CREATE INDEX ON single (k)",
                   "Cannot create secondary index on the only partition key column k")
    expect_invalid(s, "CREATE INDEX by_n ON t (c)", "Index 'by_n' already exists")
    expect_invalid(s, "CREATE INDEX by_n ON single (v)", "Index 'by_n' already exists")
    expect_invalid(s, "CREATE INDEX dup ON t (n)", "Index dup is a duplicate of existing index by_n")
    expect_invalid(s, "CREATE INDEX ON t (keys(l))",
                   "Cannot create index on keys of column l with non-map type")
    expect_invalid(s, "CREATE INDEX ON t (full(l))",
                   "full() indexes can only be created on frozen collections")
    expect_invalid(s, "CREATE INDEX ON t (values(f))", "Cannot create values() index on frozen column f")
    expect_invalid(s, "CREATE INDEX ON t (nope)", "Column 'nope' doesn't exist")
    expect_invalid(s, "CREATE CUSTOM INDEX ON t (v) USING 'NoSuchIndex'",
                   "Unable to find custom indexer class 'NoSuchIndex'")
    expect_invalid(s, "CREATE CUSTOM INDEX ON t (v)", "Must specify index implementation via USING")
    expect_invalid(s, "DROP INDEX nope", "Index 'ix.nope' doesn't exist")
    expect_invalid(s, "ALTER TABLE t DROP n",
                   "Cannot drop column n because it has dependent secondary indexes (by_n)")
    s.execute("DROP INDEX IF EXISTS nope")

    key_index_checks(cluster, s, admins)

    step("metadata")
    cluster.refresh_schema_metadata()
    ks = cluster.metadata.keyspaces["ix"]
    names = sorted(ks.indexes)
    assert names == ["by_f", "by_l", "by_me", "by_mk", "by_mv", "by_n", "by_st", "by_ts",
                     "t_v_idx"], names
    idx = ks.tables["t"].indexes
    assert idx["by_mk"].index_options["target"] == "keys(m)", idx["by_mk"].index_options
    assert idx["by_l"].index_options["target"] == "values(l)", idx["by_l"].index_options
    assert idx["by_ts"].kind == "CUSTOM", idx["by_ts"].kind
    assert idx["by_n"].as_cql_query() == "CREATE INDEX by_n ON ix.t (n)", idx["by_n"].as_cql_query()
    rows = list(s.execute(
        "SELECT index_name, kind, options FROM system_schema.indexes WHERE keyspace_name = 'ix'"))
    assert len(rows) == 9, rows
    d = list(s.execute("DESCRIBE INDEX ix.by_f"))
    assert d[0].create_statement == "CREATE INDEX by_f ON ix.t (full(f));", d
    d = list(s.execute("DESCRIBE TABLE ix.t"))
    assert [r.type for r in d] == ["table"] + ["index"] * 9, [r.type for r in d]

    step("write rows at QUORUM")
    model = {}
    ins = s.prepare("INSERT INTO t (k, c, v, n, ts, l, st, m, f) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
    args = []
    for i in range(1500):
        k, c = i % 50, i
        row = dict(v="v%d" % (i % 7), n=i, ts=1_600_000_000_000 + i * 1000,
                   l=[i % 5, 100], st={"s%d" % (i % 3)}, m={"k%d" % (i % 4): i}, f=[i % 2])
        model[(k, c)] = row
        args.append((k, c, row["v"], row["n"], row["ts"], row["l"], row["st"], row["m"], row["f"]))
    for ok, res in execute_concurrent_with_args(s, ins, args, concurrency=32):
        assert ok, res

    def check(cql, pred, params=(), **kw):
        got = keys(rows_of(s, cql, params, **kw))
        want = sorted(kc for kc, r in model.items() if pred(kc, r))
        assert got == want, (cql, len(got), len(want))
        return len(got)

    step("query each index (paged at QUORUM)")
    print("v =", check("SELECT k, c FROM t WHERE v = 'v3'", lambda kc, r: r["v"] == "v3"))
    check("SELECT k, c FROM t WHERE n = 17", lambda kc, r: r["n"] == 17)
    check("SELECT k, c FROM t WHERE v IN ('v1', 'v6') AND n < 300",
          lambda kc, r: r["v"] in ("v1", "v6") and r["n"] < 300)
    check("SELECT k, c FROM t WHERE n > 1400", lambda kc, r: r["n"] > 1400)
    check("SELECT k, c FROM t WHERE n >= 100 AND n < 230", lambda kc, r: 100 <= r["n"] < 230)
    check("SELECT k, c FROM t WHERE ts <= 1600000050000", lambda kc, r: r["ts"] <= 1600000050000)
    check("SELECT k, c FROM t WHERE l CONTAINS 3", lambda kc, r: 3 in r["l"])
    check("SELECT k, c FROM t WHERE st CONTAINS 's1'", lambda kc, r: "s1" in r["st"])
    check("SELECT k, c FROM t WHERE m CONTAINS KEY 'k2'", lambda kc, r: "k2" in r["m"])
    check("SELECT k, c FROM t WHERE m CONTAINS 17", lambda kc, r: 17 in r["m"].values())
    check("SELECT k, c FROM t WHERE f = [1]", lambda kc, r: r["f"] == [1])
    check("SELECT k, c FROM t WHERE m['k2'] = 6", lambda kc, r: r["m"].get("k2") == 6)
    check("SELECT k, c FROM t WHERE m[%s] = %s", lambda kc, r: r["m"].get("k3") == 7, ("k3", 7))
    prepared = s.prepare("SELECT k, c FROM t WHERE m[?] = ? AND l CONTAINS ?")
    got = keys(s.execute(prepared, ("k1", 9, 4)))
    assert got == sorted(kc for kc, r in model.items()
                         if r["m"].get("k1") == 9 and 4 in r["l"]), got
    check("SELECT k, c FROM t WHERE v = 'v2' AND n > 700",
          lambda kc, r: r["v"] == "v2" and r["n"] > 700)
    check("SELECT k, c FROM t WHERE k = 4 AND v = 'v4'",
          lambda kc, r: kc[0] == 4 and r["v"] == "v4")
    check("SELECT k, c FROM t WHERE v = %s", lambda kc, r: r["v"] == "v5", ("v5",), fetch_size=7)
    limited = rows_of(s, "SELECT k, c FROM t WHERE v = 'v1' LIMIT 33", fetch_size=10)
    assert len(limited) == 33, len(limited)
    assert all(model[(r.k, r.c)]["v"] == "v1" for r in limited)
    # Not indexed: still needs ALLOW FILTERING, alone or with an indexed one.
    expect_invalid(s, "SELECT * FROM t WHERE c = 3 AND v = 'v3'", FILTERING)
    check("SELECT k, c FROM t WHERE c = 3 AND v = 'v3' ALLOW FILTERING",
          lambda kc, r: kc[1] == 3 and r["v"] == "v3")

    step("updates, deletes and TTL seen at once")
    s.execute("UPDATE t SET v = 'changed' WHERE k = 17 AND c = 17")
    model[(17, 17)]["v"] = "changed"
    check("SELECT k, c FROM t WHERE v = 'changed'", lambda kc, r: r["v"] == "changed")
    check("SELECT k, c FROM t WHERE v = 'v3'", lambda kc, r: r["v"] == "v3")
    s.execute("DELETE FROM t WHERE k = 3 AND c = 3")
    del model[(3, 3)]
    s.execute("DELETE v FROM t WHERE k = 10 AND c = 10")
    model[(10, 10)]["v"] = None
    s.execute("DELETE FROM t WHERE k = 24")
    for kc in [kc for kc in model if kc[0] == 24]:
        del model[kc]
    check("SELECT k, c FROM t WHERE v = 'v3'", lambda kc, r: r["v"] == "v3")
    check("SELECT k, c FROM t WHERE n < 40", lambda kc, r: r["n"] < 40)
    s.execute("UPDATE t SET l = l + [77] WHERE k = 5 AND c = 5")
    model[(5, 5)]["l"] = model[(5, 5)]["l"] + [77]
    check("SELECT k, c FROM t WHERE l CONTAINS 77", lambda kc, r: 77 in r["l"])
    s.execute("UPDATE t SET m = m - {'k1'} WHERE k = 1 AND c = 1")
    model[(1, 1)]["m"] = {}
    check("SELECT k, c FROM t WHERE m CONTAINS KEY 'k1'", lambda kc, r: "k1" in r["m"])
    s.execute("INSERT INTO t (k, c, v) VALUES (99, 1, 'short') USING TTL 2")
    assert keys(rows_of(s, "SELECT k, c FROM t WHERE v = 'short'")) == [(99, 1)]
    until("TTL expiry", lambda: rows_of(s, "SELECT k, c FROM t WHERE v = 'short'") == [], 30)

    step("index built on existing rows")
    n_pre = int(os.environ.get("GYRE_INDEX_ROWS", "3000"))
    s.execute("CREATE TABLE pre (k int, c int, v int, w text, PRIMARY KEY (k, c))")
    ins = s.prepare("INSERT INTO pre (k, c, v, w) VALUES (?, ?, ?, ?)")
    pre = {}
    args = []
    for i in range(n_pre):
        kc = (i % 500, i)
        pre[kc] = (i % 97, "w%d" % (i % 11))
        args.append((kc[0], kc[1], pre[kc][0], pre[kc][1]))
    half = len(args) // 2
    for ok, res in execute_concurrent_with_args(s, ins, args[:half], concurrency=64):
        assert ok, res
    flush(admins)  # half in SSTables, half in memtables
    for ok, res in execute_concurrent_with_args(s, ins, args[half:], concurrency=64):
        assert ok, res
    expect_invalid(s, "SELECT * FROM pre WHERE v = 5", FILTERING)
    s.execute("CREATE INDEX pre_v ON pre (v)")
    s.execute("CREATE CUSTOM INDEX pre_w ON pre (w) USING 'StorageAttachedIndex'")
    t0 = time.time()
    until("the build of pre_v and pre_w",
          lambda: rows_of(s, "SELECT k FROM pre WHERE v = 5 AND w = 'w5'") is not None, 120)
    print("built and queryable after %.2f s" % (time.time() - t0))
    for v in (0, 5, 96):
        got = sorted((r.k, r.c) for r in rows_of(s, "SELECT k, c FROM pre WHERE v = %s", (v,),
                                                  fetch_size=500))
        want = sorted(kc for kc, r in pre.items() if r[0] == v)
        assert got == want, (v, len(got), len(want))
    got = sorted((r.k, r.c) for r in rows_of(s, "SELECT k, c FROM pre WHERE v > 90 AND w = 'w3'",
                                              fetch_size=1000))
    want = sorted(kc for kc, r in pre.items() if r[0] > 90 and r[1] == "w3")
    assert got == want, (len(got), len(want))
    print("pre-existing rows:", n_pre, "checked")

    step("SAI text options")
    s.execute("CREATE TABLE names (k int PRIMARY KEY, exact text, folded text, num int)")
    s.execute("CREATE CUSTOM INDEX ON names (exact) USING 'StorageAttachedIndex'")
    s.execute("CREATE CUSTOM INDEX ON names (folded) USING 'StorageAttachedIndex' WITH OPTIONS = "
              "{'case_sensitive': 'false', 'normalize': 'true', 'ascii': 'true'}")
    assert cluster.control_connection.wait_for_schema_agreement(wait_time=20)
    expect_invalid(s, "CREATE CUSTOM INDEX ON names (num) USING 'StorageAttachedIndex' "
                   "WITH OPTIONS = {'case_sensitive': 'false'}", "only supported on text columns")
    words = ["Crème Brûlée", "CREME BRULEE", "cre\u0300me", "Zoë", "zoe", "other"]
    ins = s.prepare("INSERT INTO names (k, exact, folded) VALUES (?, ?, ?)")
    for i, w in enumerate(words[:3]):
        s.execute(ins, (i, w, w))
    flush(admins)  # some terms from SSTable segments, some from memtables
    for i, w in enumerate(words[3:], start=3):
        s.execute(ins, (i, w, w))
    got = sorted(r.k for r in rows_of(s, "SELECT k FROM names WHERE folded = %s", ("creme brulee",)))
    assert got == [0, 1], got
    got = sorted(r.k for r in rows_of(s, "SELECT k FROM names WHERE folded = %s", ("ZOE",)))
    assert got == [3, 4], got
    got = sorted(r.k for r in rows_of(s, "SELECT k FROM names WHERE folded = %s", ("crème",)))
    assert got == [2], got  # 'cre' + combining grave, normalised and folded
    got = sorted(r.k for r in rows_of(s, "SELECT k FROM names WHERE exact = %s", ("Crème Brûlée",)))
    assert got == [0], got  # the default index is exact
    assert rows_of(s, "SELECT k FROM names WHERE exact = %s", ("creme brulee",)) == []
    s.execute("DROP TABLE names")

    step("drop index")
    s.execute("DROP INDEX pre_v")
    expect_invalid(s, "SELECT * FROM pre WHERE v = 5", FILTERING)
    s.execute("DROP INDEX ix.t_v_idx")
    expect_invalid(s, "SELECT * FROM t WHERE v = 'v3'", FILTERING)
    check("SELECT k, c FROM t WHERE v = 'v3' ALLOW FILTERING", lambda kc, r: r["v"] == "v3")
    s.execute("DROP TABLE pre")


def key_index_checks(cluster, s, admins):
    """Indexes on a component of a composite partition key and on
    clustering columns (Cassandra 5.0 SAI): their restrictions need no
    ALLOW FILTERING, and every answer equals a client-side filter of the
    model, paged, after flushes, deletions (row, range, partition) and TTL
    expiry."""
    step("indexes on key columns")
    s.execute("CREATE TABLE kx (a int, b int, c int, d text, v int, s int static, "
              "PRIMARY KEY ((a, b), c, d)) WITH CLUSTERING ORDER BY (c ASC, d DESC)")
    s.execute("CREATE INDEX kx_c ON kx (c)")  # before the rows: built as they are written
    ins = s.prepare("INSERT INTO kx (a, b, c, d, v) VALUES (?, ?, ?, ?, ?)")
    model = {}  # (a, b, c, d) -> v
    args = []
    for a in range(24):
        for c in range(6):
            key = (a, a % 5, c, "t%d" % ((a + c) % 4))
            model[key] = a * 10 + c
            args.append(key + (model[key],))
    half = len(args) // 2
    for ok, res in execute_concurrent_with_args(s, ins, args[:half], concurrency=32):
        assert ok, res
    flush(admins)  # half in SSTables, half in memtables
    for ok, res in execute_concurrent_with_args(s, ins, args[half:], concurrency=32):
        assert ok, res
    s.execute("UPDATE kx SET s = 7 WHERE a = 3 AND b = 3")
    # Indexes created on existing rows: built in the background.
    s.execute("CREATE INDEX kx_b ON kx (b)")
    s.execute("CREATE CUSTOM INDEX kx_d ON kx (d) USING 'StorageAttachedIndex'")
    assert cluster.control_connection.wait_for_schema_agreement(wait_time=20)
    until("the build of kx_b and kx_d",
          lambda: rows_of(s, "SELECT a FROM kx WHERE b = 1 AND d = 't1'") is not None, 60)
    # The engine indexes the key columns (built over the existing SSTables),
    # rather than leaving the query layer to filter a scan.
    builds = json.loads(urllib.request.urlopen("http://%s/indexbuilds" % admins[0], timeout=10).read())
    assert {"kx_b", "kx_d"} <= {b["index"] for b in builds if b["done"]}, builds

    queries = [
        ("b = 2", lambda k: k[1] == 2),
        ("b IN (1, 3)", lambda k: k[1] in (1, 3)),
        ("c = 3", lambda k: k[2] == 3),
        ("c IN (0, 5)", lambda k: k[2] in (0, 5)),
        ("c > 1 AND c <= 4", lambda k: 1 < k[2] <= 4),
        ("c < 2", lambda k: k[2] < 2),
        ("d = 't1'", lambda k: k[3] == "t1"),
        ("b = 4 AND c >= 3", lambda k: k[1] == 4 and k[2] >= 3),
        ("c = 2 AND d = 't0'", lambda k: k[2] == 2 and k[3] == "t0"),
        ("b = 0 AND d = 't2'", lambda k: k[1] == 0 and k[3] == "t2"),
    ]

    def check(label):
        for where, pred in queries:
            for fetch in (7, 1000):
                got = sorted((r.a, r.b, r.c, r.d, r.v) for r in rows_of(
                    s, "SELECT a, b, c, d, v FROM kx WHERE " + where, fetch_size=fetch))
                want = sorted(k + (v,) for k, v in model.items() if pred(k))
                assert got == want, (label, where, fetch, len(got), len(want))
        # The partition key alone restricts normally; the index narrows it.
        got = sorted((r.c, r.d) for r in rows_of(s, "SELECT c, d FROM kx WHERE a = 7 AND b = 2 "
                                                     "AND d = 't3'"))
        assert got == sorted((k[2], k[3]) for k in model if k[:2] == (7, 2) and k[3] == "t3"), got
        # Prepared, with bound values (paged at 5).
        ps = s.prepare("SELECT a, b, c, d, v FROM kx WHERE c > ? AND d = ?")
        ps.fetch_size = 5
        got = sorted((r.a, r.b, r.c, r.d, r.v) for r in s.execute(ps, (2, "t0")))
        assert got == sorted(k + (v,) for k, v in model.items() if k[2] > 2 and k[3] == "t0"), got
        got = list(rows_of(s, "SELECT a, b, s FROM kx WHERE b = 3 AND c = 0"))
        assert sorted((r.a, r.s) for r in got) == sorted(
            (k[0], 7 if k[0] == 3 else None) for k in model if k[1] == 3 and k[2] == 0), got

    check("written")
    flush(admins)
    check("flushed")

    step("key column indexes: deletes and TTL")
    s.execute("DELETE FROM kx WHERE a = 2 AND b = 2 AND c = 3 AND d = 't1'")  # a row
    s.execute("DELETE FROM kx WHERE a = 7 AND b = 2 AND c >= 4")  # a range
    s.execute("DELETE FROM kx WHERE a = 12 AND b = 2")  # a partition
    for k in list(model):
        if k == (2, 2, 3, "t1") or (k[:2] == (7, 2) and k[2] >= 4) or k[:2] == (12, 2):
            del model[k]
    s.execute("INSERT INTO kx (a, b, c, d, v) VALUES (2, 2, 3, 't1', 5)")  # back again
    model[(2, 2, 3, "t1")] = 5
    s.execute("INSERT INTO kx (a, b, c, d, v) VALUES (40, 2, 3, 'zz', 1) USING TTL 2")
    assert [r.a for r in rows_of(s, "SELECT a FROM kx WHERE b = 2 AND d = 'zz'")] == [40]
    until("TTL expiry of a row found by key indexes",
          lambda: rows_of(s, "SELECT a FROM kx WHERE c = 3 AND d = 'zz'") == [], 30)
    check("deleted")

    # Restrictions no index serves still need ALLOW FILTERING.
    expect_invalid(s, "SELECT * FROM kx WHERE v = 3", FILTERING)
    expect_invalid(s, "SELECT * FROM kx WHERE a = 3", FILTERING)
    got = sorted(r.v for r in rows_of(s, "SELECT v FROM kx WHERE c = 1 AND v > 200 ALLOW FILTERING"))
    assert got == sorted(v for k, v in model.items() if k[2] == 1 and v > 200), got
    s.execute("DROP INDEX kx_d")
    expect_invalid(s, "SELECT * FROM kx WHERE d = 't1'", "cannot be restricted")
    got = sorted(r.v for r in rows_of(s, "SELECT v FROM kx WHERE d = 't1' ALLOW FILTERING"))
    assert got == sorted(v for k, v in model.items() if k[3] == "t1"), got
    s.execute("DROP TABLE kx")


def churn_phase(s, state):
    step("churn")
    s.set_keyspace("ix")
    s.execute("CREATE TABLE IF NOT EXISTS churn (k int, c int, v int, PRIMARY KEY (k, c))")
    s.execute("CREATE INDEX IF NOT EXISTS churn_v ON churn (v)")
    write = s.prepare("INSERT INTO churn (k, c, v) VALUES (?, ?, ?) USING TIMESTAMP ?")
    delete = s.prepare("DELETE FROM churn USING TIMESTAMP ? WHERE k = ? AND c = ?")
    model = {}
    ts = int(time.time() * 1_000_000)
    i = 0
    failures = 0
    deadline = time.time() + float(os.environ.get("GYRE_CHURN_SECS", "8"))
    while time.time() < deadline:
        k, c = i % 40, i % 200
        ts += 1
        if i % 9 == 8:
            stmt, args, new = delete, (ts, k, c), None
        else:
            stmt, args, new = write, (k, c, i % 13, ts), i % 13
        while True:  # the same timestamp each try: a retry is idempotent
            try:
                s.execute(stmt, args)
                break
            except Exception as e:  # noqa: BLE001 - timeouts while a node dies
                failures += 1
                print("retrying after", type(e).__name__, flush=True)
                time.sleep(0.1)
        if new is None:
            model.pop("%d/%d" % (k, c), None)
        else:
            model["%d/%d" % (k, c)] = new
        i += 1
    print("churn: %d writes, %d retried" % (i, failures))
    with open(state, "w") as f:
        json.dump(model, f)


def verify_phase(s, state):
    step("verify after restart")
    s.set_keyspace("ix")
    with open(state) as f:
        model = json.load(f)

    def matches(cl):
        for v in range(13):
            got = sorted("%d/%d" % (r.k, r.c)
                         for r in rows_of(s, "SELECT k, c FROM churn WHERE v = %s", (v,), cl=cl))
            want = sorted(kc for kc, x in model.items() if x == v)
            if got != want:
                print("v=%d: got %d want %d" % (v, len(got), len(want)), flush=True)
                return False
        return True

    assert matches(ConsistencyLevel.QUORUM), "QUORUM results differ from the model"
    # Every replica, the restarted one included, once hints are delivered.
    until("ALL to agree with the model", lambda: matches(ConsistencyLevel.ALL), 90)
    print("verified", len(model), "rows")


def main():
    host, port, phase, state, admins = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], \
        sys.argv[5].split(",")
    cluster, s = connect(host, port)
    if phase == "main":
        main_phase(cluster, s, admins)
    elif phase == "keys":  # the key column index checks alone (development)
        s.execute("CREATE KEYSPACE IF NOT EXISTS ix WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': %d}" % len(admins))
        s.set_keyspace("ix")
        s.execute("DROP TABLE IF EXISTS kx")
        key_index_checks(cluster, s, admins)
    elif phase == "churn":
        churn_phase(s, state)
    elif phase == "verify":
        verify_phase(s, state)
    else:
        raise SystemExit("unknown phase " + phase)
    cluster.shutdown()
    print("\nOK", flush=True)


if __name__ == "__main__":
    main()
