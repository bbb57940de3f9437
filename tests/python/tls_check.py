"""Connects to a Gyre node with the DataStax Python driver over TLS or
plaintext and checks which connections the node accepts.

Usage: tls_check.py HOST PORT CASES_JSON, where CASES_JSON is a list of
{"name", "tls": bool, "ca", "cert", "key", "expect": "ok" | "refused"}.
Exits non-zero on the first case that does not go as expected.
"""

import json
import ssl
import sys

from cassandra.cluster import Cluster, NoHostAvailable


def attempt(host, port, case):
    kwargs = {"port": port, "connect_timeout": 5, "control_connection_timeout": 5}
    if case.get("tls"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(case["ca"])
        if case.get("cert"):
            ctx.load_cert_chain(case["cert"], case["key"])
        kwargs["ssl_context"] = ctx
    cluster = Cluster([host], **kwargs)
    try:
        session = cluster.connect()
        session.execute(
            "CREATE KEYSPACE IF NOT EXISTS tlsks WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute("CREATE TABLE IF NOT EXISTS tlsks.t (k int PRIMARY KEY, v text)")
        session.execute("INSERT INTO tlsks.t (k, v) VALUES (1, %s)", (case["name"],))
        row = session.execute("SELECT v FROM tlsks.t WHERE k = 1").one()
        assert row.v == case["name"], row
        return "ok", ""
    except NoHostAvailable as e:
        return "refused", str(e)[:200]
    finally:
        cluster.shutdown()


def main():
    host, port, cases = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    for case in cases:
        got, why = attempt(host, port, case)
        print("case %s: %s %s" % (case["name"], got, why), flush=True)
        assert got == case["expect"], "case %s: expected %s, got %s" % (case["name"], case["expect"], got)
    print("OK")


if __name__ == "__main__":
    main()
