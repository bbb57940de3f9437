"""Request tracing through the DataStax Python driver.

Usage: driver_tracing.py HOST PORT PHASE
  main      traced INSERT and SELECT on a 3-replica keyspace: the driver's
            get_query_trace() shows the coordinator's events and at least
            one replica's; an untraced request gets no trace id; the rows
            carry Cassandra's one-day TTL.
  sampled   (trace probability 1 on HOST) untraced requests are traced
            anyway: their sessions appear in system_traces.sessions.
  unsampled (probability 0 again) untraced requests leave no session.
Every request goes to HOST as coordinator. Exits non-zero on the first
failed step.
"""

import sys
import time

from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster, ExecutionProfile, EXEC_PROFILE_DEFAULT
from cassandra.policies import WhiteListRoundRobinPolicy
from cassandra.query import QueryTrace, SimpleStatement


def step(msg):
    print("step:", msg, flush=True)


def poll(what, fn, timeout=20.0):
    """fn() until it returns a true value; fails after `timeout` seconds."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # trace rows are written asynchronously
            last = e
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def full_trace(session, rs, host, replica_activity):
    """The request's trace once it has a replica's event."""
    trace_id = rs.response_future._query_traces[-1].trace_id

    def fetch():
        t = QueryTrace(trace_id, session)
        t.populate(max_wait=2.0)
        sources = {str(e.source) for e in t.events}
        remote = [e for e in t.events if str(e.source) != host and replica_activity in e.description]
        return t if host in sources and remote else None

    return poll("coordinator and replica events of %s" % trace_id, fetch)


def main_phase(session, host):
    step("schema")
    session.execute("DROP KEYSPACE IF EXISTS tr")
    session.execute(
        "CREATE KEYSPACE tr WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}"
    )
    session.execute("CREATE TABLE tr.t (k int PRIMARY KEY, v text)")

    step("traced insert at QUORUM")
    rs = session.execute(
        SimpleStatement(
            "INSERT INTO tr.t (k, v) VALUES (1, 'one')", consistency_level=ConsistencyLevel.QUORUM
        ),
        trace=True,
    )
    assert rs.response_future._query_traces, "no tracing id in the response"
    trace = rs.get_query_trace(max_wait_sec=10.0)
    assert trace is not None
    assert str(trace.coordinator) == host, trace.coordinator
    assert trace.request_type == "Execute CQL3 query", trace.request_type
    assert "INSERT INTO tr.t" in trace.parameters.get("query", ""), trace.parameters
    assert trace.parameters.get("consistency_level") == "QUORUM", trace.parameters
    assert trace.duration.total_seconds() > 0, trace.duration
    assert trace.started_at is not None
    assert trace.client is not None
    trace = full_trace(session, rs, host, "MUTATION message received")
    for e in trace.events:
        us = e.source_elapsed.total_seconds() * 1e6
        print("  event: %-60s %-12s %8d %s" % (e.description, e.source, us, e.thread_name))
        assert e.thread_name, e
        assert us >= 0, e
    activities = [e.description for e in trace.events]
    assert any(a.startswith("Parsing INSERT") for a in activities), activities
    assert any(a.startswith("Sending MUTATION message to /") for a in activities), activities
    remote = [e for e in trace.events if str(e.source) != host]
    assert any("Appending to commitlog" in e.description for e in remote), activities
    assert any(e.description.startswith("Enqueuing response to /" + host) for e in remote), activities

    step("traced SELECT at ALL")
    rs = session.execute(
        SimpleStatement("SELECT v FROM tr.t WHERE k = 1", consistency_level=ConsistencyLevel.ALL),
        trace=True,
    )
    assert rs.one().v == "one"
    trace = full_trace(session, rs, host, "message received from /" + host)
    activities = [e.description for e in trace.events]
    assert any("READ_" in a for a in activities), activities
    print("  select events:", len(trace.events))

    step("prepared statement traced")
    ps = session.prepare("SELECT v FROM tr.t WHERE k = ?")
    rs = session.execute(ps, (1,), trace=True)
    trace = rs.get_query_trace(max_wait_sec=10.0)
    assert trace.request_type == "Execute CQL3 prepared query", trace.request_type

    step("untraced request has no trace")
    rs = session.execute("SELECT v FROM tr.t WHERE k = 1")
    assert not rs.response_future._query_traces
    assert rs.get_query_trace() is None

    step("TTL of the trace rows")
    sid = trace.trace_id
    row = session.execute(
        "SELECT TTL(duration) AS t FROM system_traces.sessions WHERE session_id = %s", (sid,)
    ).one()
    assert row is not None and 86000 < row.t <= 86400, row
    row = session.execute(
        "SELECT TTL(activity) AS t FROM system_traces.events WHERE session_id = %s LIMIT 1", (sid,)
    ).one()
    assert row is not None and 86000 < row.t <= 86400, row


def sessions_with(session, marker):
    rows = session.execute("SELECT session_id, parameters FROM system_traces.sessions")
    return [r for r in rows if marker in (r.parameters or {}).get("query", "")]


def sampled_phase(session, host, expect):
    marker = "k = %d" % (424242 if expect else 434343)
    step("untraced requests with probability %s" % ("1" if expect else "0"))
    for _ in range(5):
        rs = session.execute("SELECT v FROM tr.t WHERE " + marker)
        # Sampled traces are not the client's: no id in its response.
        assert not rs.response_future._query_traces
    # A traced request after them: the node writes its traces in order, so
    # once this one is complete every earlier sampled one is written too.
    rs = session.execute("SELECT v FROM tr.t WHERE k = 1", trace=True)
    rs.get_query_trace(max_wait_sec=10.0)
    if expect:
        found = poll("5 sampled sessions", lambda: len(sessions_with(session, marker)) >= 5)
        print("  sampled sessions:", found)
    else:
        found = sessions_with(session, marker)
        assert not found, found


def main():
    host, port, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]))
    cluster = Cluster([host], port=port, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    session = cluster.connect()
    if phase == "main":
        main_phase(session, host)
    elif phase == "sampled":
        sampled_phase(session, host, True)
    elif phase == "unsampled":
        sampled_phase(session, host, False)
    else:
        raise SystemExit("unknown phase " + phase)
    cluster.shutdown()
    print("\nOK")


if __name__ == "__main__":
    main()
