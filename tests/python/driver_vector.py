"""Vector columns (`vector<T, n>`) through the DataStax Python driver.

Usage: driver_vector.py HOST PORT PROTOCOL (4 or 5). Creates keyspace
vec_v<PROTOCOL>; exits non-zero on the first failed step.
"""

import sys

from cassandra import InvalidRequest
from cassandra.cluster import Cluster
from cassandra.cqltypes import FloatType, Int32Type, UTF8Type, VectorType


def step(msg):
    print("step:", msg, flush=True)


def expect_invalid(session, query, params, message):
    try:
        session.execute(query, params)
    except InvalidRequest as e:
        assert message in str(e), "wrong error for %r: %s" % (query, e)
        return
    raise AssertionError("accepted: %s %r" % (query, params))


def check_vector_type(t, subtype, size):
    assert issubclass(t, VectorType), t
    assert t.subtype is subtype, (t, t.subtype)
    assert t.vector_size == size, (t, t.vector_size)


def main():
    host, port, protocol = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ks = "vec_v%d" % protocol
    cluster = Cluster([host], port=port, protocol_version=protocol)
    session = cluster.connect()
    assert cluster.protocol_version == protocol, cluster.protocol_version

    step("create table")
    session.execute(
        "CREATE KEYSPACE %s WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}" % ks
    )
    session.execute(
        "CREATE TABLE %s.t (k int PRIMARY KEY, v vector<float, 3>, j vector<int, 2>)" % ks
    )
    session.set_keyspace(ks)

    step("insert by literal")
    session.execute("INSERT INTO t (k, v, j) VALUES (1, [1.0, 2.5, -3.25], [7, -8])")

    step("insert by prepared statement")
    ins = session.prepare("INSERT INTO t (k, v, j) VALUES (?, ?, ?)")
    check_vector_type(ins.column_metadata[1].type, FloatType, 3)
    check_vector_type(ins.column_metadata[2].type, Int32Type, 2)
    session.execute(ins, (2, [0.5, 0.0, 1e10], [2147483647, -2147483648]))
    # Bind markers inside a vector literal, client-side and prepared.
    ps = session.prepare("INSERT INTO t (k, v, j) VALUES (?, [?, ?, ?], [?, ?])")
    assert ps.column_metadata[1].type is FloatType and ps.column_metadata[4].type is Int32Type
    session.execute(ps, (4, 1.5, 2.5, 3.5, 4, 5))
    row = session.execute("SELECT v, j FROM t WHERE k = 4").one()
    assert row.v == [1.5, 2.5, 3.5] and row.j == [4, 5], row
    session.execute("INSERT INTO t (k, v, j) VALUES (%s, [%s, %s, %s], [%s, %s])",
                    (3, 4.0, 5.0, 6.0, 1, 2))

    step("read back as lists")
    rs = session.execute("SELECT k, v, j FROM t WHERE k = 1")
    check_vector_type(rs.column_types[1], FloatType, 3)
    check_vector_type(rs.column_types[2], Int32Type, 2)
    row = rs.one()
    assert row.v == [1.0, 2.5, -3.25], row
    assert row.j == [7, -8], row
    sel = session.prepare("SELECT v, j FROM t WHERE k = ?")
    row = session.execute(sel, (2,)).one()
    assert row.v == [0.5, 0.0, 1e10], row
    assert row.j == [2147483647, -2147483648], row
    row = session.execute(sel, (3,)).one()
    assert row.v == [4.0, 5.0, 6.0] and row.j == [1, 2], row
    row = session.execute("SELECT JSON v, j FROM t WHERE k = 1").one()
    assert row[0] == '{"v": [1.0, 2.5, -3.25], "j": [7, -8]}', row

    step("update")
    session.execute("UPDATE t SET v = [9.0, 8.0, 7.0] WHERE k = 3")
    session.execute(session.prepare("UPDATE t SET j = ? WHERE k = ?"), ([5, 6], 3))
    row = session.execute(sel, (3,)).one()
    assert row.v == [9.0, 8.0, 7.0] and row.j == [5, 6], row

    step("similarity functions")
    q = [1.0, 0.0, 2.0]
    v = [9.0, 8.0, 7.0]
    dot = sum(x * y for x, y in zip(q, v))
    norm = lambda x: sum(e * e for e in x) ** 0.5
    want = {
        "similarity_cosine": (1 + dot / (norm(q) * norm(v))) / 2,
        "similarity_euclidean": 1 / (1 + sum((x - y) ** 2 for x, y in zip(q, v))),
        "similarity_dot_product": (1 + dot) / 2,
    }
    for fn, expected in want.items():
        row = session.execute("SELECT %s(v, [1.0, 0.0, 2.0]) FROM t WHERE k = 3" % fn).one()
        assert abs(row[0] - expected) <= 1e-6 * max(1, abs(expected)), (fn, row[0], expected)
        ps = session.prepare("SELECT %s(v, ?) FROM t WHERE k = ?" % fn)
        check_vector_type(ps.column_metadata[0].type, FloatType, 3)
        row = session.execute(ps, (q, 3)).one()
        assert abs(row[0] - expected) <= 1e-6 * max(1, abs(expected)), (fn, row[0], expected)
    expect_invalid(session, "SELECT similarity_cosine(j, [1, 2]) FROM t WHERE k = 3", None,
                   "requires a float vector argument")
    expect_invalid(session, "SELECT similarity_cosine(v, [0.0, 0.0, 0.0]) FROM t WHERE k = 3",
                   None, "doesn't support all-zero vectors")

    step("wrong dimensions and types are refused")
    expect_invalid(
        session, "INSERT INTO t (k, v) VALUES (9, 'abc')", None,
        "Invalid literal for column v of type vector<float, 3>",
    )
    expect_invalid(session, "INSERT INTO t (k, v) VALUES (9, [1.0, null, 2.0])", None, "null")

    expect_invalid(
        session, "INSERT INTO t (k, v) VALUES (9, [1.0, 2.0])", None,
        "Invalid vector literal for v of type vector<float, 3>; expected 3 elements, but given 2",
    )
    expect_invalid(
        session, "INSERT INTO t (k, j) VALUES (9, [1, 2, 3])", None,
        "Invalid vector literal for j of type vector<int, 2>; expected 2 elements, but given 3",
    )
    try:
        session.execute(ins, (9, [1.0, 2.0], [1, 2]))
        raise AssertionError("driver sent a vector of the wrong dimension")
    except ValueError:
        pass
    assert session.execute("SELECT * FROM t WHERE k = 9").one() is None

    step("variable-size elements")
    session.execute(
        "CREATE TABLE var (k int PRIMARY KEY, t vector<text, 2>, l vector<list<int>, 3>, "
        "m vector<map<text, bigint>, 1>)"
    )
    session.execute(
        "INSERT INTO var (k, t, l, m) VALUES (1, ['ab', ''], [[1, 2], [], [3]], [{'x': 5}])"
    )
    ins_var = session.prepare("INSERT INTO var (k, t, l, m) VALUES (?, ?, ?, ?)")
    check_vector_type(ins_var.column_metadata[1].type, UTF8Type, 2)
    long_text = "\u00e9" * 300  # longer than one vint byte
    session.execute(ins_var, (2, [long_text, "z"], [[7], [8, 9], [-1]], [{"y": -6}]))
    rs = session.execute("SELECT k, t, l, m FROM var WHERE k = 1")
    check_vector_type(rs.column_types[1], UTF8Type, 2)
    lt = rs.column_types[2]
    assert issubclass(lt, VectorType) and lt.vector_size == 3, lt
    assert lt.subtype.cql_parameterized_type() == "frozen<list<int>>", lt.subtype.cql_parameterized_type()
    row = rs.one()
    assert row.t == ["ab", ""], row
    assert row.l == [[1, 2], [], [3]], row
    assert row.m == [{"x": 5}], row
    row = session.execute("SELECT t, l, m FROM var WHERE k = 2").one()
    assert row.t == [long_text, "z"], row
    assert row.l == [[7], [8, 9], [-1]], row
    assert row.m == [{"y": -6}], row
    row = session.execute("SELECT JSON l FROM var WHERE k = 1").one()
    assert row[0] == '{"l": [[1, 2], [], [3]]}', row
    session.execute("INSERT INTO var JSON '{\"k\": 3, \"t\": [\"p\", \"q\"], \"l\": [[1], [2], [3]]}'")
    row = session.execute("SELECT t, l FROM var WHERE k = 3").one()
    assert row.t == ["p", "q"] and row.l == [[1], [2], [3]], row
    expect_invalid(
        session, "INSERT INTO var (k, t) VALUES (9, ['a', 'b', 'c'])", None,
        "Invalid vector literal for t of type vector<text, 2>; expected 2 elements, but given 3",
    )

    step("schema metadata")
    row = session.execute(
        "SELECT type FROM system_schema.columns WHERE keyspace_name = %s "
        "AND table_name = 't' AND column_name = 'v'", (ks,)).one()
    assert row.type == "vector<float, 3>", row
    cluster.refresh_schema_metadata()
    cols = cluster.metadata.keyspaces[ks].tables["t"].columns
    assert cols["v"].cql_type == "vector<float, 3>", cols["v"].cql_type
    assert cols["j"].cql_type == "vector<int, 2>", cols["j"].cql_type
    row = session.execute(
        "SELECT type FROM system_schema.columns WHERE keyspace_name = %s "
        "AND table_name = 'var' AND column_name = 'l'", (ks,)).one()
    assert row.type == "vector<frozen<list<int>>, 3>", row
    assert "v vector<float, 3>" in cluster.metadata.keyspaces[ks].tables["t"].export_as_string()

    cluster.shutdown()
    print("\nOK", flush=True)


if __name__ == "__main__":
    main()
