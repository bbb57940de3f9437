"""Vector search end to end (issue 18's acceptance figures), through the
DataStax Python driver against running nodes.

Usage: bench_ann.py HOSTS ADMINS RF [ROWS DIM QUERIES K CONCURRENCY]

  HOSTS: contact points (comma separated), CQL port 9042.
  ADMINS: the nodes' admin endpoints (host:port, comma separated), for
    /flush and /compact once the rows are in.

ROWS (default 100000) vectors of DIM (128) float dimensions, every
coordinate uniform in [-1, 1] (numpy seed 42), and an int column `cat`
(id % 10), both indexed (SAI, cosine), written at ALL; then flushed and
compacted. QUERIES (1000) query vectors of the same distribution; for each,
`ORDER BY v ANN OF ? LIMIT K` (K = 10) is compared with a brute force done
here (numpy, on the vectors as the server stores them): recall@K, latency
p50/p99 (one query at a time) and queries/s (CONCURRENCY queries in
flight, default 16); then the same with `WHERE cat = ?` (1 row in 10).
Reads at ONE. Prints one line per figure and "OK" at the end.
"""

import sys
import time

import numpy as np
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
import urllib.request


def admin_post(admins, path):
    for a in admins:
        req = urllib.request.Request(
            "http://%s%s" % (a, path), data=b"{}", method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=1800).read()


def main():
    hosts = sys.argv[1].split(",")
    admins = sys.argv[2].split(",")
    rf = int(sys.argv[3])
    rest = [int(x) for x in sys.argv[4:]]
    rows, dim, queries, k, conc = (rest + [100000, 128, 1000, 10, 16][len(rest):])[:5]
    rng = np.random.default_rng(42)
    data = rng.uniform(-1, 1, (rows, dim)).astype(np.float32)
    qs = rng.uniform(-1, 1, (queries, dim)).astype(np.float32)
    cats = np.arange(rows) % 10

    profile = ExecutionProfile(consistency_level=ConsistencyLevel.ONE, request_timeout=120)
    cluster = Cluster(hosts, port=9042, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    s = cluster.connect()
    s.execute("DROP KEYSPACE IF EXISTS ann_bench")
    s.execute("CREATE KEYSPACE ann_bench WITH replication = "
              "{'class': 'SimpleStrategy', 'replication_factor': %d}" % rf)
    s.set_keyspace("ann_bench")
    s.execute("CREATE TABLE items (id int PRIMARY KEY, cat int, v vector<float, %d>)" % dim)
    s.execute("CREATE CUSTOM INDEX items_v ON items (v) USING 'StorageAttachedIndex' "
              "WITH OPTIONS = {'similarity_function': 'cosine'}")
    s.execute("CREATE CUSTOM INDEX items_cat ON items (cat) USING 'StorageAttachedIndex'")

    t = time.time()
    ins = s.prepare("INSERT INTO items (id, cat, v) VALUES (?, ?, ?)")
    ins.consistency_level = ConsistencyLevel.ALL
    batch = 5000
    for start in range(0, rows, batch):
        args = [(i, int(cats[i]), data[i].tolist()) for i in range(start, min(rows, start + batch))]
        for ok, r in execute_concurrent_with_args(s, ins, args, concurrency=64):
            assert ok, r
    print("load: %d rows in %.1f s (%.0f rows/s, CL ALL)" % (rows, time.time() - t, rows / (time.time() - t)),
          flush=True)
    t = time.time()
    admin_post(admins, "/flush")
    admin_post(admins, "/compact")
    print("flush + compact: %.1f s" % (time.time() - t), flush=True)

    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    qunit = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    sims = qunit @ unit.T

    def truth(i, mask):
        row = np.where(mask, sims[i], -np.inf) if mask is not None else sims[i]
        return set(np.argpartition(-row, k)[:k].tolist())

    plain = s.prepare("SELECT id FROM items ORDER BY v ANN OF ? LIMIT %d" % k)
    by_cat = s.prepare("SELECT id FROM items WHERE cat = ? ORDER BY v ANN OF ? LIMIT %d" % k)
    for label, stmt, args_of, mask_of in [
        ("ANN", plain, lambda i: (qs[i].tolist(),), lambda i: None),
        ("ANN with cat = ?", by_cat, lambda i: (i % 10, qs[i].tolist()), lambda i: cats == i % 10),
    ]:
        lat, hits = [], 0
        for i in range(queries):
            a = args_of(i)
            t = time.perf_counter()
            got = [r.id for r in s.execute(stmt, a)]
            lat.append(time.perf_counter() - t)
            assert len(got) == k, (label, i, got)
            hits += len(truth(i, mask_of(i)) & set(got))
        lat.sort()
        p50 = lat[len(lat) // 2] * 1e3
        p99 = lat[min(len(lat) - 1, int(round((len(lat) - 1) * 0.99)))] * 1e3
        t = time.time()
        res = execute_concurrent(s, [(stmt, args_of(i)) for i in range(queries)], concurrency=conc)
        el = time.time() - t
        assert all(ok for ok, _ in res)
        print("%s: recall@%d %.4f, p50 %.1f ms, p99 %.1f ms (one at a time); "
              "%.0f queries/s (%d in flight)" % (label, k, hits / (queries * k), p50, p99, queries / el, conc),
              flush=True)
    cluster.shutdown()
    print("OK")


if __name__ == "__main__":
    main()
