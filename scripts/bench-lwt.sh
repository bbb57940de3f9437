#!/usr/bin/env bash
# Uncontended LWT throughput and p99 beside plain QUORUM writes (issue 16's
# "goal >= 0.4x"), for two builds at once: two 3-node release clusters (RF 3,
# the nodes' default commitlog mode unless --extra says otherwise) are up
# together, and every round runs, on each build in turn (the order swapped
# every round, so drift of the shared machine falls on both), a plain write
# run then an LWT run (`INSERT ... IF NOT EXISTS`, serial SERIAL, commit
# --cl) with gyre-stress over the scylla driver. Every run writes a table of
# its own (gyre-stress draws the same keys in every run), so no LWT finds its
# row: every one is applied, a full Paxos write.
#
# Per run it prints ops/s, p99, and from the three node processes: CPU per op
# (utime+stime of /proc/PID/stat), commitlog records and fsyncs per op
# (/metrics); per round and build the LWT/plain ratio; at the end the ratios.
#
# Usage: scripts/bench-lwt.sh --after DIR [--before DIR] [options]
#   --after DIR    directory with gyre, gyrectl, gyre-stress (e.g. target/release)
#   --before DIR   the same for the reference build (omit: only --after runs)
#   --rounds N     rounds (default 4)
#   --concurrency N  requests in flight (default 32)
#   --duration D   measured time per run (default 10s); --warmup D (default 2s)
#   --cl CL        write CL and LWT commit CL (default QUORUM)
#   --prefix-after P / --prefix-before P  node addresses P.1-3
#                  (defaults 127.0.220 / 127.0.221)
#   --dir D        where the clusters live (default: a new /tmp/gyre-lwt-bench.*)
#   --keep         keep the clusters running and their directory
#   --extra "ARGS" extra gyre arguments for every node (both builds)
#   --env-before "VAR=V ..." / --env-after "VAR=V ..."  environment of one
#                  build's nodes (e.g. the same binaries twice, one tuned)
set -euo pipefail

AFTER=""
BEFORE=""
ROUNDS=4
CONC=32
DURATION=10s
WARMUP=2s
CL=QUORUM
PA=127.0.220
PB=127.0.221
DIR=""
KEEP=0
EXTRA=""
ENV_BEFORE=""
ENV_AFTER=""
while [ $# -gt 0 ]; do
    case "$1" in
        --after) AFTER="$2"; shift 2 ;;
        --before) BEFORE="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --concurrency) CONC="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --cl) CL="$2"; shift 2 ;;
        --prefix-after) PA="$2"; shift 2 ;;
        --prefix-before) PB="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --extra) EXTRA="$2"; shift 2 ;;
        --env-before) ENV_BEFORE="$2"; shift 2 ;;
        --env-after) ENV_AFTER="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$AFTER" ] || { echo "--after DIR is required (see --help)" >&2; exit 2; }
for d in "$AFTER" ${BEFORE:+"$BEFORE"}; do
    for b in gyre gyrectl gyre-stress; do
        [ -x "$d/$b" ] || { echo "$d/$b: not found" >&2; exit 2; }
    done
done
[ -n "$DIR" ] || DIR="$(mktemp -d /tmp/gyre-lwt-bench.XXXXXX)"
mkdir -p "$DIR"

BUILDS=(after)
[ -n "$BEFORE" ] && BUILDS=(before after)
bin() { if [ "$1" = before ]; then echo "$BEFORE"; else echo "$AFTER"; fi; }
prefix() { if [ "$1" = before ]; then echo "$PB"; else echo "$PA"; fi; }
envof() { if [ "$1" = before ]; then echo "$ENV_BEFORE"; else echo "$ENV_AFTER"; fi; }

cleanup() {
    if [ "$KEEP" = 0 ]; then
        for b in "${BUILDS[@]}"; do
            "$(bin "$b")/gyrectl" cluster down --dir "$DIR/$b" >/dev/null 2>&1 || true
        done
        rm -rf "$DIR"
    else
        echo "kept $DIR (stop with: gyrectl cluster down --dir $DIR/BUILD)"
    fi
}
trap cleanup EXIT

for b in "${BUILDS[@]}"; do
    # shellcheck disable=SC2046,SC2086
    env $(envof "$b") "$(bin "$b")/gyrectl" cluster up --nodes 3 --ip-prefix "$(prefix "$b")" --dir "$DIR/$b" \
        --gyre-bin "$(bin "$b")/gyre" ${EXTRA:+-- $EXTRA} >/dev/null
    echo "$b: 3 nodes up at $(prefix "$b").1-3 ($(bin "$b") $(envof "$b"))"
done

# CPU ticks (utime + stime) of the build's three node processes.
ticks() {
    local t=0 n pid
    for n in 1 2 3; do
        pid=$(cat "$DIR/$1/node$n/pid")
        t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$t"
}
# Sum over the three nodes of a /metrics counter.
metric() {
    local s=0 n v
    for n in 1 2 3; do
        v=$(curl -s "http://$(prefix "$1").$n:9180/metrics" | awk -v m="$2" '$1 == m {print $2}')
        s=$(awk -v a="$s" -v b="${v:-0}" 'BEGIN {printf "%.0f", a + b}')
    done
    echo "$s"
}
HZ=$(getconf CLK_TCK)

# run BUILD KIND(plain|lwt) ROUND -> prints a line, leaves ops/s in $OPS and p99 in $P99
run() {
    local b="$1" kind="$2" p t0 t1 r0 r1 s0 s1 json lwt="" table="plain$3"
    p="$(prefix "$b")"
    [ "$kind" = lwt ] && { lwt=--lwt; table="lwt$3"; }
    json="$DIR/$b-$kind.json"
    t0=$(ticks "$b"); r0=$(metric "$b" gyre_storage_commitlog_records_total)
    s0=$(metric "$b" gyre_storage_commitlog_syncs_total)
    "$(bin "$b")/gyre-stress" write $lwt --hosts "$p.1,$p.2,$p.3" --keyspace lwt_bench \
        --table "$table" --rf 3 --cl "$CL" --concurrency "$CONC" --duration "$DURATION" \
        --warmup "$WARMUP" --keys 1099511627776 --dist uniform --quiet --json "$json" >/dev/null
    t1=$(ticks "$b"); r1=$(metric "$b" gyre_storage_commitlog_records_total)
    s1=$(metric "$b" gyre_storage_commitlog_syncs_total)
    # The counters also cover the warm-up: per op over warm-up + run
    # (the warm-up's ops are estimated at the run's rate).
    read -r OPS P99 ERR OPSALL < <(python3 - "$json" "$WARMUP" <<'EOF'
import json, sys, re
r = json.load(open(sys.argv[1]))
w = sys.argv[2]
m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", w)
secs = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)] if m else 0
t = r["total"]
print(f'{t["ops_per_s"]:.0f} {t["latency_ms"]["p99"]:.2f} {t["errors"]} {t["ops"] + t["ops_per_s"] * secs:.0f}')
EOF
)
    CPU=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$OPSALL" 'BEGIN {printf "%.0f", d / hz * 1e6 / n}')
    REC=$(awk -v d=$((r1 - r0)) -v n="$OPSALL" 'BEGIN {printf "%.2f", d / n}')
    SYN=$(awk -v d=$((s1 - s0)) -v n="$OPSALL" 'BEGIN {printf "%.3f", d / n}')
    printf '  %-6s %-5s %8s ops/s  p99 %7s ms  errors %s  node CPU %4s us/op  commitlog %s records/op, %s fsyncs/op  load %s\n' \
        "$b" "$kind" "$OPS" "$P99" "$ERR" "$CPU" "$REC" "$SYN" "$(cut -d' ' -f1 /proc/loadavg)"
}

declare -A RATIOS
for ((i = 1; i <= ROUNDS; i++)); do
    echo "round $i ($(uptime | sed 's/.*load/load/'))"
    order=("${BUILDS[@]}")
    if [ $((i % 2)) = 0 ] && [ ${#BUILDS[@]} = 2 ]; then order=(after before); fi
    for b in "${order[@]}"; do
        run "$b" plain "$i"
        plain=$OPS
        run "$b" lwt "$i"
        ratio=$(awk -v l="$OPS" -v p="$plain" 'BEGIN {printf "%.2f", l / p}')
        RATIOS[$b]="${RATIOS[$b]:-}$ratio "
        echo "  $b: LWT/plain $ratio"
    done
done
for b in "${BUILDS[@]}"; do
    echo "$b LWT/plain by round: ${RATIOS[$b]}"
done
