"""Guardrails seen through the DataStax Python driver.

Usage: limits.py HOST PORT. Exits non-zero (with a traceback) on the first
failed step; prints one line per step.
"""

import sys
import time

from cassandra import InvalidRequest
from cassandra.cluster import Cluster
from cassandra.query import BatchStatement, BatchType, SimpleStatement


def step(msg):
    print("step:", msg, flush=True)


def refused(session, stmt, params, needle):
    try:
        session.execute(stmt, params)
    except InvalidRequest as e:
        assert needle in str(e), "expected %r in %s" % (needle, e)
        print("  refused:", str(e)[:160])
        return
    raise AssertionError("not refused: %s" % str(stmt)[:80])


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    step("connect")
    cluster = Cluster([host], port=port)
    session = cluster.connect()
    session.execute(
        "CREATE KEYSPACE lim WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute("CREATE TABLE lim.t (k int PRIMARY KEY, v blob)")
    session.execute("CREATE TABLE lim.w (k int, c int, v int, PRIMARY KEY ((k, c)))")
    session.set_keyspace("lim")

    step("a 100K-element IN list is refused by the guardrail")
    keys = ",".join(str(i) for i in range(100000))
    refused(session, "SELECT * FROM t WHERE k IN (%s)" % keys, None, "cartesian product size (100000)")

    step("a query text over 1 MiB is refused before it is parsed")
    refused(session, "SELECT * FROM t WHERE k = 1 AND v = 0x" + "00" * 600000 + " ALLOW FILTERING",
            None, "exceeds the limit of 1048576 bytes")

    step("IN lists on a composite key multiply: 200 x 200 is refused")
    a = ",".join(str(i) for i in range(200))
    refused(session, "SELECT * FROM w WHERE k IN (%s) AND c IN (%s)" % (a, a), None, "(40000)")
    step("... and 10 x 10 is served")
    rows = list(session.execute("SELECT * FROM w WHERE k IN (%s) AND c IN (%s)" % (
        ",".join(str(i) for i in range(10)), ",".join(str(i) for i in range(10)))))
    assert rows == [], rows

    ins = session.prepare("INSERT INTO t (k, v) VALUES (?, ?)")

    step("a 60 KiB batch over many partitions gets the warning")
    batch = BatchStatement(batch_type=BatchType.LOGGED)
    for i in range(60):
        batch.add(ins, (i, b"x" * 1000))
    future = session.execute_async(batch)
    future.result()
    warnings = future.warnings or []
    print("  warnings:", warnings)
    assert any("Batch for [lim.t] is of size" in w for w in warnings), warnings
    assert session.execute("SELECT v FROM t WHERE k = 59").one().v == b"x" * 1000

    step("a small batch has no warning")
    small = BatchStatement()
    small.add(ins, (100, b"y"))
    small.add(ins, (101, b"y"))
    future = session.execute_async(small)
    future.result()
    assert not future.warnings, future.warnings

    step("a 1 MiB batch fails")
    big = BatchStatement(batch_type=BatchType.UNLOGGED)
    for i in range(1000, 1100):
        big.add(ins, (i, b"z" * 10000))
    refused(session, big, None, "Batch too large")
    assert session.execute("SELECT v FROM t WHERE k = 1050").one() is None

    step("a single-partition batch is exempt")
    one = BatchStatement()
    for _ in range(100):
        one.add(ins, (7, b"w" * 10000))
    session.execute(one)

    step("a mutation larger than an internode message is refused")
    refused(session, ins, (2000, b"m" * (16200 * 1024)), "Rejected an oversized mutation")
    assert session.execute("SELECT v FROM t WHERE k = 2000").one() is None

    step("a timestamp a day in the future is refused (threshold set to 1 h)")
    future_ts = int((time.time() + 86400) * 1e6)
    refused(session, "INSERT INTO t (k, v) VALUES (1, 0x00) USING TIMESTAMP %d" % future_ts, None,
            "maximum_timestamp")
    session.execute("INSERT INTO t (k, v) VALUES (1, 0x01) USING TIMESTAMP %d" % int(time.time() * 1e6))

    step("the node still serves")
    assert session.execute("SELECT v FROM t WHERE k = 1").one().v == b"\x01"
    cluster.shutdown()
    print("OK")


if __name__ == "__main__":
    main()
