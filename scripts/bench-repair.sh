#!/usr/bin/env bash
# Anti-entropy repair at scale (issue 14's acceptance figures), in one run on
# three local nodes (127.0.152.1-3 by default, RF 3, hints off so only repair can
# bring a replica back):
#   1. over-streaming: ROWS rows written at ALL; node 3 down while 1% of
#      them are overwritten at ONE; node 3 back; `gyrectl repair` from node 1
#      prints partitions differing, bytes written, bytes read from other
#      replicas and Merkle tree bytes, beside the bytes of the differing
#      partitions; then a second repair of agreeing replicas (sends nothing);
#   2. missed writes: node 3 down while NEW rows (new keys) are written at
#      ONE; node 3 back; `gyrectl cluster digest` disagrees; repair; the
#      digests agree and node 3 alone (CL ONE, every request through it)
#      returns every row with the right value.
#
# Usage: scripts/bench-repair.sh [--rows N] [--new N] [--ip-prefix P] [--no-build] [--keep]
#   --rows N    rows of step 1 (default 1000000)
#   --new N     rows missed in step 2 (default 100000)
#   --ip-prefix P  the nodes' addresses P.1-3 (default 127.0.152)
#   --no-build  use the binaries in $CARGO_TARGET_DIR/release (or target/release)
#   --keep      keep the cluster directory
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=1000000
NEW=100000
BUILD=1
KEEP=0
PREFIX=127.0.152
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --new) NEW="$2"; shift 2 ;;
        --ip-prefix) PREFIX="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n 2,21p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

TARGET="${CARGO_TARGET_DIR:-target}"
if [ "$BUILD" = 1 ]; then
    cargo build --release -p gyre-node -p gyrectl -p gyre-stress --bins
fi
BIN="$TARGET/release"
DIR="$(mktemp -d /tmp/gyre-repair-bench.XXXXXX)"
CTL=("$BIN/gyrectl")
cleanup() {
    "${CTL[@]}" cluster down --dir "$DIR/cluster" >/dev/null 2>&1 || true
    if [ "$KEEP" = 0 ]; then rm -rf "$DIR"; else echo "kept $DIR"; fi
}
trap cleanup EXIT

export GYRE_BIN="$BIN/gyre"
"${CTL[@]}" cluster up --nodes 3 --ip-prefix "$PREFIX" --dir "$DIR/cluster" -- --hints-enabled false >/dev/null
stress() {
    "$BIN/gyre-stress" "$@" --hosts "$PREFIX.1,$PREFIX.2,$PREFIX.3" --keyspace repair_bench --rf 3 \
        --driver native --quiet
}
# Until node 1 (the repair's coordinator) sees node 3 UP and NORMAL.
wait_up3() {
    for _ in $(seq 1 120); do
        if "${CTL[@]}" status --host "$PREFIX.1" --port 9180 2>/dev/null | grep -q "^UN  $PREFIX.3:"; then
            return 0
        fi
        sleep 0.5
    done
    echo "node 1 does not see node 3 up" >&2
    exit 1
}
repair() {
    "${CTL[@]}" repair repair_bench kv --host "$PREFIX.1" --port 9180 | grep -v "ranges repaired"
}

echo "## 1. over-streaming: $ROWS rows, 1% overwritten while node 3 was down"
stress write --ops "$ROWS" --cl ALL --drop
"${CTL[@]}" cluster kill 3 --dir "$DIR/cluster" >/dev/null
STALE=$((ROWS / 100))
# The scylla driver: it routes around the dead node.
"$BIN/gyre-stress" write --ops "$STALE" --keys "$ROWS" --dist uniform --cl ONE --hosts "$PREFIX.1,$PREFIX.2" \
    --keyspace repair_bench --driver scylla --quiet
"${CTL[@]}" cluster start 3 --dir "$DIR/cluster" >/dev/null
wait_up3
START=$(date +%s.%N)
repair
END=$(date +%s.%N)
echo "repair wall time: $(awk "BEGIN {print $END - $START}") s"
echo "('Sent' is what node 3 lacked, the differing data; 'Received' the partition"
echo " bytes read from other replicas; 'Trees' the Merkle tree requests and leaves exchanged with them)"
echo
echo "## agreeing replicas"
repair
echo
echo "## 2. $NEW rows missed by node 3"
"${CTL[@]}" cluster kill 3 --dir "$DIR/cluster" >/dev/null
# New keys: a keyspace of its own so the validation covers exactly them.
"$BIN/gyre-stress" write --ops "$NEW" --cl ONE --hosts "$PREFIX.1,$PREFIX.2" --keyspace repair_new --rf 3 \
    --driver scylla --quiet --drop
"${CTL[@]}" cluster start 3 --dir "$DIR/cluster" >/dev/null
wait_up3
if "${CTL[@]}" cluster digest repair_new.kv --dir "$DIR/cluster" >/dev/null 2>&1; then
    echo "digests agree before repair: node 3 did not miss the writes?" >&2
    exit 1
fi
echo "digests disagree before repair"
START=$(date +%s.%N)
"${CTL[@]}" repair repair_new kv --host "$PREFIX.1" --port 9180 | grep -v "ranges repaired"
END=$(date +%s.%N)
echo "repair wall time: $(awk "BEGIN {print $END - $START}") s"
"${CTL[@]}" cluster digest repair_new.kv --dir "$DIR/cluster"
"$BIN/gyre-stress" read --validate --ops "$NEW" --cl ONE --hosts "$PREFIX.3" --coordinator-only \
    --keyspace repair_new --driver native --quiet
echo "node 3 alone returned every row"
