"""Vector (ANN) search through the DataStax Python driver on a real cluster.

Usage: driver_ann.py HOST PORT ADMIN[,ADMIN...]

  ADMIN: the nodes' admin endpoints (host:port), for /flush and /compact.

Random vectors (fixed seed) in a table with a vector index; `ORDER BY v ANN
OF ? LIMIT 10` compared with a brute force computed here: recall@10 must
reach a floor, in memtables, after a flush, after overwrites and deletes
(which must never show stale or deleted rows), and after compaction; with
another indexed predicate; with the partition key given (exact); every
similarity function on small data (exact); similarity_* as a selected
column equal to the score computed here; Cassandra's refusals; a query
while an index is being built fails with ReadFailure INDEX_NOT_AVAILABLE.
GYRE_ANN_ROWS rows (default 1200) of GYRE_ANN_DIM dimensions (default 16).

Exits non-zero (with a traceback) on the first failed check; prints the
recall figures and "OK" at the end.
"""

import math
import os
import random
import sys
import time
import urllib.request

from cassandra import ConsistencyLevel, InvalidRequest, ReadFailure
from cassandra.cluster import Cluster, ExecutionProfile, EXEC_PROFILE_DEFAULT
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import SimpleStatement

ROWS = int(os.environ.get("GYRE_ANN_ROWS", "1200"))
DIM = int(os.environ.get("GYRE_ANN_DIM", "16"))
QUERIES = 15
K = 10
FLOOR = 0.9


T0 = time.time()


def step(msg):
    print("step: %.1fs %s" % (time.time() - T0, msg), flush=True)


def admin_post(admins, path):
    for a in admins:
        req = urllib.request.Request(
            "http://%s%s" % (a, path), data=b"{}", method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=300).read()


def f32(x):
    # The server stores and compares 32-bit floats.
    import struct
    return struct.unpack(">f", struct.pack(">f", x))[0]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return (1 + dot / (na * nb)) / 2


def euclidean(a, b):
    return 1 / (1 + sum((x - y) * (x - y) for x, y in zip(a, b)))


def dot_product(a, b):
    return (1 + sum(x * y for x, y in zip(a, b))) / 2


def expect_invalid(session, cql, needle, params=None):
    try:
        session.execute(cql, params)
    except InvalidRequest as e:
        assert needle in str(e), (cql, str(e), needle)
        return
    raise AssertionError("not refused: %s" % cql)


def brute(model, q, k, score=cosine, where=lambda i: True):
    scored = sorted(((score(v, q), i) for i, v in model.items() if where(i)), reverse=True)
    return scored[:k]


def check_recall(session, select, model, rng, label, where=lambda i: True, extra=()):
    """Runs QUERIES ANN queries; checks order, scores, no stale rows;
    returns recall@K."""
    hits = 0
    total = 0
    for _ in range(QUERIES):
        q = [f32(rng.uniform(-1, 1)) for _ in range(DIM)]
        rows = list(session.execute(select, (q,) + tuple(extra) + (q,)))
        want = brute(model, q, K, where=where)
        assert len(rows) == min(K, len(want)), (label, len(rows), len(want))
        got_ids = [r.id for r in rows]
        assert len(set(got_ids)) == len(got_ids), (label, got_ids)
        prev = 2.0
        for r in rows:
            assert r.id in model, (label, "deleted row returned", r.id)
            assert where(r.id), (label, "row outside the predicate", r.id)
            s = cosine(model[r.id], q)
            # The score shown is the live vector's: overwrites are re-scored.
            assert abs(r.score - s) < 1e-4, (label, r.id, r.score, s)
            assert r.score <= prev + 1e-6, (label, "not best first", got_ids)
            prev = r.score
        want_ids = {i for _, i in want}
        hits += len(want_ids & set(got_ids))
        total += len(want_ids)
    recall = hits / total
    print("recall@%d %s: %.3f" % (K, label, recall), flush=True)
    assert recall >= FLOOR, (label, recall)
    return recall


def main():
    host, port, admins = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    profile = ExecutionProfile(consistency_level=ConsistencyLevel.QUORUM, request_timeout=60)
    cluster = Cluster([host], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    s = cluster.connect()
    s.execute("CREATE KEYSPACE ks WITH replication = "
              "{'class': 'SimpleStrategy', 'replication_factor': 3}")
    s.set_keyspace("ks")
    s.execute("CREATE TABLE items (id int PRIMARY KEY, cat int, w vector<float, %d>, "
              "v vector<float, %d>)" % (DIM, DIM))
    s.execute("CREATE CUSTOM INDEX items_v ON items (v) USING 'StorageAttachedIndex'")
    s.execute("CREATE CUSTOM INDEX items_cat ON items (cat) USING 'StorageAttachedIndex'")

    step("refusals")
    qv = "[" + ", ".join(["0.5"] * DIM) + "]"
    expect_invalid(s, "SELECT id FROM items ORDER BY v ANN OF %s" % qv,
                   "Use of ANN OF in an ORDER BY clause requires a LIMIT that is not greater "
                   "than 1000. LIMIT was NO LIMIT")
    expect_invalid(s, "SELECT id FROM items ORDER BY v ANN OF %s LIMIT 1001" % qv,
                   "requires a LIMIT that is not greater than 1000. LIMIT was 1001")
    expect_invalid(s, "SELECT id FROM items ORDER BY w ANN OF %s LIMIT 5" % qv,
                   "ANN ordering by vector requires the column to be indexed")
    expect_invalid(s, "SELECT id FROM items ORDER BY cat ANN OF %s LIMIT 5" % qv,
                   "ANN ordering is only supported on float vector indexes")
    expect_invalid(s, "SELECT id FROM items ORDER BY v ANN OF [1.0, 2.0] LIMIT 5",
                   "Invalid vector literal for v of type vector<float, %d>; expected %d "
                   "elements, but given 2" % (DIM, DIM))
    expect_invalid(s, "SELECT id FROM items WHERE w = %s ORDER BY v ANN OF %s LIMIT 5"
                   % (qv, qv), "ANN ordering by vector requires all restricted column(s) "
                   "to be indexed")
    expect_invalid(s, "SELECT id FROM items WHERE v = %s" % qv,
                   "Vector indexes only support ANN queries")
    zero = "[" + ", ".join(["0.0"] * DIM) + "]"
    expect_invalid(s, "SELECT id FROM items ORDER BY v ANN OF %s LIMIT 5" % zero,
                   "Zero and near-zero vectors cannot be indexed or queried with cosine")

    step("writing %d vectors of %d dimensions" % (ROWS, DIM))
    rng = random.Random(42)
    model = {}
    cats = {}
    args = []
    for i in range(ROWS):
        v = [f32(rng.uniform(-1, 1)) for _ in range(DIM)]
        model[i] = v
        cats[i] = i % 5
        args.append((i, i % 5, v, v))
    ins = s.prepare("INSERT INTO items (id, cat, v, w) VALUES (?, ?, ?, ?)")
    for ok, res in execute_concurrent_with_args(s, ins, args, concurrency=32,
                                                raise_on_first_error=False):
        assert ok, res
    select = s.prepare("SELECT id, similarity_cosine(v, ?) AS score FROM items "
                       "ORDER BY v ANN OF ? LIMIT %d" % K)
    by_cat = s.prepare("SELECT id, similarity_cosine(v, ?) AS score FROM items "
                       "WHERE cat = ? ORDER BY v ANN OF ? LIMIT %d" % K)
    qrng = random.Random(7)
    figures = {}
    figures["memtable"] = check_recall(s, select, model, qrng, "memtables")

    step("flush")
    admin_post(admins, "/flush")
    figures["flushed"] = check_recall(s, select, model, qrng, "after flush")
    figures["cat=2"] = check_recall(s, by_cat, model, qrng, "with cat = 2",
                                    where=lambda i: cats[i] == 2, extra=(2,))

    step("overwrites and deletes")
    upd = s.prepare("UPDATE items SET v = ? WHERE id = ?")
    dele = s.prepare("DELETE FROM items WHERE id = ?")
    changed = []
    for i in range(0, ROWS, 7):
        v = [f32(rng.uniform(-1, 1)) for _ in range(DIM)]
        model[i] = v
        changed.append((v, i))
    for ok, res in execute_concurrent_with_args(s, upd, changed, concurrency=32,
                                                raise_on_first_error=False):
        assert ok, res
    gone = list(range(3, ROWS, 11))
    for ok, res in execute_concurrent_with_args(s, dele, [(i,) for i in gone], concurrency=32,
                                                raise_on_first_error=False):
        assert ok, res
    for i in gone:
        model.pop(i, None)
    # A deleted row's exact vector finds another row first.
    for i in gone[:20]:
        q = [x for x in args[i][2]]
        rows = list(s.execute(select, (q, q)))
        assert i not in [r.id for r in rows], ("deleted row", i)
    # An overwritten row is found by its new vector, best first.
    for v, i in changed[:20]:
        if i not in model:
            continue
        rows = list(s.execute(select, (v, v)))
        assert rows and rows[0].id == i and abs(rows[0].score - 1.0) < 1e-5, (i, rows[:2])
    figures["churn"] = check_recall(s, select, model, qrng, "after overwrites and deletes")
    admin_post(admins, "/flush")
    figures["churn+flush"] = check_recall(s, select, model, qrng,
                                          "overwrites and deletes flushed")

    step("compaction")
    admin_post(admins, "/compact")
    figures["compacted"] = check_recall(s, select, model, qrng, "after compaction")
    figures["compacted cat=2"] = check_recall(s, by_cat, model, qrng, "compacted, cat = 2",
                                              where=lambda i: cats[i] == 2, extra=(2,))

    step("partition key given, euclidean (exact)")
    s.execute("CREATE TABLE parts (pk int, ck int, v vector<float, 4>, PRIMARY KEY (pk, ck))")
    s.execute("CREATE CUSTOM INDEX parts_v ON parts (v) USING 'StorageAttachedIndex' "
              "WITH OPTIONS = {'similarity_function': 'euclidean'}")
    pmodel = {}
    pins = s.prepare("INSERT INTO parts (pk, ck, v) VALUES (?, ?, ?)")
    pargs = []
    for pk in range(10):
        for ck in range(40):
            v = [f32(rng.uniform(-1, 1)) for _ in range(4)]
            pmodel[(pk, ck)] = v
            pargs.append((pk, ck, v))
    for ok, res in execute_concurrent_with_args(s, pins, pargs, concurrency=32,
                                                raise_on_first_error=False):
        assert ok, res
    psel = s.prepare("SELECT pk, ck, similarity_euclidean(v, ?) AS score FROM parts "
                     "WHERE pk = ? ORDER BY v ANN OF ? LIMIT 5")
    for pk in range(10):
        q = [f32(rng.uniform(-1, 1)) for _ in range(4)]
        rows = list(s.execute(psel, (q, pk, q)))
        want = sorted(((euclidean(v, q), key[1]) for key, v in pmodel.items() if key[0] == pk),
                      reverse=True)[:5]
        assert [r.ck for r in rows] == [c for _, c in want], (pk, rows, want)
        assert all(r.pk == pk for r in rows)
    # Across the ring too (whole table, 400 rows: exact).
    asel = s.prepare("SELECT pk, ck FROM parts ORDER BY v ANN OF ? LIMIT 7")
    q = [0.1, -0.2, 0.3, 0.9]
    want = sorted(((euclidean(v, q), k) for k, v in pmodel.items()), reverse=True)[:7]
    assert [(r.pk, r.ck) for r in s.execute(asel, (q,))] == [k for _, k in want]

    step("dot_product on small data (exact)")
    s.execute("CREATE TABLE tiny (id int PRIMARY KEY, v vector<float, 3>)")
    s.execute("CREATE CUSTOM INDEX ON tiny (v) USING 'StorageAttachedIndex' "
              "WITH OPTIONS = {'similarity_function': 'DOT_PRODUCT'}")
    tiny = {}
    for i in range(12):
        n = math.sqrt(1 + i * i + 4)
        v = [f32(1 / n), f32(i / n), f32(2 / n)]
        tiny[i] = v
        s.execute("INSERT INTO tiny (id, v) VALUES (%s, %s)", (i, v))
    q = [0.0, 0.6, 0.8]
    rows = list(s.execute("SELECT id, similarity_dot_product(v, [0.0, 0.6, 0.8]) AS score "
                          "FROM tiny ORDER BY v ANN OF [0.0, 0.6, 0.8] LIMIT 4"))
    want = sorted(((dot_product(v, q), i) for i, v in tiny.items()), reverse=True)[:4]
    assert [r.id for r in rows] == [i for _, i in want], (rows, want)
    for r, (sc, _) in zip(rows, want):
        assert abs(r.score - sc) < 1e-5
    expect_invalid(s, "SELECT id FROM tiny ORDER BY v ANN OF [1.0, 2.0] LIMIT 3",
                   "Invalid vector literal for v of type vector<float, 3>; "
                   "expected 3 elements, but given 2")
    # LIMIT 1000 is allowed; fewer rows than k come back whole.
    assert len(list(s.execute("SELECT id FROM tiny ORDER BY v ANN OF [1, 0, 0] LIMIT 1000"))) == 12
    # A page size below LIMIT: the top k in one page, with Cassandra's warning.
    paged = s.execute(SimpleStatement("SELECT id FROM tiny ORDER BY v ANN OF [0.0, 0.6, 0.8] "
                                      "LIMIT 4", fetch_size=3))
    assert not paged.has_more_pages
    assert [r.id for r in paged.current_rows] == [i for _, i in want], paged.current_rows
    assert any("Top-K queries do not support paging and the page size is set to 3, which is "
               "less than LIMIT 4. The page size has been set to 4 to match the LIMIT." in w
               for w in (paged.response_future.warnings or [])), paged.response_future.warnings

    step("a query during an index build: ReadFailure INDEX_NOT_AVAILABLE")
    # Building the graph of w over the SSTables' rows takes a while in a
    # debug build; queries meanwhile fail with reason 6 (never time out).
    s.execute("CREATE CUSTOM INDEX items_w ON items (w) USING 'StorageAttachedIndex'")
    wsel = s.prepare("SELECT id FROM items ORDER BY w ANN OF ? LIMIT 3")
    failures = 0
    deadline = time.time() + 120
    while True:
        assert time.time() < deadline, "index on w not built in time"
        try:
            rows = list(s.execute(wsel, (args[1][2],)))
            break
        except ReadFailure as e:
            failures += 1
            codes = getattr(e, "error_code_map", None)
            if codes:
                assert set(codes.values()) == {6}, codes
            else:
                assert e.failures >= 1, e
            time.sleep(0.05)
    print("ReadFailure INDEX_NOT_AVAILABLE answers before the build ended:", failures, flush=True)
    assert failures >= 1, "no query saw the build"
    assert rows[0].id == 1, rows

    print("figures:", " ".join("%s=%.3f" % kv for kv in figures.items()), flush=True)
    cluster.shutdown()
    print("\nOK", flush=True)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print("took %.1f s" % (time.time() - t0))
