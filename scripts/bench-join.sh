#!/usr/bin/env bash
# Join of a node into a cluster holding N rows (issue 13's measurement):
# bytes streamed, streaming MB/s beside a `cp` of the same SSTable bytes, the
# join time, and the client's p99 during the join beside p99 without it.
#
#   cargo build --release -p gyre-node -p gyrectl -p gyre-stress --bins
#   scripts/bench-join.sh                      # 1M rows, 127.0.170.x
#   ROWS=200000 PREFIX=127.0.171 scripts/bench-join.sh -- --stream-sstables false
#
# Arguments after `--` go to every gyre node (e.g. `--stream-sstables false`
# for the row path). Env: BIN (release binaries dir, default
# $CARGO_TARGET_DIR/release or target/release), PREFIX (three octets),
# ROWS (default 1000000), RATE (client ops/s during both load runs, default
# 2000), LOAD_SECS (default 30), DIR (cluster dir, default /tmp/bench-join).
set -euo pipefail

BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
PREFIX=${PREFIX:-127.0.170}
ROWS=${ROWS:-1000000}
RATE=${RATE:-2000}
LOAD_SECS=${LOAD_SECS:-30}
DIR=${DIR:-/tmp/bench-join}
if [[ ${1:-} == -- ]]; then shift; fi
NODE_ARGS=("$@")
export GYRE_BIN=$BIN/gyre
CTL=$BIN/gyrectl
STRESS=$BIN/gyre-stress
for b in "$GYRE_BIN" "$CTL" "$STRESS"; do
    [[ -x $b ]] || { echo "missing $b: build the release binaries first" >&2; exit 1; }
done

cleanup() { "$CTL" cluster down --dir "$DIR" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
rm -rf "$DIR"

# p99 (ms) of the read and write lines of a gyre-stress summary.
p99() { awk '$1 == "read" || $1 == "write" { printf "%s p99 %s ms  ", $1, $8 }' "$1"; }

echo "== 3 nodes ($PREFIX.1-3), RF 3, ring delay 2 s, streaming unthrottled ${NODE_ARGS[*]:-}"
"$CTL" cluster up --dir "$DIR" --nodes 3 --ip-prefix "$PREFIX" --timeout-secs 120 -- \
    --ring-delay-ms 2000 --stream-throughput-mb-per-sec 0 "${NODE_ARGS[@]}" >/dev/null
echo "== write $ROWS rows at QUORUM"
"$STRESS" write --ops "$ROWS" --hosts "$PREFIX.1" --cl QUORUM --rf 3 --quiet | grep -E "^  write "
for n in 1 2 3; do
    curl -sf -X POST -H "Content-Type: application/json" -d "{}" "$PREFIX.$n:9180/flush" >/dev/null
done

echo "== client load alone: mixed ${RATE}/s for ${LOAD_SECS}s at QUORUM"
"$STRESS" mixed --rate "$RATE" --duration "${LOAD_SECS}s" --keys "$ROWS" --hosts "$PREFIX.1" \
    --cl QUORUM --rf 3 --quiet > "$DIR/load-alone.txt" 2>&1
p99 "$DIR/load-alone.txt"; echo

echo "== join node 4 under the same load"
"$STRESS" mixed --rate "$RATE" --duration "$((LOAD_SECS + 15))s" --keys "$ROWS" --hosts "$PREFIX.1" \
    --cl QUORUM --rf 3 --quiet > "$DIR/load-join.txt" 2>&1 &
LOAD=$!
sleep 3
t0=$(date +%s.%N)
"$CTL" cluster add --dir "$DIR" --timeout-secs 600 | grep joined
t1=$(date +%s.%N)
wait "$LOAD"
JOIN=$(echo "$t1 - $t0" | bc)

LINE=$(grep -a "bootstrap streaming finished" "$DIR/node4/gyre.log" | tail -1)
SECS=$(sed -E 's/.*secs=([0-9.]+).*/\1/' <<<"$LINE")
BYTES=$(sed -E 's/.*bytes=([0-9]+).*/\1/' <<<"$LINE")
SESSIONS=$(curl -sf "$PREFIX.4:9180/streams" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("%d sessions, %d partitions, %d whole files, %d sections" % (len(s),
      sum(x["partitions"] for x in s), sum(x.get("whole_files", 0) for x in s),
      sum(x.get("sections", 0) for x in s)))')

# The same number of bytes copied: node 1's SSTables (all tables), first
# files up to the streamed byte count, then synced (as the stream syncs).
COPY=$DIR/copy
mkdir -p "$COPY"
mapfile -t FILES < <(find "$DIR/node1/data" -name 'sst-*.db' -size +0 -printf '%s %p\n' | sort -rn |
    awk -v want="$BYTES" '{ if (sum < want) { print $2; sum += $1 } }')
sync
c0=$(date +%s.%N)
for f in "${FILES[@]}"; do cp "$f" "$COPY/$(basename "$(dirname "$f")")-$(basename "$f")"; done
sync
c1=$(date +%s.%N)
CBYTES=$(du -sb "$COPY" | cut -f1)
rm -rf "$COPY"

echo "== results"
echo "streamed:     $BYTES bytes in $SECS s ($SESSIONS)"
STREAM_MBS=$(echo "scale=1; $BYTES / $SECS / 1000000" | bc)
COPY_MBS=$(echo "scale=1; $CBYTES / ($c1 - $c0) / 1000000" | bc)
echo "stream rate:  $STREAM_MBS MB/s"
echo "cp + sync:    $CBYTES bytes in $(echo "$c1 - $c0" | bc) s = $COPY_MBS MB/s"
echo "ratio:        $(echo "scale=2; $STREAM_MBS / $COPY_MBS" | bc)x of the copy"
echo "join time:    $JOIN s (cluster add, includes the 2 s ring delay)"
echo "client p99 without the join: $(p99 "$DIR/load-alone.txt")"
echo "client p99 during the join:  $(p99 "$DIR/load-join.txt")"
