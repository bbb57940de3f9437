"""Writes and reads a 3-node cluster with internode TLS through the Python
driver (itself over TLS): rows written at QUORUM through node 1 are read
at QUORUM through nodes 2 and 3 and at ALL (every replica answers, so
every internode link carried them).

Usage: internode_tls.py CA_FILE PORT HOST1 HOST2 HOST3. Prints OK.
"""

import ssl
import sys

from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster
from cassandra.policies import WhiteListRoundRobinPolicy
from cassandra.query import SimpleStatement

ROWS = 200


def session_on(host, port, ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    cluster = Cluster(
        [host],
        port=port,
        ssl_context=ctx,
        load_balancing_policy=WhiteListRoundRobinPolicy([host]),
        connect_timeout=10,
        control_connection_timeout=10,
    )
    return cluster, cluster.connect()


def main():
    ca, port, hosts = sys.argv[1], int(sys.argv[2]), sys.argv[3:6]
    c1, s1 = session_on(hosts[0], port, ca)
    s1.execute(
        "CREATE KEYSPACE IF NOT EXISTS itls WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    s1.execute("CREATE TABLE IF NOT EXISTS itls.t (k int PRIMARY KEY, v text)")
    insert = s1.prepare("INSERT INTO itls.t (k, v) VALUES (?, ?)")
    insert.consistency_level = ConsistencyLevel.QUORUM
    for k in range(ROWS):
        s1.execute(insert, (k, "v%d" % k))
    for host in hosts[1:]:
        c, s = session_on(host, port, ca)
        for cl in (ConsistencyLevel.QUORUM, ConsistencyLevel.ALL):
            stmt = SimpleStatement("SELECT k, v FROM itls.t", consistency_level=cl, fetch_size=50)
            got = {r.k: r.v for r in s.execute(stmt)}
            assert len(got) == ROWS, "%s at %s: %d rows" % (host, cl, len(got))
            assert all(got[k] == "v%d" % k for k in range(ROWS)), host
        one = SimpleStatement("SELECT v FROM itls.t WHERE k = 7", consistency_level=ConsistencyLevel.ALL)
        assert s.execute(one).one().v == "v7"
        c.shutdown()
        print("read through %s: %d rows at QUORUM and ALL" % (host, ROWS), flush=True)
    c1.shutdown()
    print("OK")


if __name__ == "__main__":
    main()
