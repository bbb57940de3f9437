"""Issue 17's compatibility fixes through the DataStax Python driver.

Usage: driver_compat.py HOST PORT NODES
  - NetworkTopologyStrategy with 'replication_factor' (CREATE, ALTER,
    DESCRIBE, and the DESCRIBE output executed again);
  - compression = {} and {'enabled': 'false'};
  - system tables paged with fetch_size 1 (system.peers, system_schema
    with an ALLOW FILTERING range restriction, simple and prepared);
  - GROUP BY with count/min/max/sum/avg compared with a client-side
    computation, paged, with LIMIT, and Cassandra's refusals;
  - empty components of a composite partition key;
  - types given as class names (native classes, CompositeType as bytes).
Exits non-zero on the first failed step.
"""

import random
import sys
from collections import OrderedDict

from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.query import SimpleStatement


def step(msg):
    print("step:", msg, flush=True)


def expect_invalid(session, query, message):
    try:
        session.execute(query)
    except InvalidRequest as e:
        assert message in str(e), "wrong error for %r: %s" % (query, e)
        return
    raise AssertionError("accepted: %s" % query)


def replication(session, ks):
    row = session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (ks,)
    ).one()
    return dict(row.replication)


def nts(session):
    step("NTS with replication_factor")
    session.execute("DROP KEYSPACE IF EXISTS nts")
    session.execute(
        "CREATE KEYSPACE nts WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
    )
    want = {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy", "dc1": "3"}
    assert replication(session, "nts") == want, replication(session, "nts")
    session.execute(
        "ALTER KEYSPACE nts WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 2}"
    )
    assert replication(session, "nts")["dc1"] == "2", replication(session, "nts")
    # Cassandra 4.0's rule: an ALTER's replication_factor does not change
    # the datacenters the keyspace already has.
    # This ALTER changes nothing: peers must still advertise the new schema
    # version, or the driver's schema agreement wait times out.
    session.execute(
        "ALTER KEYSPACE nts WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}"
    )
    assert replication(session, "nts")["dc1"] == "2", replication(session, "nts")
    session.execute("ALTER KEYSPACE nts WITH durable_writes = false")
    described = session.execute("DESCRIBE KEYSPACE nts").one().create_statement
    print("  ", described)
    assert "'dc1': '2'" in described and "NetworkTopologyStrategy" in described, described
    assert "durable_writes = false" in described, described
    # What DESCRIBE prints creates the same keyspace again.
    session.execute("DROP KEYSPACE nts")
    session.execute(described)
    assert replication(session, "nts")["dc1"] == "2", replication(session, "nts")
    session.cluster.refresh_keyspace_metadata("nts")
    strategy = session.cluster.metadata.keyspaces["nts"].replication_strategy
    assert strategy.dc_replication_factors == {"dc1": 2}, strategy.dc_replication_factors


def compression(session):
    step("compression disabled")
    session.execute("CREATE TABLE nts.c1 (k int PRIMARY KEY, v int) WITH compression = {}")
    session.execute(
        "CREATE TABLE nts.c2 (k int PRIMARY KEY, v int) WITH compression = {'enabled': 'false'}"
    )
    for t in ["c1", "c2"]:
        row = session.execute(
            "SELECT compression FROM system_schema.tables WHERE keyspace_name = 'nts' AND table_name = %s",
            (t,),
        ).one()
        assert dict(row.compression) == {"enabled": "false"}, row
        session.execute("INSERT INTO nts.%s (k, v) VALUES (1, 2)" % t)
        assert session.execute("SELECT v FROM nts.%s WHERE k = 1" % t).one().v == 2


def system_paging(session, nodes):
    step("system.peers in pages of 1")
    rs = session.execute(SimpleStatement("SELECT peer, host_id FROM system.peers", fetch_size=1))
    assert len(rs.current_rows) == 1, rs.current_rows
    assert rs.has_more_pages == (nodes > 2), rs.has_more_pages
    peers = list(rs)
    assert len(peers) == nodes - 1, peers
    assert len({p.peer for p in peers}) == nodes - 1, peers

    step("system_schema.columns with position >= 0 ALLOW FILTERING, pages of 1")
    q = (
        "SELECT table_name, column_name, position FROM system_schema.columns "
        "WHERE keyspace_name = %s AND position >= 0 ALLOW FILTERING"
    )
    everything = [
        (r.table_name, r.column_name, r.position)
        for r in session.execute(
            "SELECT table_name, column_name, position FROM system_schema.columns "
            "WHERE keyspace_name = %s",
            ("grp",),
        )
    ]
    want = sorted(r for r in everything if r[2] >= 0)
    assert want and len(want) < len(everything), (want, everything)
    rs = session.execute(SimpleStatement(q, fetch_size=1), ("grp",))
    assert len(rs.current_rows) == 1 and rs.has_more_pages
    got = sorted((r.table_name, r.column_name, r.position) for r in rs)
    assert got == want, (got, want)
    ps = session.prepare(
        "SELECT table_name, column_name, position FROM system_schema.columns "
        "WHERE keyspace_name = ? AND position >= ? ALLOW FILTERING"
    )
    ps.fetch_size = 1
    got = sorted((r.table_name, r.column_name, r.position) for r in session.execute(ps, ("grp", 1)))
    assert got == [r for r in want if r[2] >= 1], got


def group_by(session):
    step("GROUP BY data")
    session.execute("DROP KEYSPACE IF EXISTS grp")
    session.execute(
        "CREATE KEYSPACE grp WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    session.execute(
        "CREATE TABLE grp.t (pk int, ck1 int, ck2 int, v int, PRIMARY KEY (pk, ck1, ck2))"
    )
    session.execute("CREATE TABLE grp.c (a int, b int, c int, v int, PRIMARY KEY ((a, b), c))")
    rnd = random.Random(17)
    ins = session.prepare("INSERT INTO grp.t (pk, ck1, ck2, v) VALUES (?, ?, ?, ?)")
    data = []
    for pk in range(5):
        for ck1 in range(4):
            for ck2 in range(rnd.randint(1, 5)):
                v = rnd.randint(0, 1000)
                data.append((pk, ck1, ck2, v))
                session.execute(ins, (pk, ck1, ck2, v))

    def expected(key, rows):
        groups = OrderedDict()
        for r in rows:
            groups.setdefault(key(r), []).append(r[3])
        return {
            k: (len(vs), min(vs), max(vs), sum(vs), sum(vs) // len(vs)) for k, vs in groups.items()
        }

    aggs = "count(*) AS n, min(v) AS lo, max(v) AS hi, sum(v) AS s, avg(v) AS a"

    step("GROUP BY pk over the whole table, paged by 2")
    rs = session.execute(SimpleStatement("SELECT pk, %s FROM grp.t GROUP BY pk" % aggs, fetch_size=2))
    got = {(r.pk,): (r.n, r.lo, r.hi, r.s, r.a) for r in rs}
    assert got == expected(lambda r: (r[0],), data), got

    step("GROUP BY pk, ck1, paged by 3")
    rs = session.execute(
        SimpleStatement("SELECT pk, ck1, %s FROM grp.t GROUP BY pk, ck1" % aggs, fetch_size=3)
    )
    assert len(rs.current_rows) == 3 and rs.has_more_pages
    rows = list(rs)
    got = {(r.pk, r.ck1): (r.n, r.lo, r.hi, r.s, r.a) for r in rows}
    assert len(rows) == len(got) == 20, len(rows)
    assert got == expected(lambda r: (r[0], r[1]), data), got

    step("GROUP BY within a partition, equality-restricted columns left out")
    for q in [
        "SELECT ck1, %s FROM grp.t WHERE pk = 2 GROUP BY ck1" % aggs,
        "SELECT ck1, %s FROM grp.t WHERE pk = 2 GROUP BY pk, ck1" % aggs,
    ]:
        got = OrderedDict(((r.ck1,), (r.n, r.lo, r.hi, r.s, r.a)) for r in session.execute(q))
        want = expected(lambda r: (r[1],), [r for r in data if r[0] == 2])
        assert dict(got) == want, (q, got, want)
        assert list(got) == sorted(got), "groups in clustering order"
    q = "SELECT ck2, count(*) AS n, sum(v) AS s FROM grp.t WHERE pk = 3 AND ck1 = 1 GROUP BY ck2"
    got = {r.ck2: (r.n, r.s) for r in session.execute(q)}
    want = {r[2]: (1, r[3]) for r in data if r[0] == 3 and r[1] == 1}
    assert got == want, (got, want)

    step("GROUP BY with LIMIT, and plain selectors from each group's first row")
    rows = list(session.execute("SELECT pk, ck1, count(*) AS n FROM grp.t WHERE pk = 1 GROUP BY ck1 LIMIT 2"))
    assert [r.ck1 for r in rows] == [0, 1], rows
    rows = list(session.execute("SELECT pk, ck1, ck2, v FROM grp.t WHERE pk = 1 GROUP BY ck1"))
    firsts = [r for r in data if r[0] == 1 and r[2] == 0]
    assert [(r.ck1, r.ck2, r.v) for r in rows] == [(f[1], f[2], f[3]) for f in firsts], rows
    assert not list(session.execute("SELECT count(*) FROM grp.t WHERE pk = 99 GROUP BY pk"))

    step("GROUP BY refusals")
    expect_invalid(
        session,
        "SELECT count(*) FROM grp.t GROUP BY v",
        "Group by is currently only supported on the columns of the PRIMARY KEY, got v",
    )
    order = "Group by currently only support groups of columns following their declared order in the PRIMARY KEY"
    expect_invalid(session, "SELECT count(*) FROM grp.t GROUP BY ck1", order)
    expect_invalid(session, "SELECT count(*) FROM grp.t WHERE pk = 1 GROUP BY ck2", order)
    expect_invalid(session, "SELECT count(*) FROM grp.t GROUP BY pk, ck2", order)
    expect_invalid(
        session,
        "SELECT count(*) FROM grp.c GROUP BY a",
        "Group by is not supported on only a part of the partition key",
    )
    expect_invalid(session, "SELECT count(*) FROM grp.t GROUP BY nope", "Undefined column name nope")

    step("tuple relations")
    part = [(r[1], r[2]) for r in data if r[0] == 1]
    cases = [
        ("(ck1, ck2) > (1, 2)", lambda t: t > (1, 2)),
        ("(ck1, ck2) >= (1, 0) AND (ck1, ck2) < (2, 1)", lambda t: (1, 0) <= t < (2, 1)),
        ("(ck1, ck2) <= (0, 1)", lambda t: t <= (0, 1)),
        ("(ck1) > (2)", lambda t: t[0] > 2),
        ("(ck1, ck2) = (1, 0)", lambda t: t == (1, 0)),
        ("ck1 = 2 AND (ck2) < (1)", lambda t: t[0] == 2 and t[1] < 1),
    ]
    for where, keep in cases:
        q = "SELECT ck1, ck2 FROM grp.t WHERE pk = 1 AND " + where
        got = [(r.ck1, r.ck2) for r in session.execute(q)]
        assert got == [t for t in part if keep(t)], (where, got)
    ps = session.prepare("SELECT ck1, ck2 FROM grp.t WHERE pk = ? AND (ck1, ck2) > (?, ?)")
    got = [(r.ck1, r.ck2) for r in session.execute(ps, (1, 1, 2))]
    assert got == [t for t in part if t > (1, 2)], got
    session.execute(
        "CREATE TABLE grp.d (pk int, a int, b int, PRIMARY KEY (pk, a, b)) "
        "WITH CLUSTERING ORDER BY (a DESC, b DESC)"
    )
    for a in range(3):
        for b in range(3):
            session.execute("INSERT INTO grp.d (pk, a, b) VALUES (0, %s, %s)", (a, b))
    got = [(r.a, r.b) for r in session.execute("SELECT a, b FROM grp.d WHERE pk = 0 AND (a, b) > (1, 1)")]
    assert got == [(2, 2), (2, 1), (2, 0), (1, 2)], got
    expect_invalid(
        session,
        "SELECT * FROM grp.t WHERE pk = 1 AND (ck2, ck1) > (1, 1)",
        "Clustering columns must appear in the PRIMARY KEY order in multi-column relations",
    )
    expect_invalid(
        session,
        "SELECT * FROM grp.t WHERE pk = 1 AND (pk, ck1) > (1, 1)",
        "Multi-column relations can only be applied to clustering columns but was applied to: pk",
    )


def empty_key_components(session):
    step("empty components of a composite partition key")
    session.execute("CREATE TABLE grp.ek (a text, b text, v int, PRIMARY KEY ((a, b)))")
    session.execute("INSERT INTO grp.ek (a, b, v) VALUES ('', 'x', 1)")
    ins = session.prepare("INSERT INTO grp.ek (a, b, v) VALUES (?, ?, ?)")
    session.execute(ins, ("", "", 2))
    sel = session.prepare("SELECT v FROM grp.ek WHERE a = ? AND b = ?")
    assert [r.v for r in session.execute(sel, ("", "x"))] == [1]
    assert [r.v for r in session.execute(sel, ("", ""))] == [2]
    assert sorted(r.v for r in session.execute("SELECT v FROM grp.ek")) == [1, 2]
    session.execute("CREATE TABLE grp.one (a text PRIMARY KEY, v int)")
    expect_invalid(session, "INSERT INTO grp.one (a, v) VALUES ('', 1)", "Key may not be empty")


def class_name_types(session):
    step("types given as class names")
    composite = ("org.apache.cassandra.db.marshal.CompositeType("
                 "org.apache.cassandra.db.marshal.Int32Type,org.apache.cassandra.db.marshal.UTF8Type)")
    session.execute("CREATE TABLE grp.cn (k int PRIMARY KEY, t 'org.apache.cassandra.db.marshal.UTF8Type', "
                    "v 'CompositeType(Int32Type, UTF8Type)')")
    # A composite of (1, 'a'): per component a 2-byte length, the bytes, an end byte.
    session.execute("INSERT INTO grp.cn (k, t, v) VALUES (1, 'x', 0x0004000000010000016100)")
    rs = session.execute("SELECT t, v FROM grp.cn WHERE k = 1")
    row = rs.one()
    assert row.t == "x" and tuple(row.v) == (1, "a"), row
    assert rs.column_types[1].cass_parameterized_type(full=True).startswith(
        "org.apache.cassandra.db.marshal.CompositeType"), rs.column_types[1]
    rows = list(session.execute(
        "SELECT column_name, type FROM system_schema.columns WHERE keyspace_name = 'grp' AND table_name = 'cn'"))
    types = dict((r.column_name, r.type) for r in rows)
    assert types == {"k": "int", "t": "text", "v": "'%s'" % composite}, types
    expect_invalid(session, "CREATE TABLE grp.bad (k int PRIMARY KEY, v 'com.example.MyType')",
                   "Unable to find abstract-type class 'com.example.MyType'")


def describe_functions(session):
    step("DESCRIBE FUNCTIONS / AGGREGATES: empty listings")
    for what in ["FUNCTIONS", "AGGREGATES"]:
        rows = list(session.execute("DESCRIBE " + what))
        assert rows == [], rows
    expect_invalid(session, "DESCRIBE FUNCTION grp.nope", "User defined function 'nope' not found in 'grp'")
    expect_invalid(session, "DESCRIBE AGGREGATE grp.nope", "User defined aggregate 'nope' not found in 'grp'")


def literals(session):
    step("date and timestamp literal forms, against the driver's own encoding")
    import datetime
    from cassandra.util import Date
    session.execute("CREATE TABLE grp.lit (k int PRIMARY KEY, d date, ts timestamp)")
    ins = session.prepare("INSERT INTO grp.lit (k, d, ts) VALUES (?, ?, ?)")
    cases = [
        # (date literal, timestamp literal, the same values bound by the driver)
        ("'2147483648'", "'0'", Date(0), datetime.datetime(1970, 1, 1)),
        ("'2147483649'", "'1000'", Date(1), datetime.datetime(1970, 1, 1, 0, 0, 1)),
        ("'-5877641-06-23'", "'-1000'", Date(-(2**31)), datetime.datetime(1969, 12, 31, 23, 59, 59)),
        ("'5881580-07-11'", "'1700000000000'", Date(2**31 - 1), datetime.datetime(2023, 11, 14, 22, 13, 20)),
        ("'123456-01-01'", "'2011-02-03 04:05:06'", None, datetime.datetime(2011, 2, 3, 4, 5, 6)),
    ]
    for i, (d, ts, want_d, want_ts) in enumerate(cases):
        session.execute("INSERT INTO grp.lit (k, d, ts) VALUES (%d, %s, %s)" % (i, d, ts))
        lit = session.execute("SELECT d, ts FROM grp.lit WHERE k = %d" % i).one()
        if want_d is not None:
            session.execute(ins, (100 + i, want_d, want_ts))
            bound = session.execute("SELECT d, ts FROM grp.lit WHERE k = %d" % (100 + i)).one()
            assert lit.d == bound.d, (d, lit.d, bound.d)
            assert lit.d == want_d, (d, lit.d)
        assert lit.ts == want_ts, (ts, lit.ts)
    step("duration literals in all three forms")
    from cassandra.util import Duration
    session.execute("CREATE TABLE grp.dur (k int PRIMARY KEY, d duration)")
    ns = (89 * 3600 + 9 * 60 + 9) * 10**9
    for i, (lit, want) in enumerate([
        ("89h9m9s", Duration(0, 0, ns)),
        ("PT89H9M9S", Duration(0, 0, ns)),
        ("P0000-00-00T89:09:09", Duration(0, 0, ns)),
        ("P0001-02-03T00:00:01", Duration(14, 3, 10**9)),
        ("-P0000-00-00T89:09:09", Duration(0, 0, -ns)),
    ]):
        session.execute("INSERT INTO grp.dur (k, d) VALUES (%d, %s)" % (i, lit))
        got = session.execute("SELECT d FROM grp.dur WHERE k = %d" % i).one().d
        assert got == want, (lit, got, want)
    step("varints and decimals past 128 bits")
    from decimal import Decimal
    session.execute("CREATE TABLE grp.big (k int PRIMARY KEY, vi varint, de decimal)")
    for i, (vi, de) in enumerate([
        ("1234567890123456789012345678901234567890", "123456789012345678901234567890.1234567890"),
        ("-1234567890123456789012345678901234567890", "-123456789012345678901234567890.1234567890"),
        ("340282366920938463463374607431768211456", "1e-40"),
        ("-340282366920938463463374607431768211457", "-99999999999999999999999999999999999999999.5"),
    ]):
        session.execute("INSERT INTO grp.big (k, vi, de) VALUES (%d, %s, %s)" % (i, vi, de))
        row = session.execute("SELECT vi, de FROM grp.big WHERE k = %d" % i).one()
        assert row.vi == int(vi), (vi, row.vi)
        assert row.de == Decimal(de), (de, row.de)
    expect_invalid(session, "INSERT INTO grp.lit (k, d) VALUES (9, '4294967296')", "date")
    expect_invalid(session, "INSERT INTO grp.lit (k, d) VALUES (9, '-5877641-06-22')", "date")


def main():
    host, port, nodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # Every step reads what it just wrote, through whichever replica the
    # driver picks: QUORUM reads and writes, so that is guaranteed.
    profile = ExecutionProfile(consistency_level=ConsistencyLevel.QUORUM)
    cluster = Cluster([host], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    session = cluster.connect()
    nts(session)
    compression(session)
    group_by(session)
    system_paging(session, nodes)
    describe_functions(session)
    empty_key_components(session)
    class_name_types(session)
    literals(session)
    cluster.shutdown()
    print("\nOK")


if __name__ == "__main__":
    main()
