#!/usr/bin/env bash
# Vector search end to end (issue 18's acceptance figures): 100K vectors of
# 128 float dimensions (uniform, numpy seed 42) loaded through the Python
# driver, then 1,000 queries `ORDER BY v ANN OF ? LIMIT 10`: recall@10
# against a brute force done by the client, latency p50/p99 one query at a
# time, queries/s with 16 in flight; and the same with `WHERE cat = ?` on
# another indexed column (1 row in 10). On one node (127.0.162.1, RF 1),
# then on three (127.0.163.1-3, RF 3), reads at ONE (scripts/bench_ann.py).
#
# Usage: scripts/bench-ann.sh [--rows N] [--queries N] [--no-build] [--only 1|3]
#                             [--prefixes P1,P3]
#   --no-build  use the binaries in $CARGO_TARGET_DIR/release (or target/release)
#   --prefixes  the one-node and three-node clusters' address prefixes
#               (default 127.0.162,127.0.163)
# Needs the Python driver's venv (~/.cache/gyre-venv, as the tests make it)
# with numpy (installed into it when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=100000
QUERIES=1000
BUILD=1
ONLY=""
P1=127.0.162
P3=127.0.163
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --queries) QUERIES="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --only) ONLY="$2"; shift 2 ;;
        --prefixes) P1="${2%,*}"; P3="${2#*,}"; shift 2 ;;
        -h|--help) sed -n 2,17p "$0"; exit 0 ;;
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
"$PY" -c "import numpy" 2>/dev/null || "$PY" -m pip install --quiet numpy
DIR="$(mktemp -d /tmp/gyre-ann-bench.XXXXXX)"
export GYRE_BIN="$BIN/gyre"
cleanup() {
    "$BIN/gyrectl" cluster down --dir "$DIR/c1" >/dev/null 2>&1 || true
    "$BIN/gyrectl" cluster down --dir "$DIR/c3" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

run() { # NODES PREFIX
    local nodes="$1" prefix="$2" hosts="" admins=""
    for i in $(seq 1 "$nodes"); do
        hosts="$hosts${hosts:+,}$prefix.$i"
        admins="$admins${admins:+,}$prefix.$i:9180"
    done
    echo "## $nodes node(s), RF $nodes: $ROWS x 128, $QUERIES queries, k 10"
    "$BIN/gyrectl" cluster up --nodes "$nodes" --ip-prefix "$prefix" --dir "$DIR/c$nodes" >/dev/null
    "$PY" scripts/bench_ann.py "$hosts" "$admins" "$nodes" "$ROWS" 128 "$QUERIES" 10 16
    "$BIN/gyrectl" cluster down --dir "$DIR/c$nodes" >/dev/null
}
if [ "$ONLY" != 3 ]; then run 1 "$P1"; fi
if [ "$ONLY" != 1 ]; then run 3 "$P3"; fi
