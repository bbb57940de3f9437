"""system_auth replication (issue 15): ALTER KEYSPACE system_auth is
allowed (system and system_schema refused, as in Cassandra), every node
sees the new replication, and a role created afterwards logs in while any
one node is down.

Usage: auth_rf.py alter HOST1 HOST2 HOST3   (as cassandra/cassandra)
       (then `gyrectl repair system_auth`, as Cassandra advises)
       auth_rf.py create HOST                (the role alice)
       auth_rf.py login HOST...              (alice through each HOST)
Prints OK.
"""

import sys
import time

from cassandra import Unauthorized
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable
from cassandra.policies import WhiteListRoundRobinPolicy


def connect(host, user, password):
    cluster = Cluster(
        [host],
        auth_provider=PlainTextAuthProvider(user, password),
        load_balancing_policy=WhiteListRoundRobinPolicy([host]),
        connect_timeout=10,
        control_connection_timeout=10,
    )
    return cluster, cluster.connect()


def alter(hosts):
    # The default superuser appears a moment after start-up. One session
    # per node, opened before the ALTER: until a repair, the superuser
    # (written at RF 1) lives on one node only.
    sessions = []
    for host in hosts:
        deadline = time.time() + 60
        while True:
            try:
                sessions.append(connect(host, "cassandra", "cassandra"))
                break
            except NoHostAvailable:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
    s = sessions[0][1]
    for ks in ("system", "system_schema"):
        try:
            s.execute("ALTER KEYSPACE %s WITH replication = "
                      "{'class': 'SimpleStrategy', 'replication_factor': 3}" % ks)
            raise AssertionError("ALTER KEYSPACE %s was allowed" % ks)
        except Unauthorized as e:
            assert "Cannot alter system keyspace %s" % ks in str(e), e
    s.execute("ALTER KEYSPACE system_auth WITH replication = "
              "{'class': 'SimpleStrategy', 'replication_factor': 3}")
    # Every node has the new replication before the role is written.
    for host, (_, s2) in zip(hosts, sessions):
        deadline = time.time() + 30
        while True:
            row = s2.execute("SELECT replication FROM system_schema.keyspaces "
                             "WHERE keyspace_name = 'system_auth'").one()
            if row is not None and row.replication.get("replication_factor") == "3":
                break
            assert time.time() < deadline, "%s: system_auth replication %r" % (host, row)
            time.sleep(0.2)
    for cluster, _ in sessions:
        cluster.shutdown()
    print("OK")


def create(hosts):
    cluster, s = connect(hosts[0], "cassandra", "cassandra")
    s.execute("CREATE ROLE alice WITH PASSWORD = 'pw' AND LOGIN = true")
    cluster.shutdown()
    print("OK")


def login(hosts):
    for host in hosts:
        cluster, s = connect(host, "alice", "pw")
        assert s.execute("SELECT release_version FROM system.local").one()
        cluster.shutdown()
        print("alice logged in through %s" % host, flush=True)
    print("OK")


if __name__ == "__main__":
    {"alter": alter, "create": create, "login": login}[sys.argv[1]](sys.argv[2:])
