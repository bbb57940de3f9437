"""Lightweight transactions through the DataStax Python driver.

Usage: lwt.py HOST PORT basic
       lwt.py HOST PORT register HOSTS CLIENTS OPS

`check HOSTS VALUE`: after a restart, every node reads VALUE at SERIAL.
`basic`: conditional INSERT / UPDATE / DELETE / BATCH, `was_applied`, the
rows returned when not applied, reads at SERIAL and LOCAL_SERIAL, and the
refusals of bad input. `register`: CLIENTS threads (spread over the
comma-separated HOSTS) each doing OPS read-modify-CAS increments of one
register; the final value must equal the number of applied CAS (an
operation that timed out has an unknown outcome and widens the bound).
Prints one line per step; exits non-zero on the first failure.
"""

import sys
import threading
import time

from cassandra import ConsistencyLevel, InvalidRequest, ReadTimeout, WriteTimeout
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import WhiteListRoundRobinPolicy
from cassandra.query import BatchStatement, BatchType, SimpleStatement


def step(msg):
    print("step:", msg, flush=True)


def expect_invalid(session, cql, fragment, params=None, cl=None):
    st = SimpleStatement(cql, consistency_level=cl) if cl is not None else cql
    try:
        session.execute(st, params)
    except InvalidRequest as e:
        assert fragment in str(e), (cql, str(e))
        return
    raise AssertionError("not refused: %s" % cql)


def basic(host, port):
    # QUORUM by default: a conditional write commits at the statement's
    # level, and at the driver's LOCAL_ONE the commit reaches the other
    # replicas asynchronously, so a plain read right after (at any level
    # but SERIAL) may see the value before it, as in Cassandra.
    profile = ExecutionProfile(consistency_level=ConsistencyLevel.QUORUM)
    cluster = Cluster([host], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    session = cluster.connect()
    step("schema")
    session.execute(
        "CREATE KEYSPACE lwt WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    session.execute("CREATE TABLE lwt.users (name text PRIMARY KEY, email text, age int)")
    session.execute(
        "CREATE TABLE lwt.items (k int, c int, v int, s int static, m map<text, int>, "
        "PRIMARY KEY (k, c))"
    )
    assert cluster.control_connection.wait_for_schema_agreement(wait_time=20)
    session.set_keyspace("lwt")

    step("INSERT IF NOT EXISTS applies once")
    r = session.execute(
        "INSERT INTO users (name, email, age) VALUES ('ann', 'ann@x', 30) IF NOT EXISTS"
    )
    assert r.was_applied, r.one()
    assert list(r.column_names) == ["[applied]"], r.column_names
    r = session.execute(
        "INSERT INTO users (name, email, age) VALUES ('ann', 'other@x', 99) IF NOT EXISTS"
    )
    assert not r.was_applied
    row = r.one()
    assert list(r.column_names) == ["[applied]", "name", "age", "email"], r.column_names
    assert (row.name, row.email, row.age) == ("ann", "ann@x", 30), row

    step("prepared IF NOT EXISTS")
    ins = session.prepare("INSERT INTO users (name, email, age) VALUES (?, ?, ?) IF NOT EXISTS")
    assert session.execute(ins, ("bob", "bob@x", 40)).was_applied
    r = session.execute(ins, ("bob", "bob2@x", 41))
    assert not r.was_applied and r.one().email == "bob@x", r.one()

    step("conditional UPDATE")
    r = session.execute("UPDATE users SET age = 31 WHERE name = 'ann' IF age = 30")
    assert r.was_applied
    r = session.execute("UPDATE users SET age = 32 WHERE name = 'ann' IF age = 30")
    assert not r.was_applied
    assert list(r.column_names) == ["[applied]", "age"], r.column_names
    assert r.one().age == 31, r.one()
    upd = session.prepare("UPDATE users SET email = ? WHERE name = ? IF age > ? AND email IN ?")
    assert session.execute(upd, ("ann@y", "ann", 20, ["x", "ann@x"])).was_applied
    assert not session.execute(upd, ("ann@z", "ann", 40, ["ann@y"])).was_applied
    assert session.execute(
        "UPDATE users SET age = 33 WHERE name = 'ann' IF age != 1 AND age <= 31 AND age >= 31"
    ).was_applied
    r = session.execute("UPDATE users SET age = 1 WHERE name = 'zed' IF EXISTS")
    assert not r.was_applied and list(r.column_names) == ["[applied]"], r.column_names
    assert session.execute("UPDATE users SET age = 34 WHERE name = 'ann' IF EXISTS").was_applied
    r = session.execute("UPDATE users SET age = 1 WHERE name = 'zed' IF age = null")
    assert r.was_applied, "a missing row's column is null"

    step("collection element conditions")
    session.execute("INSERT INTO items (k, c, v, m) VALUES (1, 1, 10, {'a': 1})")
    assert session.execute(
        "UPDATE items SET v = 11 WHERE k = 1 AND c = 1 IF m['a'] = 1"
    ).was_applied
    r = session.execute("UPDATE items SET v = 12 WHERE k = 1 AND c = 1 IF m['a'] > 5")
    assert not r.was_applied and r.one().m == {"a": 1}, r.one()

    step("conditional DELETE")
    r = session.execute("DELETE FROM users WHERE name = 'bob' IF email = 'nope'")
    assert not r.was_applied and r.one().email == "bob@x"
    assert session.execute("DELETE FROM users WHERE name = 'bob' IF EXISTS").was_applied
    assert session.execute("SELECT * FROM users WHERE name = 'bob'").one() is None
    assert not session.execute("DELETE FROM users WHERE name = 'bob' IF EXISTS").was_applied

    step("conditional batch on one partition")
    b = BatchStatement()
    b.add("INSERT INTO items (k, c, v) VALUES (2, 1, 100) IF NOT EXISTS")
    b.add("INSERT INTO items (k, c, v) VALUES (2, 2, 200)")
    b.add("UPDATE items SET s = 7 WHERE k = 2")
    r = session.execute(b)
    assert r.was_applied, r.one()
    b = BatchStatement()
    b.add("UPDATE items SET v = 101 WHERE k = 2 AND c = 1 IF v = 999")
    b.add("UPDATE items SET v = 201 WHERE k = 2 AND c = 2")
    r = session.execute(b)
    assert not r.was_applied
    assert list(r.column_names) == ["[applied]", "k", "c", "v"], r.column_names
    assert (r.one().k, r.one().c, r.one().v) == (2, 1, 100), r.one()
    rows = session.execute("SELECT c, v, s FROM items WHERE k = 2")
    assert [(x.c, x.v, x.s) for x in rows] == [(1, 100, 7), (2, 200, 7)], "batch half-applied"
    r = session.execute(
        "BEGIN BATCH UPDATE items SET v = 101 WHERE k = 2 AND c = 1 IF v = 100 "
        "UPDATE items SET v = 201 WHERE k = 2 AND c = 2 IF v = 200 APPLY BATCH"
    )
    assert r.was_applied
    rows = session.execute("SELECT c, v FROM items WHERE k = 2")
    assert [(x.c, x.v) for x in rows] == [(1, 101), (2, 201)]

    step("reads at SERIAL and LOCAL_SERIAL")
    for cl in (ConsistencyLevel.SERIAL, ConsistencyLevel.LOCAL_SERIAL):
        st = SimpleStatement("SELECT age FROM users WHERE name = 'ann'", consistency_level=cl)
        assert session.execute(st).one().age == 34
    st = SimpleStatement(
        "UPDATE users SET age = 35 WHERE name = 'ann' IF age = 34",
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
    )
    assert session.execute(st).was_applied
    st = SimpleStatement("SELECT * FROM users", consistency_level=ConsistencyLevel.SERIAL)
    try:
        session.execute(st)
        raise AssertionError("a serial range read was not refused")
    except InvalidRequest as e:
        assert "one partition at a time" in str(e), str(e)

    step("bad input is refused")
    expect_invalid(session, "UPDATE users SET age = 1 WHERE name = 'ann' IF name = 'ann'",
                   "PRIMARY KEY column 'name' cannot have IF conditions")
    expect_invalid(session,
                   "BEGIN BATCH UPDATE items SET v = 1 WHERE k = 1 AND c = 1 IF v = 1 "
                   "UPDATE items SET v = 1 WHERE k = 3 AND c = 1 APPLY BATCH",
                   "Batch with conditions cannot span multiple partitions")
    expect_invalid(session, "INSERT INTO users (name, age) VALUES ('x', 1)",
                   "You must use conditional updates for serializable writes",
                   cl=ConsistencyLevel.SERIAL)
    expect_invalid(session, "INSERT INTO users (name, age) VALUES ('x', 1) IF NOT EXISTS",
                   "is not supported as conditional update commit consistency",
                   cl=ConsistencyLevel.SERIAL)
    expect_invalid(session,
                   "INSERT INTO users (name, age) VALUES ('x', 1) IF NOT EXISTS USING TIMESTAMP 5",
                   "Cannot provide custom timestamp for conditional updates")
    expect_invalid(session, "UPDATE users SET age = 1 WHERE name IN ('a', 'b') IF age = 1",
                   "IN on the partition key is not supported with conditional updates")
    expect_invalid(session, "UPDATE users SET age = 1 WHERE name = 'a' IF age < null",
                   "Invalid comparison with null")
    cluster.shutdown()
    print("OK", flush=True)


def register(hosts, port, clients, ops):
    clusters = []
    sessions = []
    for h in hosts:
        profile = ExecutionProfile(
            load_balancing_policy=WhiteListRoundRobinPolicy([h]),
            consistency_level=ConsistencyLevel.QUORUM,
            serial_consistency_level=ConsistencyLevel.SERIAL,
            request_timeout=20,
        )
        c = Cluster([h], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        clusters.append(c)
        sessions.append(c.connect())
    s0 = sessions[0]
    s0.execute(
        "CREATE KEYSPACE reg WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    s0.execute("CREATE TABLE reg.r (k int PRIMARY KEY, v int)")
    assert clusters[0].control_connection.wait_for_schema_agreement(wait_time=20)
    assert s0.execute("INSERT INTO reg.r (k, v) VALUES (1, 0) IF NOT EXISTS").was_applied
    lock = threading.Lock()
    totals = {"applied": 0, "rejected": 0, "unknown": 0, "errors": []}

    def client(i):
        s = sessions[i % len(sessions)]
        upd = s.prepare("UPDATE reg.r SET v = ? WHERE k = 1 IF v = ?")
        read = s.prepare("SELECT v FROM reg.r WHERE k = 1")
        read.consistency_level = ConsistencyLevel.SERIAL
        applied = rejected = unknown = 0

        def serial_read():
            # Under contention a SERIAL read can time out (CAS contention):
            # retry it, a read changes nothing.
            for _ in range(20):
                try:
                    return s.execute(read).one().v
                except ReadTimeout:
                    continue
            raise AssertionError("SERIAL read timed out 20 times")

        try:
            cur = serial_read()
            for _ in range(ops):
                try:
                    r = s.execute(upd, (cur + 1, cur))
                except WriteTimeout:
                    unknown += 1
                    cur = serial_read()
                    continue
                if r.was_applied:
                    applied += 1
                    cur += 1
                else:
                    rejected += 1
                    cur = r.one().v
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                totals["errors"].append(repr(e))
        with lock:
            totals["applied"] += applied
            totals["rejected"] += rejected
            totals["unknown"] += unknown

    step("%d clients x %d CAS increments over %d nodes" % (clients, ops, len(hosts)))
    t0 = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    final = s0.execute(
        SimpleStatement("SELECT v FROM reg.r WHERE k = 1", consistency_level=ConsistencyLevel.SERIAL)
    ).one().v
    quorum = s0.execute(
        SimpleStatement("SELECT v FROM reg.r WHERE k = 1", consistency_level=ConsistencyLevel.QUORUM)
    ).one().v
    print(
        "applied=%d rejected=%d unknown=%d final=%d quorum_read=%d elapsed=%.1fs"
        % (totals["applied"], totals["rejected"], totals["unknown"], final, quorum, elapsed),
        flush=True,
    )
    assert not totals["errors"], totals["errors"]
    assert totals["applied"] > 0
    # Every applied CAS incremented once; a timed-out one may or may not have.
    assert totals["applied"] <= final <= totals["applied"] + totals["unknown"], totals
    assert quorum == final, (quorum, final)
    for c in clusters:
        c.shutdown()
    print("OK", flush=True)


def check(hosts, port, value):
    """After a restart of every node: each node's SERIAL read sees `value`,
    and a CAS on it applies exactly once."""
    for h in hosts:
        profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([h]),
                                   request_timeout=20)
        c = Cluster([h], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        s = c.connect()
        st = SimpleStatement("SELECT v FROM reg.r WHERE k = 1",
                             consistency_level=ConsistencyLevel.SERIAL)
        got = s.execute(st).one().v
        assert got == value, (h, got, value)
        c.shutdown()
    step("every node reads %d at SERIAL" % value)
    c = Cluster([hosts[0]], port=port)
    s = c.connect()
    assert s.execute("UPDATE reg.r SET v = %d WHERE k = 1 IF v = %d" % (value + 1, value)).was_applied
    assert not s.execute(
        "UPDATE reg.r SET v = %d WHERE k = 1 IF v = %d" % (value + 1, value)
    ).was_applied
    c.shutdown()
    print("OK", flush=True)


def counters(hosts, port, clients, ops):
    """Counter tables: refusals, reads, and CLIENTS threads spread over
    HOSTS each adding 1 to a shared counter and its own counter OPS times
    (with a COUNTER BATCH every 10th): exact totals without faults."""
    c = Cluster([hosts[0]], port=port)
    s = c.connect()
    s.execute("CREATE KEYSPACE cnt WITH replication = "
              "{'class': 'SimpleStrategy', 'replication_factor': 3}")
    s.execute("CREATE TABLE cnt.c (k int, r int, n counter, m counter, PRIMARY KEY (k, r))")
    assert c.control_connection.wait_for_schema_agreement(wait_time=20)
    step("counter refusals")
    for cql, fragment in [
        ("CREATE TABLE cnt.bad (k int PRIMARY KEY, n counter, v int)",
         "Cannot mix counter and non counter columns in the same table"),
        ("CREATE TABLE cnt.bad2 (k counter PRIMARY KEY, v counter)",
         "counter type is not supported for PRIMARY KEY column 'k'"),
        ("INSERT INTO cnt.c (k, r, n) VALUES (1, 1, 1)",
         "INSERT statements are not allowed on counter tables"),
        ("UPDATE cnt.c SET n = 5 WHERE k = 1 AND r = 1", "Cannot set the value of counter column n"),
        ("UPDATE cnt.c USING TTL 5 SET n = n + 1 WHERE k = 1 AND r = 1",
         "Cannot provide custom TTL for counter updates"),
        ("UPDATE cnt.c USING TIMESTAMP 5 SET n = n + 1 WHERE k = 1 AND r = 1",
         "Cannot provide custom timestamp for counter updates"),
        ("UPDATE cnt.c SET n = n + 1 WHERE k = 1 AND r = 1 IF n = 1",
         "Conditional updates are not supported on counter tables"),
        ("BEGIN BATCH UPDATE cnt.c SET n = n + 1 WHERE k = 1 AND r = 1; APPLY BATCH",
         "Cannot include a counter statement in a logged batch"),
    ]:
        expect_invalid(s, cql, fragment)
    s.execute("CREATE TABLE cnt.plain (k int PRIMARY KEY, v int)")
    assert c.control_connection.wait_for_schema_agreement(wait_time=20)
    expect_invalid(s, "UPDATE cnt.plain SET v = v + 1 WHERE k = 1", "for non counter column v")
    expect_invalid(s, "BEGIN COUNTER BATCH UPDATE cnt.plain SET v = 1 WHERE k = 1; APPLY BATCH",
                   "Cannot include non-counter statement in a counter batch")
    step("increments and decrements")
    # At QUORUM both ways: at the driver's default LOCAL_ONE a read may reach
    # a replica the second increment's leader has not replicated to yet.
    q = ConsistencyLevel.QUORUM
    s.execute(SimpleStatement("UPDATE cnt.c SET n = n + 5, m = m - 2 WHERE k = 0 AND r = 0",
                              consistency_level=q))
    s.execute(SimpleStatement("UPDATE cnt.c SET n = n - 1 WHERE k = 0 AND r = 0",
                              consistency_level=q))
    row = s.execute(SimpleStatement("SELECT n, m FROM cnt.c WHERE k = 0 AND r = 0",
                                    consistency_level=q)).one()
    assert (row.n, row.m) == (4, -2), row
    c.shutdown()

    clusters, sessions = [], []
    for h in hosts:
        profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([h]),
                                   consistency_level=ConsistencyLevel.QUORUM, request_timeout=20)
        cl = Cluster([h], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
        clusters.append(cl)
        sessions.append(cl.connect())
    lock = threading.Lock()
    totals = {"timeouts": 0, "errors": []}

    def client(i):
        s = sessions[i % len(sessions)]
        inc = s.prepare("UPDATE cnt.c SET n = n + ? WHERE k = 1 AND r = ?")
        timeouts = 0
        try:
            for j in range(ops):
                try:
                    if j % 10 == 9:
                        b = BatchStatement(batch_type=BatchType.COUNTER)
                        b.add(inc, (1, 0))
                        b.add(inc, (1, i + 1))
                        s.execute(b)
                    else:
                        s.execute(inc, (1, 0))
                        s.execute(inc, (1, i + 1))
                except WriteTimeout:
                    timeouts += 1
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                totals["errors"].append(repr(e))
        with lock:
            totals["timeouts"] += timeouts

    step("%d clients x %d increments over %d nodes" % (clients, ops, len(hosts)))
    t0 = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    rows = sessions[0].execute(
        SimpleStatement("SELECT r, n FROM cnt.c WHERE k = 1",
                        consistency_level=ConsistencyLevel.ALL))
    got = {r.r: r.n for r in rows}
    print("shared=%s expected=%d timeouts=%d elapsed=%.1fs"
          % (got.get(0), clients * ops, totals["timeouts"], elapsed), flush=True)
    assert not totals["errors"], totals["errors"]
    assert totals["timeouts"] == 0, "a timed-out increment has an unknown outcome"
    assert got.get(0) == clients * ops, got
    for i in range(clients):
        assert got.get(i + 1) == ops, (i, got)
    for cl in clusters:
        cl.shutdown()
    print("OK", flush=True)


def main():
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "basic":
        basic(host, port)
    elif mode == "register":
        register(sys.argv[4].split(","), port, int(sys.argv[5]), int(sys.argv[6]))
    elif mode == "counters":
        counters(sys.argv[4].split(","), port, int(sys.argv[5]), int(sys.argv[6]))
    elif mode == "check":
        check(sys.argv[4].split(","), port, int(sys.argv[5]))
    else:
        raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main()
