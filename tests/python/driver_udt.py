"""User-defined types through the DataStax Python driver (issue 17).

Usage: driver_udt.py PROTOCOL HOST:PORT [HOST:PORT ...] (protocol 4 or 5).
Creates keyspace udt_v<PROTOCOL> (RF 3); exits non-zero on the first
failed step. The first address is the contact point; the statements go
to every node the driver knows (its default load balancing).
"""

import datetime
import decimal
import ipaddress
import json
import sys
import time
import uuid
from types import SimpleNamespace

from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.protocol import SyntaxException
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.cqltypes import UserType
from cassandra.policies import WhiteListRoundRobinPolicy
from cassandra.util import Date, Duration, Time


def step(msg):
    print("step:", msg, flush=True)


def expect_invalid(session, query, params, message):
    try:
        session.execute(query, params)
    except InvalidRequest as e:
        assert message in str(e), "wrong error for %r: %s" % (query, e)
        return
    raise AssertionError("accepted: %s %r" % (query, params))


def wait_for(what, pred, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def A(street=None, city=None, zip=None):
    """An address as the driver binds it without a registered class."""
    return (street, city, zip)


class Address(object):
    def __init__(self, street=None, city=None, zip=None, **_later_fields):
        self.street = street
        self.city = city
        self.zip = zip

    def __eq__(self, other):
        return (
            isinstance(other, Address)
            and (self.street, self.city, self.zip) == (other.street, other.city, other.zip)
        )

    def __repr__(self):
        return "Address(%r, %r, %r)" % (self.street, self.city, self.zip)


# Every native field type, with a value of each.
ALL_FIELDS = [
    ("f_ascii", "ascii", "abc"),
    ("f_bigint", "bigint", -(2**62)),
    ("f_blob", "blob", b"\x00\xffbin"),
    ("f_boolean", "boolean", True),
    ("f_date", "date", Date(datetime.date(2024, 2, 29))),
    ("f_decimal", "decimal", decimal.Decimal("-12345.678901")),
    ("f_double", "double", 2.5e300),
    ("f_duration", "duration", Duration(1, 2, 3000000000)),
    ("f_float", "float", -1.5),
    ("f_inet", "inet", "2001:db8::1"),
    ("f_int", "int", -7),
    ("f_smallint", "smallint", -32768),
    ("f_text", "text", "héllo"),
    ("f_time", "time", Time(datetime.time(13, 14, 15, 123456))),
    ("f_timestamp", "timestamp", datetime.datetime(2021, 1, 1, 12, 30, 45, 123000)),
    ("f_timeuuid", "timeuuid", uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")),
    ("f_tinyint", "tinyint", 127),
    ("f_uuid", "uuid", uuid.UUID("550e8400-e29b-41d4-a716-446655440000")),
    ("f_varint", "varint", 123456789012345678901234567890),
    ("f_list", "list<int>", [3, 1, 2]),
    ("f_set", "set<text>", {"a", "b"}),
    ("f_map", "map<text, int>", {"x": 1, "y": 2}),
    ("f_tuple", "tuple<int, text>", (1, "t")),
    ("f_vector", "vector<float, 2>", [1.5, -2.0]),
]


def main():
    protocol = int(sys.argv[1])
    hosts = [a.split(":") for a in sys.argv[2:]]
    port = int(hosts[0][1])
    ks = "udt_v%d" % protocol
    # Steps read what they just wrote through whichever replica the driver
    # picks (RF 3): QUORUM both ways makes that a guarantee.
    profile = ExecutionProfile(consistency_level=ConsistencyLevel.QUORUM)
    cluster = Cluster([h for h, _ in hosts], port=port, protocol_version=protocol,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    session = cluster.connect()
    assert cluster.protocol_version == protocol, cluster.protocol_version

    step("create types and tables")
    session.execute(
        "CREATE KEYSPACE %s WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 3}" % ks
    )
    session.set_keyspace(ks)
    session.execute("CREATE TYPE address (street text, city text, zip int)")
    session.execute("CREATE TYPE IF NOT EXISTS address (other int)")
    session.execute(
        "CREATE TYPE everything (%s, home frozen<address>)"
        % ", ".join("%s %s" % (n, t) for n, t, _ in ALL_FIELDS)
    )
    session.execute(
        "CREATE TABLE people (id int PRIMARY KEY, home frozen<address>, work address, "
        "allv frozen<everything>, history list<frozen<address>>, "
        "by_name map<text, frozen<address>>, pair tuple<int, frozen<address>>)"
    )
    session.execute(
        "CREATE TYPE pk_t (a text, b int)"
    )
    session.execute(
        "CREATE TABLE by_addr (a frozen<pk_t>, n int, c frozen<address>, "
        "PRIMARY KEY (a, n, c))"
    )

    step("driver metadata of the types")
    meta = cluster.metadata.keyspaces[ks]
    addr = meta.user_types["address"]
    assert addr.field_names == ["street", "city", "zip"], addr.field_names
    assert addr.field_types == ["text", "text", "int"], addr.field_types
    ev = meta.user_types["everything"]
    assert ev.field_names[-1] == "home", ev.field_names
    assert ev.field_types[-1] == "frozen<address>", ev.field_types
    assert ev.field_types[:len(ALL_FIELDS)] == [t for _, t, _ in ALL_FIELDS], ev.field_types
    cql = meta.export_as_string()
    assert "CREATE TYPE %s.address" % ks in cql, cql
    assert cql.index("CREATE TYPE %s.address" % ks) < cql.index("CREATE TYPE %s.everything" % ks)
    assert cql.index("CREATE TYPE %s.everything" % ks) < cql.index("CREATE TABLE %s.people" % ks)
    col = meta.tables["people"].columns["work"]
    assert col.cql_type == "address", col.cql_type

    step("literal round trip, unregistered (named tuples)")
    session.execute(
        "INSERT INTO people (id, home, work) VALUES "
        "(1, {street: '1 Main St', city: 'Springfield', zip: 12345}, {city: 'Shelbyville'})"
    )
    row = session.execute("SELECT home, work FROM people WHERE id = 1").one()
    assert (row.home.street, row.home.city, row.home.zip) == ("1 Main St", "Springfield", 12345), row
    assert (row.work.street, row.work.city, row.work.zip) == (None, "Shelbyville", None), row

    step("prepared metadata carries the UDT type option")
    ins = session.prepare("INSERT INTO people (id, home, work, allv, history, by_name, pair) VALUES (?, ?, ?, ?, ?, ?, ?)")
    home_t = ins.column_metadata[1].type
    assert issubclass(home_t, UserType), home_t
    assert home_t.typename == "address" and home_t.keyspace == ks, (home_t.typename, home_t.keyspace)
    assert list(home_t.fieldnames) == ["street", "city", "zip"], home_t.fieldnames
    all_t = ins.column_metadata[3].type
    assert list(all_t.fieldnames) == [n for n, _, _ in ALL_FIELDS] + ["home"], all_t.fieldnames

    step("every field type, nested and in collections, prepared")
    everything = dict((n, v) for n, _, v in ALL_FIELDS)
    everything["home"] = A("n", None, 1)
    session.execute(
        ins,
        (
            2,
            A("s2", "c2", 2),
            A("w2", "wc2", None),
            SimpleNamespace(**everything),
            [A("h1", None, 1), A("h2", None, 2)],
            {"bob": A("b", "bc", 3)},
            (7, A("p", "pc", 4)),
        ),
    )
    row = session.execute("SELECT * FROM people WHERE id = 2").one()
    for n, _, v in ALL_FIELDS:
        got = getattr(row.allv, n)
        if n == "f_inet":
            got, v = ipaddress.ip_address(got), ipaddress.ip_address(v)
        if n in ("f_list", "f_vector"):
            got = list(got)
        if n == "f_set":
            got = set(got)
        if n == "f_map":
            got = dict(got)
        assert got == v, (n, got, v)
    assert row.allv.home.street == "n" and row.allv.home.zip == 1, row.allv.home
    assert [h.street for h in row.history] == ["h1", "h2"], row.history
    assert row.by_name["bob"].city == "bc", row.by_name
    assert row.pair[0] == 7 and row.pair[1].zip == 4, row.pair
    # Also read back through a prepared SELECT (result metadata by id).
    sel = session.prepare("SELECT allv, home FROM people WHERE id = ?")
    row2 = session.execute(sel, (2,)).one()
    assert row2.allv == row.allv and row2.home.city == "c2", row2

    step("null and missing fields")
    session.execute(ins, (3, A(None, None, None), A(city="only"), None, None, None, None))
    row = session.execute("SELECT home, work, allv FROM people WHERE id = 3").one()
    assert (row.home.street, row.home.city, row.home.zip) == (None, None, None), row
    assert (row.work.street, row.work.city, row.work.zip) == (None, "only", None), row
    assert row.allv is None, row

    step("frozen UDTs in the primary key, ordered by field")
    bk = session.prepare("INSERT INTO by_addr (a, n, c) VALUES (?, ?, ?)")
    a = ("k", 1)
    for n, zip_ in [(1, 30), (1, 10), (2, 20)]:
        session.execute(bk, (a, n, A("c", None, zip_)))
    rows = list(session.execute("SELECT n, c FROM by_addr WHERE a = {a: 'k', b: 1}"))
    assert [(r.n, r.c.zip) for r in rows] == [(1, 10), (1, 30), (2, 20)], rows
    rows = list(session.execute(session.prepare("SELECT c FROM by_addr WHERE a = ? AND n = 1 AND c = ?"),
                                (a, A("c", None, 30))))
    assert len(rows) == 1, rows

    step("field updates, simple and prepared; field deletion")
    session.execute("UPDATE people SET work.city = 'Capital City' WHERE id = 1")
    upd = session.prepare("UPDATE people SET work.zip = ?, work.street = ? WHERE id = ?")
    session.execute(upd, (999, "742 Evergreen", 1))
    row = session.execute("SELECT work FROM people WHERE id = 1").one()
    assert (row.work.street, row.work.city, row.work.zip) == ("742 Evergreen", "Capital City", 999), row
    session.execute("DELETE work.street FROM people WHERE id = 1")
    expect_invalid(session, "UPDATE people SET home.city = 'x' WHERE id = 1", None, "frozen UDT column home")
    expect_invalid(session, "UPDATE people SET work.nope = 'x' WHERE id = 1", None, "does not have a field named nope")

    step("field selection")
    row = session.execute("SELECT work.city, work.street, home.zip FROM people WHERE id = 1").one()
    assert row == ("Capital City", None, 12345), row
    assert list(row._fields) == ["work_city", "work_street", "home_zip"], row._fields
    row = session.execute(session.prepare("SELECT allv.home.street, allv.f_int FROM people WHERE id = ?"), (2,)).one()
    assert tuple(row) == ("n", -7), row
    expect_invalid(session, "SELECT home.nope FROM people WHERE id = 1", None, "has no field nope")

    step("lightweight transactions on a field")
    rs = session.execute("UPDATE people SET work.zip = 1000 WHERE id = 1 IF work.city = 'Nowhere'")
    assert not rs.was_applied, rs.one()
    cas = session.prepare("UPDATE people SET work.zip = ? WHERE id = ? IF work.city = ?")
    rs = session.execute(cas, (1000, 1, "Capital City"))
    assert rs.was_applied, rs.one()
    assert session.execute("SELECT work.zip FROM people WHERE id = 1").one()[0] == 1000

    step("JSON both ways")
    doc = json.loads(session.execute("SELECT JSON id, home, history FROM people WHERE id = 2").one()[0])
    assert doc == {
        "id": 2,
        "home": {"street": "s2", "city": "c2", "zip": 2},
        "history": [{"street": "h1", "city": None, "zip": 1}, {"street": "h2", "city": None, "zip": 2}],
    }, doc
    session.execute(
        "INSERT INTO people JSON '{\"id\": 4, \"home\": {\"street\": \"j\", \"zip\": 4}, "
        "\"work\": {\"city\": \"jw\"}, \"by_name\": {\"z\": {\"city\": \"zz\"}}}'"
    )
    row = session.execute("SELECT home, work, by_name FROM people WHERE id = 4").one()
    assert (row.home.street, row.home.city, row.home.zip) == ("j", None, 4), row
    assert row.work.city == "jw" and row.by_name["z"].city == "zz", row
    ps = session.prepare("INSERT INTO people JSON ?")
    session.execute(ps, (json.dumps({"id": 5, "home": {"city": "pj"}}),))
    assert session.execute("SELECT home.city FROM people WHERE id = 5").one()[0] == "pj"
    expect_invalid(session, "INSERT INTO people JSON '{\"id\": 6, \"home\": {\"nope\": 1}}'", None,
                   "Unknown field 'nope'")

    step("register_user_type maps to a Python class")
    cluster.register_user_type(ks, "address", Address)
    session.execute("INSERT INTO people (id, home) VALUES (%s, %s)", (10, Address("r1", "rc", 10)))
    session.execute(ins, (11, Address("r2", None, 11), Address(city="w"), None, [Address("l", "lc", 1)], None, None))
    row = session.execute("SELECT home FROM people WHERE id = 10").one()
    assert row.home == Address("r1", "rc", 10), row
    row = session.execute("SELECT home, work, history FROM people WHERE id = 11").one()
    assert row.home == Address("r2", None, 11) and row.work == Address(None, "w", None), row
    assert row.history == [Address("l", "lc", 1)], row

    step("DROP TYPE refused while in use; unknown types")
    expect_invalid(session, "DROP TYPE address", None,
                   "Cannot drop user type '%s.address' as it is still used by user types everything" % ks)
    expect_invalid(session, "DROP TYPE everything", None,
                   "Cannot drop user type '%s.everything' as it is still used by tables people" % ks)
    expect_invalid(session, "DROP TYPE nope", None, "Type '%s.nope' doesn't exist" % ks)
    expect_invalid(session, "CREATE TABLE bad (k int PRIMARY KEY, v frozen<nope>)", None, "Unknown type %s.nope" % ks)
    expect_invalid(session, "CREATE TYPE dup (a int, a text)", None, "Duplicate field name 'a' in type 'dup'")
    session.execute("DROP TYPE IF EXISTS nope")

    step("ALTER TYPE reaches the driver's metadata by SCHEMA_CHANGE events")
    session.execute("CREATE TYPE spare (a int)")
    wait_for("spare in metadata", lambda: "spare" in cluster.metadata.keyspaces[ks].user_types)
    session.execute("ALTER TYPE spare ADD b text")
    session.execute("ALTER TYPE spare RENAME a TO aa")
    wait_for("spare altered", lambda: cluster.metadata.keyspaces[ks].user_types["spare"].field_names == ["aa", "b"])
    session.execute("DROP TYPE spare")
    wait_for("spare dropped", lambda: "spare" not in cluster.metadata.keyspaces[ks].user_types)
    session.execute("ALTER TYPE address ADD country text")
    wait_for("address altered",
             lambda: cluster.metadata.keyspaces[ks].user_types["address"].field_names[-1] == "country")
    session.execute("UPDATE people SET work.country = 'fr' WHERE id = 1")
    row = session.execute("SELECT work.country, work.city FROM people WHERE id = 1").one()
    assert tuple(row) == ("fr", "Capital City"), row
    # The key written before the new field still matches.
    rows = list(session.execute(
        "SELECT n FROM by_addr WHERE a = {a: 'k', b: 1} AND n = 1 AND c = {street: 'c', city: null, zip: 30}"))
    assert len(rows) == 1, rows
    # Cassandra 5 refuses new fields in a type that a partition key uses.
    expect_invalid(session, "ALTER TYPE pk_t ADD c int", None,
                   "as the type is being used in partition key by the following tables: by_addr")

    step("prepared statements over a type are re-prepared after ALTER TYPE and DROP/CREATE TYPE")
    session.execute("CREATE TYPE spot (x int)")
    session.execute("CREATE TABLE places (id int PRIMARY KEY, s spot, ls list<frozen<spot>>)")
    session.execute("INSERT INTO places (id, s, ls) VALUES (1, {x: 1}, [{x: 2}])")
    # A planned statement (s: a user type) and one planned per request (ls).
    by_id = session.prepare("SELECT id, s FROM places WHERE id = ?")
    with_list = session.prepare("SELECT s, ls FROM places WHERE id = ?")
    row = session.execute(by_id, (1,)).one()
    assert row.s._fields == ("x",) and row.s.x == 1, row
    row = session.execute(with_list, (1,)).one()
    assert row.ls[0]._fields == ("x",), row
    session.execute("ALTER TYPE spot ADD y text")
    session.execute("UPDATE places SET s.y = 'new', ls = [{x: 2, y: 'l'}] WHERE id = 1")
    # The next EXECUTE on each node answers UNPREPARED; the driver re-prepares
    # and decodes with the new fields.
    for _ in range(3):
        row = session.execute(by_id, (1,)).one()
        assert row.s._fields == ("x", "y") and tuple(row.s) == (1, "new"), row
        row = session.execute(with_list, (1,)).one()
        assert row.ls[0]._fields == ("x", "y") and row.ls[0].y == "l", row
    session.execute("ALTER TYPE spot RENAME y TO why")
    for _ in range(3):
        row = session.execute(by_id, (1,)).one()
        assert row.s._fields == ("x", "why") and row.s.why == "new", row
    session.execute("DROP TABLE places")
    session.execute("DROP TYPE spot")
    session.execute("CREATE TYPE spot (z text, x int)")
    session.execute("CREATE TABLE places (id int PRIMARY KEY, s spot)")
    session.execute("INSERT INTO places (id, s) VALUES (1, {z: 'again', x: 3})")
    for _ in range(3):
        row = session.execute(by_id, (1,)).one()
        assert row.s._fields == ("z", "x") and tuple(row.s) == ("again", 3), row

    step("writetime / ttl / maxwritetime of a non-frozen type and of its fields (Cassandra 5.0)")
    session.execute("INSERT INTO places (id, s) VALUES (2, {x: 5}) USING TIMESTAMP 1000 AND TTL 4000")
    session.execute("UPDATE places USING TIMESTAMP 2000 AND TTL 3000 SET s.z = 'zz' WHERE id = 2")
    session.execute("INSERT INTO places (id, s) VALUES (3, {x: 6}) USING TIMESTAMP 1000")
    session.execute("DELETE s.z FROM places USING TIMESTAMP 1001 WHERE id = 3")
    q = "SELECT writetime(s), ttl(s), maxwritetime(s), writetime(s.x), ttl(s.z), writetime(s.z) FROM places WHERE id = ?"
    rs = session.execute(q.replace("?", "%s"), (2,))
    assert rs.column_names == ["writetime(s)", "ttl(s)", "maxwritetime(s)", "writetime(s.x)",
                               "ttl(s.z)", "writetime(s.z)"], rs.column_names
    row = rs.one()
    assert list(row[0]) == [2000, 1000], row
    assert 0 < row[1][0] <= 3000 and 3000 < row[1][1] <= 4000, row
    assert (row[2], row[3], row[5]) == (2000, 1000, 2000), row
    assert 0 < row[4] <= 3000, row
    ps = session.prepare(q)
    assert [c[2] for c in ps.result_metadata] == rs.column_names, ps.result_metadata
    assert ps.result_metadata[0][3].typename == "list", ps.result_metadata[0][3]
    assert ps.result_metadata[0][3].subtypes[0].typename == "bigint", ps.result_metadata[0][3]
    assert ps.result_metadata[1][3].subtypes[0].typename == "int", ps.result_metadata[1][3]
    # z has no cell: null for the field. (writetime(s) is then a list with a
    # null element, as Cassandra 5.0 sends it, which this driver's Cython
    # deserializer cannot decode; crates/query/tests/cql.rs checks its bytes.)
    ps = session.prepare("SELECT maxwritetime(s), writetime(s.x), ttl(s.z), writetime(s.z) FROM places WHERE id = ?")
    row = session.execute(ps, (3,)).one()
    assert tuple(row) == (1000, 1000, None, None), row
    expect_invalid(session, "SELECT writetime(id) FROM places", None,
                   "Cannot use selection function writetime on PRIMARY KEY part id")

    step("WHERE on a field: Cassandra 5.0's syntax error, with the reason")
    try:
        session.execute("SELECT id FROM places WHERE s.x = 3 ALLOW FILTERING")
        raise AssertionError("field relation accepted")
    except SyntaxException as e:
        assert "no viable alternative at input '.': restrictions on fields of user types (s.x)" in str(e), e

    step("system_schema.types on every node")
    for h, p in hosts:
        c2 = Cluster([h], port=int(p), protocol_version=protocol,
                     load_balancing_policy=WhiteListRoundRobinPolicy([h]))
        s2 = c2.connect()
        rows = list(s2.execute(
            "SELECT type_name, field_names, field_types FROM system_schema.types WHERE keyspace_name = %s", (ks,)))
        got = dict((r.type_name, (list(r.field_names), list(r.field_types))) for r in rows)
        assert got["address"] == (["street", "city", "zip", "country"], ["text", "text", "int", "text"]), got
        assert "everything" in got, got
        c2.shutdown()

    cluster.shutdown()
    print("OK")


if __name__ == "__main__":
    main()
