"""Tombstone thresholds seen through the DataStax Python driver.

Usage: tombstones.py HOST [HOST...]. The nodes run with
limits.tombstone_warn_threshold = 20 and tombstone_failure_threshold = 100.
Exits non-zero (with a traceback) on the first failed step; prints one line
per step and OK at the end.
"""

import sys

from cassandra import ConsistencyLevel, ReadFailure
from cassandra.cluster import Cluster
from cassandra.query import SimpleStatement

WARNING = "tombstone cells for query on tomb.t (see tombstone_warn_threshold)"


def step(msg):
    print("step:", msg, flush=True)


def select(session, cql, cl):
    future = session.execute_async(SimpleStatement(cql, consistency_level=cl))
    rows = list(future.result())
    return rows, future.warnings or []


def fails(session, cql, cl):
    try:
        session.execute(SimpleStatement(cql, consistency_level=cl))
    except ReadFailure as e:
        print("  ReadFailure:", str(e)[:200])
        assert e.failures >= 1, e
        # Protocol v5 names each failed replica's reason: 1 is
        # READ_TOO_MANY_TOMBSTONES.
        codes = getattr(e, "error_code_map", None)
        if codes:
            assert all(c == 1 for c in codes.values()), codes
        return e
    raise AssertionError("not refused: %s" % cql)


def main():
    hosts = sys.argv[1:]
    cluster = Cluster(hosts)
    session = cluster.connect()
    print("  protocol v%d" % cluster.protocol_version)
    session.execute(
        "CREATE KEYSPACE tomb WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    session.execute("CREATE TABLE tomb.t (k int, c int, v int, PRIMARY KEY (k, c))")
    session.set_keyspace("tomb")
    q = ConsistencyLevel.QUORUM
    delete = session.prepare("DELETE FROM t WHERE k = ? AND c = ?")
    delete.consistency_level = ConsistencyLevel.ALL
    insert = session.prepare("INSERT INTO t (k, c, v) VALUES (?, ?, ?)")
    insert.consistency_level = ConsistencyLevel.ALL

    step("a partition with 5 live rows and no tombstones: no warning")
    for c in range(5):
        session.execute(insert, (1, 100 + c, c))
    rows, warnings = select(session, "SELECT * FROM t WHERE k = 1", q)
    assert len(rows) == 5 and not warnings, (rows, warnings)

    step("50 deleted rows in it: the rows come back with the warning")
    for c in range(50):
        session.execute(delete, (1, c))
    rows, warnings = select(session, "SELECT * FROM t WHERE k = 1", q)
    print("  warnings:", warnings)
    assert [r.c for r in rows] == list(range(100, 105)), rows
    assert warnings == ["Read 5 live rows and 50 " + WARNING], warnings

    step("150 deleted rows in another partition: ReadFailure at QUORUM, ONE and ALL")
    for c in range(150):
        session.execute(delete, (2, c))
    for cl in (q, ConsistencyLevel.ONE, ConsistencyLevel.ALL):
        fails(session, "SELECT * FROM t WHERE k = 2", cl)

    step("a range read over that partition fails too")
    fails(session, "SELECT * FROM t", q)

    step("the node keeps serving: the first partition still reads")
    rows, _ = select(session, "SELECT * FROM t WHERE k = 1", q)
    assert len(rows) == 5, rows

    step("dropping the partition's rows with one partition deletion reads empty")
    session.execute(SimpleStatement("DELETE FROM t WHERE k = 2", consistency_level=ConsistencyLevel.ALL))
    rows, warnings = select(session, "SELECT * FROM t WHERE k = 2", q)
    print("  rows:", rows, "warnings:", warnings)
    assert rows == [], rows

    cluster.shutdown()
    print("OK")


if __name__ == "__main__":
    main()
