#!/usr/bin/env bash
# Secondary index figures (issue 18's acceptance), one node: write
# throughput of an indexed table beside an unindexed one in one run
# (gyre-stress tables `plain` and `indexed`, `key bigint PRIMARY KEY, c0
# blob`, 100-byte values derived from the key, so every value is its own
# term; `CREATE INDEX ON indexed (c0)` before the load; ROWS rows loaded
# into one table after the other, then 20 s of overwrites each), then,
# flushed, an indexed equality query beside the same query with ALLOW
# FILTERING on the unindexed table (Python driver, one row found each
# time).
#
# Usage: scripts/bench-index.sh [--rows N] [--no-build] [--prefix P]
#   --rows      rows per table (default 1000000)
#   --no-build  use the binaries in $CARGO_TARGET_DIR/release (or target/release)
#   --prefix    the node's address prefix (default 127.0.164: 127.0.164.1)
# Needs the Python driver's venv (~/.cache/gyre-venv, as the tests make it).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=1000000
BUILD=1
PREFIX=127.0.164
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --prefix) PREFIX="$2"; shift 2 ;;
        -h|--help) sed -n 2,16p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

TARGET="${CARGO_TARGET_DIR:-target}"
if [ "$BUILD" = 1 ]; then
    cargo build --release -p gyre-node -p gyrectl -p gyre-stress --bins
fi
BIN="$TARGET/release"
PY="$HOME/.cache/gyre-venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "no $PY: run a driver test first (cargo test -p gyre-tests --test cql_compat) or make the venv" >&2
    exit 1
fi
DIR="$(mktemp -d /tmp/gyre-index-bench.XXXXXX)"
export GYRE_BIN="$BIN/gyre"
cleanup() {
    "$BIN/gyrectl" cluster down --dir "$DIR/c" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

HOST="$PREFIX.1"
"$BIN/gyrectl" cluster up --nodes 1 --ip-prefix "$PREFIX" --dir "$DIR/c" >/dev/null
for t in plain indexed; do
    "$BIN/gyre-stress" write --hosts "$HOST" --table "$t" --ops 1 --quiet >/dev/null
done
"$PY" -c "from cassandra.cluster import Cluster; Cluster(['$HOST']).connect().execute('CREATE INDEX indexed_c0 ON gyre_stress.indexed (c0)')"

echo "## write throughput, $ROWS rows per table, one node ($HOST), concurrency 128"
# Round 1 loads the rows (keys in order); round 2 overwrites random keys
# of the population for 20 s.
for round in 1 2; do
    for t in plain indexed; do
        if [ "$round" = 1 ]; then run=(--ops "$ROWS" --dist seq); else run=(--duration 20s --dist uniform); fi
        "$BIN/gyre-stress" write --hosts "$HOST" --table "$t" --keys "$ROWS" "${run[@]}" \
            --concurrency 128 --quiet --json "$DIR/$t-$round.json" >/dev/null
        "$PY" -c "import json,sys; r=json.load(open('$DIR/$t-$round.json')); print('round $round %-8s %9.0f ops/s  p99 %.1f ms  errors %d' % ('$t', r['total']['ops_per_s'], r['total']['latency_ms']['p99'], r['total']['errors']))"
    done
done
"$PY" - "$DIR" <<'EOF'
import json, sys
d = sys.argv[1]
ops = {t: [json.load(open("%s/%s-%d.json" % (d, t, r)))["total"]["ops_per_s"] for r in (1, 2)]
       for t in ("plain", "indexed")}
for r, what in ((0, "load"), (1, "overwrites")):
    print("round %d (%s) indexed/plain: %.2f" % (r + 1, what, ops["indexed"][r] / ops["plain"][r]))
EOF
curl -s -X POST -H 'Content-Type: application/json' -d '{}' "http://$HOST:9180/flush" >/dev/null

echo "## indexed equality vs ALLOW FILTERING ($ROWS rows per table, flushed)"
"$PY" - "$HOST" <<'EOF'
import statistics, sys, time
from cassandra.cluster import Cluster
from cassandra.query import SimpleStatement
s = Cluster([sys.argv[1]]).connect("gyre_stress")
# The value of one row near the end of the key range (not the first
# partition a scan meets).
probe = {t: s.execute("SELECT key, c0 FROM %s WHERE key = 777777" % t).one()
         or s.execute("SELECT key, c0 FROM %s LIMIT 1" % t).one() for t in ("plain", "indexed")}
def timed(cql, value, reps):
    ts, rows = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        rows = list(s.execute(SimpleStatement(cql, fetch_size=5000), (value,), timeout=600))
        ts.append(time.perf_counter() - t0)
    return rows, ts
rows, ts = timed("SELECT key FROM indexed WHERE c0 = %s", probe["indexed"].c0, 100)
assert [r.key for r in rows] == [probe["indexed"].key], rows
print("indexed   SELECT key FROM indexed WHERE c0 = ?: 1 row, p50 %.2f ms, max %.2f ms (100 runs)"
      % (statistics.median(ts) * 1e3, max(ts) * 1e3))
rows, ts = timed("SELECT key FROM plain WHERE c0 = %s ALLOW FILTERING", probe["plain"].c0, 3)
assert [r.key for r in rows] == [probe["plain"].key], rows
print("filtering SELECT key FROM plain WHERE c0 = ? ALLOW FILTERING: 1 row, p50 %.0f ms, max %.0f ms (3 runs)"
      % (statistics.median(ts) * 1e3, max(ts) * 1e3))
print("OK")
EOF
