"""Authentication and permissions through the DataStax Python driver
(tests/tests/auth.rs), against a cluster started with `gyrectl cluster up
--auth` (PasswordAuthenticator + CassandraAuthorizer).

    auth_check.py HOST1 [HOST2 ...]

Prints one `ok ...` line per check and `AUTH-CHECK PASSED` at the end;
exits non-zero on the first failure.
"""

import sys
import time

from cassandra import AuthenticationFailed, Unauthorized, InvalidRequest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable
from cassandra.policies import WhiteListRoundRobinPolicy

HOSTS = sys.argv[1:]
DEADLINE = 60.0


def connect(host, user=None, password=None):
    kw = {}
    if user is not None:
        kw["auth_provider"] = PlainTextAuthProvider(username=user, password=password)
    cluster = Cluster(
        [host],
        load_balancing_policy=WhiteListRoundRobinPolicy([host]),
        protocol_version=4,
        connect_timeout=5,
        control_connection_timeout=5,
        **kw,
    )
    try:
        return cluster, cluster.connect()
    except Exception:
        cluster.shutdown()
        raise


def login_error(host, user=None, password=None):
    """The authentication error a login gets (None when it succeeds)."""
    try:
        cluster, _ = connect(host, user, password)
    except NoHostAvailable as e:
        errors = list(e.errors.values())
        assert errors, e
        return errors[0]
    except AuthenticationFailed as e:
        return e
    cluster.shutdown()
    return None


def poll(what, cond):
    t0 = time.time()
    while True:
        try:
            if cond():
                print(f"ok {what} after {time.time() - t0:.1f} s", flush=True)
                return
        except Exception as e:  # keep polling until the deadline
            last = e
        else:
            last = None
        if time.time() - t0 > DEADLINE:
            raise SystemExit(f"FAIL: timed out waiting for {what}: {last!r}")
        time.sleep(0.3)


def expect(exc_type, fn, contains):
    try:
        fn()
    except exc_type as e:
        assert contains in str(e), f"{e!r} lacks {contains!r}"
        return str(e)
    raise SystemExit(f"FAIL: no {exc_type.__name__} ({contains})")


def main():
    first = HOSTS[0]
    # The nodes create the default superuser some seconds after start.
    poll("the default superuser cassandra logs in", lambda: login_error(first, "cassandra", "cassandra") is None)

    e = login_error(first)
    assert isinstance(e, AuthenticationFailed) and "requires authentication" in str(e), repr(e)
    print("ok no credentials: AuthenticationFailed:", e)
    e = login_error(first, "cassandra", "wrong")
    assert isinstance(e, AuthenticationFailed), repr(e)
    assert "Provided username cassandra and/or password are incorrect" in str(e), repr(e)
    print("ok wrong password: AuthenticationFailed:", e)
    e = login_error(first, "nobody", "x")
    assert isinstance(e, AuthenticationFailed) and "Provided username nobody" in str(e), repr(e)
    print("ok unknown role refused")

    admin_cluster, admin = connect(first, "cassandra", "cassandra")
    admin.default_timeout = 20
    for ks in ("authks1", "authks2"):
        admin.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 3}"
        )
        admin.execute(f"CREATE TABLE IF NOT EXISTS {ks}.t (k int PRIMARY KEY, v text)")
        admin.execute(f"INSERT INTO {ks}.t (k, v) VALUES (1, 'one')")
    admin.execute("CREATE ROLE alice WITH PASSWORD = 'alice-pw' AND LOGIN = true")
    expect(InvalidRequest, lambda: admin.execute("CREATE ROLE alice WITH LOGIN = true"), "alice already exists")
    admin.execute("CREATE ROLE IF NOT EXISTS alice")
    admin.execute("GRANT SELECT ON KEYSPACE authks1 TO alice")
    roles = {r.role: r for r in admin.execute("LIST ROLES")}
    assert "alice" in roles and "cassandra" in roles, roles
    assert roles["cassandra"].super and not roles["alice"].super and roles["alice"].login, roles
    print("ok LIST ROLES:", sorted(roles))
    perms = [(r.role, r.resource, r.permission) for r in admin.execute("LIST ALL PERMISSIONS OF alice")]
    assert perms == [("alice", "<keyspace authks1>", "SELECT")], perms
    print("ok LIST ALL PERMISSIONS OF alice:", perms)

    # The role and its grant hold on every node.
    for host in HOSTS:
        poll(f"alice logs in through {host}", lambda: login_error(host, "alice", "alice-pw") is None)
        cluster, s = connect(host, "alice", "alice-pw")
        s.default_timeout = 20
        rows = list(s.execute("SELECT k, v FROM authks1.t WHERE k = 1"))
        assert [(r.k, r.v) for r in rows] == [(1, "one")], rows
        msg = expect(
            Unauthorized,
            lambda: s.execute("INSERT INTO authks1.t (k, v) VALUES (2, 'two')"),
            "User alice has no MODIFY permission on <table authks1.t> or any of its parents",
        )
        expect(
            Unauthorized,
            lambda: s.execute("SELECT * FROM authks2.t"),
            "User alice has no SELECT permission on <table authks2.t> or any of its parents",
        )
        expect(Unauthorized, lambda: s.execute("CREATE ROLE mallory"), "User alice has no CREATE permission on <all roles>")
        # What drivers read stays readable.
        assert list(s.execute("SELECT release_version FROM system.local"))
        cluster.shutdown()
        print(f"ok alice through {host}: SELECT allowed; INSERT and other keyspace refused ({msg})")

    # Roles granted to roles: alice reads authks2 through `readers`, until
    # it is revoked.
    admin.execute("CREATE ROLE readers")
    admin.execute("GRANT SELECT ON KEYSPACE authks2 TO readers")
    admin.execute("GRANT readers TO alice")
    expect(InvalidRequest, lambda: admin.execute("GRANT readers TO alice"), "alice is a member of readers")
    expect(InvalidRequest, lambda: admin.execute("GRANT alice TO readers"), "alice is a member of readers")
    of_alice = {r.role for r in admin.execute("LIST ROLES OF alice")}
    assert of_alice == {"alice", "readers"}, of_alice
    cluster, s = connect(first, "alice", "alice-pw")
    poll("alice reads authks2 through readers", lambda: list(s.execute("SELECT * FROM authks2.t")))
    admin.execute("REVOKE readers FROM alice")

    def refused():
        try:
            s.execute("SELECT * FROM authks2.t")
        except Unauthorized:
            return True
        return False

    poll("alice refused again once readers is revoked", refused)
    cluster.shutdown()

    # Legacy user statements.
    admin.execute("CREATE USER carol WITH PASSWORD 'carol-pw' NOSUPERUSER")
    users = {r.name: r.super for r in admin.execute("LIST USERS")}
    assert users.get("carol") is False and users.get("cassandra") is True, users
    poll("carol logs in", lambda: login_error(first, "carol", "carol-pw") is None)
    admin.execute("ALTER USER carol WITH PASSWORD 'carol-pw2'")
    poll("carol's new password works", lambda: login_error(first, "carol", "carol-pw2") is None)
    admin.execute("DROP USER carol")
    print("ok CREATE/ALTER/DROP USER and LIST USERS:", users)

    # A dropped role cannot log in, through any node.
    admin.execute("DROP ROLE alice")
    expect(InvalidRequest, lambda: admin.execute("DROP ROLE alice"), "alice doesn't exist")
    for host in HOSTS:
        poll(
            f"dropped alice refused through {host}",
            lambda: isinstance(login_error(host, "alice", "alice-pw"), AuthenticationFailed),
        )
    # Grants on what is dropped go with it.
    admin.execute("DROP KEYSPACE authks2")
    left = [
        (r.role, r.resource)
        for r in admin.execute("LIST ALL PERMISSIONS")
        if "authks2" in r.resource or "alice" in r.resource
    ]
    assert left == [], left
    print("ok no grants left on the dropped role and keyspace")
    admin_cluster.shutdown()
    print("AUTH-CHECK PASSED")


if __name__ == "__main__":
    main()
