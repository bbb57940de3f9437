"""Drives a real 3-node Gyre cluster with the DataStax Python driver, default
settings, contacting one node.

Usage: driver_cluster.py HOST PORT PHASE STATE_FILE [PROTOCOL]

  PROTOCOL: "negotiate" (default: no protocol_version given, the driver
    must settle on v5), or 4 or 5 (given explicitly).

  PHASE "main": all three nodes up. Discovery and tokens, DDL with schema
    agreement, simple / prepared / batch statements, paging, every CQL type,
    token-aware routing checked against Gyre's placement, error classes.
    Writes what the "down" phase needs to STATE_FILE (JSON). Runs again on
    the same cluster (it drops its keyspaces first).
  PHASE "v5": after "main". What only v5 has: the keyspace of QUERY,
    PREPARE and BATCH, the result metadata id of PREPARED and EXECUTE with
    METADATA_CHANGED, frames larger than one v5 frame both ways.
  PHASE "down": nodes 2 and 3 are down (the Rust test killed them).
    QUORUM at RF 3 must raise cassandra.Unavailable (required 2, alive 1);
    at RF 1, exactly the keys whose replica (per the driver's token map)
    is the live node are readable: Gyre places data where the driver routes.

Exits non-zero (with a traceback) on the first failed check; prints one line
per step so that a failure shows how far it got.
"""

import datetime
import decimal
import ipaddress
import json
import logging
import sys
import time
import uuid

from cassandra import (AlreadyExists, ConsistencyLevel, InvalidRequest,
                       Unavailable)
from cassandra.cluster import Cluster, NoHostAvailable
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.policies import FallthroughRetryPolicy
from cassandra.protocol import SyntaxException
from cassandra.query import BatchStatement, SimpleStatement
from cassandra.util import Date, Duration, Time


def step(msg):
    print("step:", msg, flush=True)


class Warnings(logging.Handler):
    """Collects the driver's warnings (schema disagreement, version, ...)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


WARNINGS = Warnings()
logging.getLogger("cassandra").addHandler(WARNINGS)
logging.basicConfig(level=logging.ERROR)


def rows_on(session, host, query, params=None):
    """Runs `query` on exactly `host` (no load balancing, no retry elsewhere)."""
    stmt = SimpleStatement(query, retry_policy=FallthroughRetryPolicy())
    return list(session.execute(stmt, params, host=host))


def expect(exc_class, fn, what, quiet=False):
    try:
        fn()
    except exc_class as e:
        if not quiet:
            print("  %s -> %s: %s" % (what, type(e).__name__, e))
        return e
    except Exception as e:  # noqa: BLE001 - report the wrong class precisely
        raise AssertionError("%s: expected %s, got %s: %r"
                             % (what, exc_class.__name__, type(e).__name__, e))
    raise AssertionError("%s: expected %s, nothing raised" % (what, exc_class.__name__))


def ring_owner(ring, token):
    """Gyre's (Cassandra's) rule: the node owning token T owns (previous, T]."""
    for t, host in ring:
        if token <= t:
            return host
    return ring[0][1]


# --------------------------------------------------------------------------
# phase "main"
# --------------------------------------------------------------------------

def discovery(cluster, session, host):
    step("discover all three nodes and their tokens")
    hosts = sorted(cluster.metadata.all_hosts(), key=lambda h: h.address)
    assert [h.address for h in hosts] == [host[:-1] + str(i) for i in (1, 2, 3)], hosts
    assert all(h.is_up for h in hosts), [(h, h.is_up) for h in hosts]
    # connect() returns once the first pools are up; the others follow.
    deadline = time.time() + 20
    while len(session.get_pool_state()) < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert len(session.get_pool_state()) == 3, session.get_pool_state()
    assert all(h.datacenter == "dc1" and h.rack for h in hosts), [(h.datacenter, h.rack) for h in hosts]
    token_map = cluster.metadata.token_map
    assert token_map is not None, "driver built no token map"
    assert cluster.metadata.partitioner == "org.apache.cassandra.dht.Murmur3Partitioner"
    ring = []
    for h in hosts:
        local = rows_on(session, h, "SELECT tokens, host_id, rpc_address, release_version "
                                    "FROM system.local")
        assert len(local) == 1, local
        row = local[0]
        assert row.host_id == h.host_id, (row.host_id, h.host_id)
        assert str(row.rpc_address) == h.address, (row.rpc_address, h.address)
        assert row.release_version == "5.0.0", row.release_version
        server_tokens = sorted(int(t) for t in row.tokens)
        driver_tokens = sorted(t.value for t, owner in token_map.token_to_host_owner.items()
                               if owner == h)
        assert server_tokens, "node %s reports no tokens" % h.address
        assert server_tokens == driver_tokens, (h.address, server_tokens[:5], driver_tokens[:5])
        ring.extend((t, h.address) for t in server_tokens)
        # Each node lists the other two in system.peers, with the same tokens.
        peers = rows_on(session, h, "SELECT peer, tokens, host_id FROM system.peers")
        assert sorted(str(p.peer) for p in peers) == sorted(o.address for o in hosts if o != h), peers
        for p in peers:
            other = next(o for o in hosts if o.address == str(p.peer))
            assert p.host_id == other.host_id
            assert sorted(t.value for t, owner in token_map.token_to_host_owner.items()
                          if owner == other) == sorted(int(t) for t in p.tokens)
    ring.sort()
    print("  hosts", [h.address for h in hosts], "tokens per host",
          len(ring) // 3)
    return hosts, ring


def ddl(cluster, session):
    step("DDL with schema agreement")
    t0 = time.time()
    session.execute("DROP KEYSPACE IF EXISTS ks3")
    session.execute("DROP KEYSPACE IF EXISTS ks1")
    session.execute("CREATE KEYSPACE ks3 WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 3}")
    session.execute("CREATE KEYSPACE ks1 WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session.execute("CREATE TABLE ks3.t (k int, c int, v text, PRIMARY KEY (k, c))")
    session.execute("CREATE TABLE ks3.scan (k int, c int, v int, PRIMARY KEY (k, c))")
    session.execute("CREATE TABLE ks3.composite (a int, b text, c int, v text, "
                    "PRIMARY KEY ((a, b), c)) WITH CLUSTERING ORDER BY (c DESC)")
    session.execute("CREATE TABLE ks1.kv (k text PRIMARY KEY, v int)")
    session.execute(
        "CREATE TABLE ks3.types (k text PRIMARY KEY, "
        "a ascii, bi bigint, bl blob, bo boolean, da date, de decimal, do double, "
        "du duration, fl float, ine inet, i int, si smallint, te text, vc varchar, "
        "ti time, ts timestamp, tu timeuuid, tiny tinyint, u uuid, vi varint, "
        "l list<int>, s set<text>, m map<text, int>, "
        "fl_l frozen<list<text>>, fr_s frozen<set<int>>, fr_m frozen<map<int, text>>, "
        "tup tuple<int, text, double>, nested map<text, frozen<list<int>>>)")
    assert cluster.control_connection.wait_for_schema_agreement(wait_time=10), "no schema agreement"
    took = time.time() - t0
    ks_meta = cluster.metadata.keyspaces
    assert ks_meta["ks3"].replication_strategy.replication_factor == 3
    assert ks_meta["ks1"].replication_strategy.replication_factor == 1
    t = ks_meta["ks3"].tables["composite"]
    assert [c.name for c in t.partition_key] == ["a", "b"], t.partition_key
    assert [c.name for c in t.clustering_key] == ["c"], t.clustering_key
    assert t.clustering_key[0].is_reversed, "DESC clustering not seen by the driver"
    types = ks_meta["ks3"].tables["types"].columns
    assert types["tup"].cql_type == "tuple<int, text, double>", types["tup"].cql_type
    assert types["fr_m"].cql_type == "frozen<map<int, text>>", types["fr_m"].cql_type
    # Every node reports the same schema version, for itself and for its
    # peers (the driver only asked the control connection's node).
    deadline = time.time() + 20
    while True:
        versions = set()
        for h in cluster.metadata.all_hosts():
            versions.add(rows_on(session, h, "SELECT schema_version FROM system.local")[0]
                          .schema_version)
            versions.update(p.schema_version for p in
                            rows_on(session, h, "SELECT schema_version FROM system.peers"))
        if len(versions) == 1 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert len(versions) == 1, versions
    print("  6 DDL statements + agreement in %.2f s" % took)
    e = expect(AlreadyExists, lambda: session.execute("CREATE TABLE ks3.t (k int PRIMARY KEY)"),
               "create existing table")
    assert e.keyspace == "ks3" and e.table == "t", (e.keyspace, e.table)


def statements(cluster, session):
    step("simple, prepared and batch statements at QUORUM")
    session.set_keyspace("ks3")
    for c in range(0, 100):
        session.execute(SimpleStatement("INSERT INTO t (k, c, v) VALUES (%s, %s, %s)",
                                        consistency_level=ConsistencyLevel.QUORUM),
                        (1, c, "simple-%d" % c))
    ins = session.prepare("INSERT INTO t (k, c, v) VALUES (?, ?, ?)")
    ins.consistency_level = ConsistencyLevel.QUORUM
    for c in range(100, 200):
        session.execute(ins, (1, c, "prepared-%d" % c))
    for start in range(200, 300, 50):
        batch = BatchStatement(consistency_level=ConsistencyLevel.QUORUM)
        for c in range(start, start + 50):
            if c % 2:
                batch.add(ins, (1, c, "batch-%d" % c))
            else:
                batch.add(SimpleStatement("INSERT INTO t (k, c, v) VALUES (%s, %s, %s)"),
                          (1, c, "batch-%d" % c))
        session.execute(batch)
    # Every node, read at QUORUM, sees all 300 rows.
    for h in cluster.metadata.all_hosts():
        stmt = SimpleStatement("SELECT count(*) FROM ks3.t WHERE k = 1",
                               consistency_level=ConsistencyLevel.QUORUM)
        n = session.execute(stmt, host=h).one()[0]
        assert n == 300, (h.address, n)
        stmt = SimpleStatement("SELECT v FROM ks3.t WHERE k = 1 AND c = 271",
                               consistency_level=ConsistencyLevel.QUORUM)
        assert session.execute(stmt, host=h).one().v == "batch-271"
    sel = session.prepare("SELECT v FROM t WHERE k = ? AND c = ?")
    assert session.execute(sel, (1, 150)).one().v == "prepared-150"
    # A DELETE and an UPDATE through prepared statements.
    upd = session.prepare("UPDATE t SET v = ? WHERE k = ? AND c = ?")
    session.execute(upd, ("updated", 1, 5))
    assert session.execute(sel, (1, 5)).one().v == "updated"
    dele = session.prepare("DELETE FROM t WHERE k = ? AND c = ?")
    session.execute(dele, (1, 5))
    assert session.execute(sel, (1, 5)).one() is None


def paging(cluster, session):
    step("paging through 10K rows with fetch_size 100")
    ins = session.prepare("INSERT INTO ks3.scan (k, c, v) VALUES (?, ?, ?)")
    args = [(k, c, k * 1000 + c) for k in range(200) for c in range(50)]
    t0 = time.time()
    results = execute_concurrent_with_args(session, ins, args, concurrency=64,
                                           raise_on_first_error=True)
    assert all(ok for ok, _ in results)
    print("  10000 inserts in %.2f s" % (time.time() - t0))
    token_of = session.prepare("SELECT token(k) FROM ks3.scan WHERE k = ? LIMIT 1")
    tokens = {k: session.execute(token_of, (k,)).one()[0] for k in range(200)}
    # Full-table scan (a range read through the coordinator) from each node.
    for h in sorted(cluster.metadata.all_hosts(), key=lambda h: h.address):
        t0 = time.time()
        stmt = SimpleStatement("SELECT k, c, v FROM ks3.scan", fetch_size=100)
        result = session.execute(stmt, host=h)
        seen = []
        pages = 0
        while True:
            pages += 1
            assert len(result.current_rows) <= 100, len(result.current_rows)
            seen.extend((r.k, r.c, r.v) for r in result.current_rows)
            if not result.has_more_pages:
                break
            result.fetch_next_page()
        assert len(seen) == 10000, (h.address, len(seen))
        assert len(set(seen)) == 10000, "duplicate rows"
        assert all(v == k * 1000 + c for k, c, v in seen)
        # Partitions come in token order, each one's rows in clustering order.
        ks = [k for k, _, _ in seen]
        order = [k for i, k in enumerate(ks) if i == 0 or ks[i - 1] != k]
        assert len(order) == 200, "a partition was split or repeated"
        assert [tokens[k] for k in order] == sorted(tokens[k] for k in order)
        for k in range(200):
            cs = [c for kk, c, _ in seen if kk == k]
            assert cs == list(range(50)), (k, cs)
        assert pages >= 100, pages
        print("  via %s: %d rows, %d pages, %.2f s" % (h.address, len(seen), pages, time.time() - t0))
    # The generator form (what most applications use), with QUORUM.
    stmt = SimpleStatement("SELECT k, c FROM ks3.scan", fetch_size=100,
                           consistency_level=ConsistencyLevel.QUORUM)
    assert len({(r.k, r.c) for r in session.execute(stmt)}) == 10000
    # Paged single-partition read with a token range restriction too.
    lo = sorted(tokens.values())[50]
    hi = sorted(tokens.values())[150]
    stmt = SimpleStatement("SELECT k FROM ks3.scan WHERE token(k) > %s AND token(k) <= %s",
                           fetch_size=100)
    got = [r.k for r in session.execute(stmt, (lo, hi))]
    want = sorted((k for k in range(200) if lo < tokens[k] <= hi), key=lambda k: tokens[k])
    assert len(got) == 100 * 50, len(got)
    assert sorted(set(got), key=lambda k: tokens[k]) == want


TYPE_COLUMNS = ("a", "bi", "bl", "bo", "da", "de", "do", "du", "fl", "ine", "i", "si", "te",
                "vc", "ti", "ts", "tu", "tiny", "u", "vi", "l", "s", "m", "fl_l", "fr_s",
                "fr_m", "tup", "nested")


def type_values():
    return {
        "a": "ascii only",
        "bi": -(2 ** 62),
        "bl": b"\x00\xff'quote\x80",
        "bo": False,
        "da": datetime.date(2024, 2, 29),
        "de": decimal.Decimal("-12345678901234567890.000123"),
        "do": -1.5e300,
        "du": Duration(14, 3, 7_200_000_000_123),
        "fl": 1.5,
        "ine": "2001:db8::ff00:42:8329",
        "i": -2 ** 31,
        "si": -32768,
        "te": "héllo 'wörld' \u2603",
        "vc": "",
        "ti": datetime.time(23, 59, 58, 123456),
        "ts": datetime.datetime(1969, 7, 20, 20, 17, 40, 123000),
        "tu": uuid.UUID("fe2b4360-28c6-11e2-81c1-0800200c9a66"),
        "tiny": -128,
        "u": uuid.UUID("0d9a7c43-bd62-4b07-9bd8-1a2b3c4d5e6f"),
        # Beyond i64; literals beyond i128 are an open executor gap (the
        # prepared path below checks a 10**40 varint in binary form).
        "vi": -(2 ** 100) - 7,
        "l": [3, 1, 3],
        "s": {"b", "a", "ü"},
        "m": {"x": 1, "y": -2},
        "fl_l": ["p", "q"],
        "fr_s": {5, -5},
        "fr_m": {2: "two", 1: "one"},
        "tup": (7, "seven", 7.5),
        "nested": {"k": [1, 2]},
    }


def normalize(col, v):
    """Driver result objects -> the plain Python values they were made from."""
    if v is None:
        return None
    if col == "da":
        return v.date() if isinstance(v, Date) else v
    if col == "ti":
        return v.time() if isinstance(v, Time) else v
    if col == "ine":
        return str(ipaddress.ip_address(v))
    if col in ("l", "fl_l"):
        return list(v)
    if col in ("s", "fr_s"):
        return set(v)
    if col in ("m", "fr_m"):
        return dict(v)
    if col == "nested":
        return {k: list(x) for k, x in v.items()}
    if col == "tup":
        return tuple(v)
    return v


def check_row(row, want, what):
    for col in TYPE_COLUMNS:
        got = normalize(col, getattr(row, col))
        exp = want[col]
        if col == "de" and what == "simple":
            # The driver interpolates a Decimal as float(value) (as against
            # Cassandra): the server must store exactly that float literal.
            assert got == decimal.Decimal(repr(float(exp))), (got, exp)
            continue
        if col == "ine":
            exp = str(ipaddress.ip_address(exp))
        assert got == exp, "%s: column %s: got %r, want %r" % (what, col, got, exp)


def types(cluster, session):
    """Every type, written and read back at QUORUM: at the driver's default
    LOCAL_ONE a read may reach a replica the write has not reached yet (as
    in Cassandra), since the INSERT's coordinator and the SELECT's replica
    are chosen independently."""
    profile = cluster.profile_manager.default
    saved = profile.consistency_level
    profile.consistency_level = ConsistencyLevel.QUORUM
    try:
        round_trip_types(cluster, session)
    finally:
        profile.consistency_level = saved


def round_trip_types(cluster, session):
    step("every CQL type round-tripped (simple, prepared, batch, literals)")
    want = type_values()
    cols = ", ".join(TYPE_COLUMNS)
    # Simple statement: the driver interpolates every value as a CQL literal.
    # The tuple column is left out: the driver 3.29 encodes a Python tuple
    # as a list literal (`[...]`), which Cassandra rejects as well.
    simple_cols = [c for c in TYPE_COLUMNS if c != "tup"]
    session.execute(
        "INSERT INTO ks3.types (k, %s) VALUES (%%s, %s)"
        % (", ".join(simple_cols), ", ".join(["%s"] * len(simple_cols))),
        ["simple"] + [want[c] for c in simple_cols])
    session.execute("UPDATE ks3.types SET tup = (7, 'seven', 7.5) WHERE k = 'simple'")
    # Prepared statement: the driver serializes each value itself.
    ins = session.prepare("INSERT INTO ks3.types (k, %s) VALUES (?, %s)"
                          % (cols, ", ".join(["?"] * len(TYPE_COLUMNS))))
    session.execute(ins, ["prepared"] + [want[c] for c in TYPE_COLUMNS])
    batch = BatchStatement()
    batch.add(ins, ["batched"] + [want[c] for c in TYPE_COLUMNS])
    session.execute(batch)
    sel = session.prepare("SELECT * FROM ks3.types WHERE k = ?")
    for k in ("simple", "prepared", "batched"):
        row = session.execute(sel, (k,)).one()
        assert row is not None, k
        check_row(row, want, k)
        # Also through a simple SELECT (unprepared, metadata in the response).
        check_row(session.execute("SELECT * FROM ks3.types WHERE k = %s", (k,)).one(), want, k)
    # The driver's own result objects (Date, Time, Duration, ...) bind back.
    row = session.execute(sel, ("prepared",)).one()
    session.execute(ins, ["again"] + [getattr(row, c) for c in TYPE_COLUMNS])
    check_row(session.execute(sel, ("again",)).one(), want, "again")
    # A varint wider than 128 bits, bound in binary.
    vi = session.prepare("UPDATE ks3.types SET vi = ? WHERE k = ?")
    session.execute(vi, (-(10 ** 40) - 7, "wide"))
    assert session.execute(sel, ("wide",)).one().vi == -(10 ** 40) - 7
    # cassandra.util.Date / Time interpolate as an integer day count and a
    # time string: both must parse.
    session.execute("INSERT INTO ks3.types (k, da, ti) VALUES (%s, %s, %s)",
                    ("utiltypes", Date(datetime.date(1900, 1, 1)), Time(datetime.time(0, 0, 1))))
    row = session.execute(sel, ("utiltypes",)).one()
    assert normalize("da", row.da) == datetime.date(1900, 1, 1), row.da
    assert normalize("ti", row.ti) == datetime.time(0, 0, 1), row.ti
    # Nulls: an absent row and null columns.
    session.execute(ins, ["nulls"] + [None] * len(TYPE_COLUMNS))
    row = session.execute(sel, ("nulls",)).one()
    assert row is not None and all(getattr(row, c) in (None, [], set(), {}) for c in TYPE_COLUMNS), row
    assert session.execute(sel, ("absent",)).one() is None
    # Literal forms typed into CQL text.
    session.execute(
        "INSERT INTO ks3.types (k, bl, bo, da, du, ine, ti, ts, tu, vi, de, do, fl, u) VALUES "
        "('lit', 0xCAFE, true, '2024-02-29', 1y2mo3w4d5h6m7s8ms9us10ns, '10.0.0.1', "
        "'01:02:03.000000004', '2024-05-17T12:34:56.789Z', now(), -123, 1.5e3, -Infinity, NaN, uuid())")
    row = session.execute(sel, ("lit",)).one()
    assert row.bl == b"\xca\xfe" and row.bo is True, row
    assert normalize("da", row.da) == datetime.date(2024, 2, 29), row.da
    assert row.du == Duration(14, 25, 5 * 3600 * 10 ** 9 + 6 * 60 * 10 ** 9 + 7 * 10 ** 9
                              + 8 * 10 ** 6 + 9 * 10 ** 3 + 10), row.du
    assert str(row.ine) == "10.0.0.1", row.ine
    assert row.ti == Time(3723000000004), row.ti
    assert row.ts == datetime.datetime(2024, 5, 17, 12, 34, 56, 789000), row.ts
    assert row.tu.version == 1 and row.u.version == 4, (row.tu, row.u)
    assert row.vi == -123 and row.de == decimal.Decimal("1.5e3"), (row.vi, row.de)
    assert row.do == float("-inf") and row.fl != row.fl, (row.do, row.fl)


def routing(cluster, session, hosts, ring):
    step("token-aware routing and tokens")
    token_map = cluster.metadata.token_map
    ins = session.prepare("INSERT INTO ks1.kv (k, v) VALUES (?, ?)")
    assert ins.routing_key_indexes == [0], ins.routing_key_indexes
    tok = session.prepare("SELECT token(k) FROM ks1.kv WHERE k = ?")
    keys = ["key-%d" % i for i in range(60)] + ["", "a", "é", "héllo wörld", "\u2603" * 9,
                                                 "0123456789abcdef"]
    placement = {}
    coordinators = set()
    for i, k in enumerate(keys):
        if k == "":
            continue  # an empty partition key is invalid in Cassandra
        bound = ins.bind((k, i))
        replicas = cluster.metadata.get_replicas("ks1", bound.routing_key)
        assert len(replicas) == 1, (k, replicas)
        result = session.execute(bound)
        coord = result.response_future.coordinator_host
        coordinators.add(coord)
        assert coord == replicas[0].endpoint.address or coord == replicas[0], \
            "key %r: sent to %s, replica %s" % (k, coord, replicas[0])
        driver_token = token_map.token_class.from_key(bound.routing_key).value
        server_token = session.execute(tok, (k,)).one()[0]
        assert driver_token == server_token, (k, driver_token, server_token)
        # The replica by Gyre's own ring (the tokens the nodes report).
        assert ring_owner(ring, server_token) == replicas[0].address, k
        placement[k] = replicas[0].address
    print("  %d keys, coordinators used: %s" % (len(placement), sorted(str(c) for c in coordinators)))
    assert len({v for v in placement.values()}) == 3, "keys did not spread over the three nodes"
    # Composite partition keys: the driver's token equals the server's.
    ins2 = session.prepare("INSERT INTO ks3.composite (a, b, c, v) VALUES (?, ?, ?, ?)")
    tok2 = session.prepare("SELECT token(a, b) FROM ks3.composite WHERE a = ? AND b = ?")
    named = session.prepare("SELECT v FROM ks3.composite WHERE b = :b AND c = :c AND a = :a")
    assert ins2.routing_key_indexes == [0, 1], ins2.routing_key_indexes
    assert named.routing_key_indexes == [2, 0], named.routing_key_indexes
    for a, b in [(1, "x"), (-7, "é"), (2 ** 31 - 1, "z"), (0, "long" * 40)]:
        bound = ins2.bind((a, b, 3, "v%d" % a))
        result = session.execute(bound)
        driver_token = token_map.token_class.from_key(bound.routing_key).value
        assert driver_token == session.execute(tok2, (a, b)).one()[0], (a, b)
        assert result.response_future.coordinator_host in [
            r.endpoint.address for r in cluster.metadata.get_replicas("ks3", bound.routing_key)
        ] + cluster.metadata.get_replicas("ks3", bound.routing_key)
        assert session.execute(named, {"a": a, "b": b, "c": 3}).one().v == "v%d" % a
    return placement


def errors(cluster, session):
    step("errors arrive as the right exception classes")
    expect(SyntaxException, lambda: session.execute("SELEC * FROM ks3.t"), "syntax error")
    expect(SyntaxException, lambda: session.execute("SELECT * FROM ks3.t WHERE"), "truncated")
    expect(InvalidRequest, lambda: session.execute("SELECT * FROM nope.t"), "unknown keyspace")
    expect(InvalidRequest, lambda: session.execute("SELECT * FROM ks3.nope"), "unknown table")
    expect(InvalidRequest, lambda: session.prepare("SELECT * FROM ks3.nope WHERE k = ?"),
           "prepare on unknown table")
    expect(InvalidRequest, lambda: session.execute("SELECT nope FROM ks3.t"), "unknown column")
    expect(InvalidRequest,
           lambda: session.execute("INSERT INTO ks3.t (k, c, v) VALUES ('one', 1, 'x')"),
           "literal of the wrong type")
    expect(InvalidRequest,
           lambda: session.execute("INSERT INTO ks3.t (k, c, v) VALUES (%s, %s, %s)", (1, 2, 3)),
           "interpolated int into a text column")
    ins = session.prepare("INSERT INTO ks3.t (k, c, v) VALUES (?, ?, ?)")
    # The driver type-checks bind values itself and raises before sending.
    expect(TypeError, lambda: session.execute(ins, ("one", 1, "x")), "str bound to int (client)")
    # A value of the wrong size on the wire (3 bytes for an int): the
    # server must refuse it, not store or crash.
    bound = ins.bind((1, 1, "x"))
    bound.values[1] = b"\x00\x00\x01"
    expect(InvalidRequest, lambda: session.execute(bound), "3-byte int bind value (server)")
    bound = ins.bind((1, 1, "x"))
    bound.values[2] = b"\xff\xfe"
    expect(InvalidRequest, lambda: session.execute(bound), "invalid UTF-8 for text (server)")
    expect(InvalidRequest, lambda: session.execute("SELECT * FROM ks3.t WHERE v = 'x'"),
           "needs ALLOW FILTERING")
    # The connection is still usable after all that.
    assert session.execute("SELECT v FROM ks3.t WHERE k = 1 AND c = 7").one().v == "simple-7"


def connect(host, port, protocol):
    """A cluster at `protocol` ("negotiate", "4" or "5") and its session."""
    if protocol == "negotiate":
        cluster = Cluster([host], port=port)
        expected = 5
    else:
        expected = int(protocol)
        cluster = Cluster([host], port=port, protocol_version=expected)
    session = cluster.connect()
    assert cluster.protocol_version == expected, (cluster.protocol_version, expected)
    print("  protocol version", cluster.protocol_version)
    return cluster, session


def main_phase(host, port, state_file, protocol):
    step("connect to %s only (protocol: %s)" % (host, protocol))
    cluster, session = connect(host, port, protocol)
    # lz4 is installed: by default every connection compresses its frames.
    conns = [c for pool in session.get_pools() for c in pool.get_connections()]
    assert conns and all(c.compressor is not None for c in conns), "lz4 not negotiated"
    hosts, ring = discovery(cluster, session, host)
    ddl(cluster, session)
    statements(cluster, session)
    paging(cluster, session)
    types(cluster, session)
    placement = routing(cluster, session, hosts, ring)
    errors(cluster, session)
    with open(state_file, "w") as f:
        json.dump({"placement": placement}, f)
    cluster.shutdown()
    bad = [w for w in WARNINGS.messages if "schema" in w.lower() or "version" in w.lower()]
    print("driver warnings:", WARNINGS.messages)
    assert not bad, bad


# --------------------------------------------------------------------------
# phase "down": nodes 2 and 3 killed
# --------------------------------------------------------------------------

def down_phase(host, port, state_file):
    with open(state_file) as f:
        placement = json.load(f)["placement"]
    step("connect to %s with two nodes down" % host)
    cluster = Cluster([host], port=port)
    session = cluster.connect()
    live = [h for h in cluster.metadata.all_hosts() if h.address == host]
    assert len(live) == 1
    live = live[0]
    print("  hosts:", [(h.address, h.is_up) for h in cluster.metadata.all_hosts()])

    step("QUORUM at RF 3 with one replica alive -> Unavailable")
    for cql in ("INSERT INTO ks3.t (k, c, v) VALUES (9, 9, 'x')",
                "SELECT * FROM ks3.t WHERE k = 1"):
        stmt = SimpleStatement(cql, consistency_level=ConsistencyLevel.QUORUM,
                               retry_policy=FallthroughRetryPolicy())
        e = expect(Unavailable, lambda: session.execute(stmt, host=live), cql)
        assert e.consistency == ConsistencyLevel.QUORUM, e.consistency
        assert (e.required_replicas, e.alive_replicas) == (2, 1), \
            (e.required_replicas, e.alive_replicas)
    ins = session.prepare("INSERT INTO ks3.t (k, c, v) VALUES (?, ?, ?)")
    ins.consistency_level = ConsistencyLevel.QUORUM
    ins.retry_policy = FallthroughRetryPolicy()
    expect(Unavailable, lambda: session.execute(ins, (9, 9, "x")), "prepared QUORUM insert")
    # With the default retry policy the driver retries Unavailable once on
    # the next host; with none left it raises NoHostAvailable carrying it.
    stmt = SimpleStatement("SELECT * FROM ks3.t WHERE k = 1",
                           consistency_level=ConsistencyLevel.QUORUM)
    e = expect(Exception, lambda: session.execute(stmt),
               "QUORUM read, default retry policy")
    assert isinstance(e, (Unavailable, NoHostAvailable)), e
    if isinstance(e, NoHostAvailable):
        assert any(isinstance(x, Unavailable) for x in e.errors.values()), e.errors
    # ONE still works (hinted write; the live replica answers the read).
    session.execute(SimpleStatement("INSERT INTO ks3.t (k, c, v) VALUES (9, 9, 'x')",
                                    consistency_level=ConsistencyLevel.ONE))
    stmt = SimpleStatement("SELECT v FROM ks3.t WHERE k = 9 AND c = 9",
                           consistency_level=ConsistencyLevel.ONE)
    assert session.execute(stmt).one().v == "x"

    step("RF 1: readable exactly where the driver routed")
    sel = session.prepare("SELECT v FROM ks1.kv WHERE k = ?")
    sel.consistency_level = ConsistencyLevel.ONE
    sel.retry_policy = FallthroughRetryPolicy()
    here = 0
    for k, replica in placement.items():
        if replica == host:
            assert session.execute(sel, (k,), host=live).one() is not None, k
            here += 1
        else:
            e = expect(Unavailable, lambda: session.execute(sel, (k,), host=live), "key on " + replica,
                       quiet=True)
            assert (e.required_replicas, e.alive_replicas) == (1, 0)
    assert here > 0, "no key on the live node"
    print("  %d of %d keys on the live node" % (here, len(placement)))
    cluster.shutdown()


# --------------------------------------------------------------------------
# phase "v5": what only protocol v5 carries
# --------------------------------------------------------------------------

def v5_phase(host, port):
    step("connect to %s at v5, no keyspace" % host)
    cluster, session = connect(host, port, "5")
    conns = [c for pool in session.get_pools() for c in pool.get_connections()]
    assert conns and all(c.compressor is not None for c in conns), "lz4 not negotiated"

    step("keyspace of QUERY (no USE, unqualified table)")
    session.execute(SimpleStatement("INSERT INTO kv (k, v) VALUES ('v5-a', 1)", keyspace="ks1"))
    row = session.execute(SimpleStatement("SELECT v FROM kv WHERE k = 'v5-a'",
                                          keyspace="ks1")).one()
    assert row is not None and row.v == 1, row
    expect(InvalidRequest, lambda: session.execute("SELECT v FROM kv WHERE k = 'v5-a'"),
           "unqualified without a keyspace")

    step("keyspace of PREPARE")
    ins = session.prepare("INSERT INTO kv (k, v) VALUES (?, ?)", keyspace="ks1")
    sel = session.prepare("SELECT k, v FROM kv WHERE k = ?", keyspace="ks1")
    session.execute(ins, ("v5-b", 2))
    assert session.execute(sel, ("v5-b",)).one().v == 2

    step("keyspace of BATCH")
    batch = BatchStatement()
    batch.add(SimpleStatement("INSERT INTO kv (k, v) VALUES ('v5-c', 3)"))
    batch.add(SimpleStatement("INSERT INTO kv (k, v) VALUES ('v5-d', 4)"))
    # The driver sends the batch's keyspace in the BATCH message at v5.
    batch.keyspace = "ks1"
    session.execute(batch)
    assert session.execute(sel, ("v5-c",)).one().v == 3
    assert session.execute(sel, ("v5-d",)).one().v == 4

    step("result metadata id: PREPARED carries one, a stale one gets METADATA_CHANGED")
    good = sel.result_metadata_id
    assert good and len(good) == 16, good
    # Every node computes the same id for the same metadata.
    for h in cluster.metadata.all_hosts():
        ps = session.prepare("SELECT k, v FROM kv WHERE k = ?", keyspace="ks1")
        assert ps.result_metadata_id == good, (h, ps.result_metadata_id, good)
        assert session.execute(sel, ("v5-b",), host=h).one().v == 2
    # With a stale id (and skip_metadata, as the driver asks once it has
    # the metadata) the rows come with METADATA_CHANGED, the new id and
    # the full metadata, which the driver must parse to decode the row.
    # (Driver 3.29 reads the new id but keeps its own.)
    sel.result_metadata_id = b"stale-id"
    for h in cluster.metadata.all_hosts():
        row = session.execute(sel, ("v5-b",), host=h).one()
        assert (row.k, row.v) == ("v5-b", 2), row

    step("payloads over one v5 frame (128 KiB) both ways")
    session.execute("CREATE TABLE IF NOT EXISTS ks3.big (k int PRIMARY KEY, v text)")
    big = "x" * 400000
    put = session.prepare("INSERT INTO ks3.big (k, v) VALUES (?, ?)")
    put.consistency_level = ConsistencyLevel.QUORUM
    for k in range(3):
        session.execute(put, (k, big + str(k)))
    rows = list(session.execute(SimpleStatement("SELECT k, v FROM ks3.big",
                                                consistency_level=ConsistencyLevel.QUORUM)))
    assert sorted((r.k, r.v) for r in rows) == [(k, big + str(k)) for k in range(3)]

    step("NTS with replication_factor, compression = {}")
    session.execute("DROP KEYSPACE IF EXISTS ntsks")
    session.execute("CREATE KEYSPACE ntsks WITH replication = "
                    "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}")
    rep = session.execute("SELECT replication FROM system_schema.keyspaces "
                          "WHERE keyspace_name = 'ntsks'").one().replication
    assert rep == {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
                   "dc1": "3"}, rep
    desc = session.execute("DESCRIBE KEYSPACE ntsks").one().create_statement
    assert "'class': 'org.apache.cassandra.locator.NetworkTopologyStrategy', 'dc1': '3'" in desc, desc
    session.execute("ALTER KEYSPACE ntsks WITH replication = "
                    "{'class': 'NetworkTopologyStrategy', 'replication_factor': 2, 'dc1': 2}")
    desc = session.execute("DESCRIBE KEYSPACE ntsks").one().create_statement
    assert "'dc1': '2'" in desc, desc
    session.execute("DROP KEYSPACE ntsks")
    session.execute("CREATE KEYSPACE ntsks WITH replication = "
                    "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}")
    session.execute("CREATE TABLE ntsks.nocomp (k int PRIMARY KEY, v text) WITH compression = {}")
    session.execute(SimpleStatement("INSERT INTO ntsks.nocomp (k, v) VALUES (1, 'a')",
                                    consistency_level=ConsistencyLevel.ALL))
    assert session.execute(SimpleStatement("SELECT v FROM ntsks.nocomp WHERE k = 1",
                                           consistency_level=ConsistencyLevel.ALL)).one().v == "a"
    comp = session.execute("SELECT compression FROM system_schema.tables WHERE keyspace_name = "
                           "'ntsks' AND table_name = 'nocomp'").one().compression
    assert comp == {"enabled": "false"}, comp

    step("paging at v5")
    stmt = SimpleStatement("SELECT * FROM ks3.scan LIMIT 50", fetch_size=7)
    n = sum(1 for _ in session.execute(stmt))
    assert n == 50, n
    cluster.shutdown()
    print("driver warnings:", WARNINGS.messages)


def main():
    host, port, phase, state_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    protocol = sys.argv[5] if len(sys.argv) > 5 else "negotiate"
    if phase == "main":
        main_phase(host, port, state_file, protocol)
    elif phase == "v5":
        v5_phase(host, port)
    elif phase == "down":
        down_phase(host, port, state_file)
    else:
        raise SystemExit("unknown phase " + phase)
    print("OK")


if __name__ == "__main__":
    main()
