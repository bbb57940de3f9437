#!/usr/bin/env bash
# Protocol v5 beside v4 on one node (issue 17's measurement), two ways:
#
#   scripts/bench-v5.sh throughput   # ops/s, alternating v4/v5 rounds, pinned
#   scripts/bench-v5.sh icount       # node instructions per op (callgrind)
#
#   cargo build --release -p gyre-benches --bin protocol-bench
#
# throughput: the node (`protocol-bench --serve-node`) on CPU 0, the client
# on CPU 1; for each of write, read and lz4 read: ROUNDS alternating rounds
# of SECS seconds per version, medians and v5/v4 from protocol-bench.
#
# icount: the node under `valgrind --tool=callgrind`; per op and version two
# client runs of fixed size (N1 and N2 requests per round; each run is a
# warm-up round and one counted round, after the same setup), each dumped
# on its own: instructions per op = (Ir(N2 run) - Ir(N1 run)) / (2 (N2 - N1)),
# so startup and connection costs cancel. The keys are loaded once, by a
# first run (`--skip-load` after it: reloading would add row versions and
# make each later run's reads dearer). Instruction counts do not
# depend on the machine's load, unlike ops/s.
#
# Env: BIN (the protocol-bench binary, default
# $CARGO_TARGET_DIR/release/protocol-bench), NODE_BIN (the one serving the
# node, default BIN: another build's, to compare builds), ADDR (node IP, default
# 127.0.225.1), DIR (scratch, default /tmp/bench-v5), ROUNDS (5), SECS (4),
# N1 (2000), N2 (6000), OPS ("write read read-lz4").
set -euo pipefail

MODE=${1:-throughput}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/protocol-bench}
NODE_BIN=${NODE_BIN:-$BIN}
ADDR=${ADDR:-127.0.225.1}
DIR=${DIR:-/tmp/bench-v5}
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-4}
N1=${N1:-2000}
N2=${N2:-6000}
OPS=${OPS:-write read read-lz4}
[[ -x $BIN ]] || { echo "missing $BIN: build protocol-bench (release) first" >&2; exit 1; }

NODE_PID=
stop_node() {
    if [[ -n $NODE_PID ]]; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
        NODE_PID=
    fi
}
trap stop_node EXIT

# start_node PREFIX...: the node under PREFIX (taskset, valgrind), fresh data.
start_node() {
    rm -rf "$DIR"
    mkdir -p "$DIR"
    cat >"$DIR/gyre.toml" <<EOF
[cluster]
name = "bench-v5"
seeds = ["$ADDR:7000"]

[network]
listen_address = "$ADDR"

[admin]
listen_address = "$ADDR"

[storage]
data_dir = "$DIR/data"
commitlog_dir = "$DIR/commitlog"
commitlog_sync = "periodic"

[log]
level = "warn"
EOF
    "$@" "$NODE_BIN" --serve-node "$DIR/gyre.toml" >"$DIR/node.log" 2>&1 &
    NODE_PID=$!
    for _ in $(seq 300); do
        if (echo >"/dev/tcp/$ADDR/9042") 2>/dev/null; then return; fi
        sleep 0.5
    done
    echo "node did not start; see $DIR/node.log" >&2
    exit 1
}

# op_args OP: protocol-bench arguments of write, read, read-lz4.
op_args() {
    case $1 in
    write) echo "--op write" ;;
    read) echo "--op read" ;;
    read-lz4) echo "--op read --lz4" ;;
    write-lz4) echo "--op write --lz4" ;;
    *) echo "unknown op $1" >&2; exit 1 ;;
    esac
}

case $MODE in
throughput)
    echo "# $(date -u +%FT%TZ) $(uptime)"
    echo "# node $NODE_BIN on CPU 0, client $BIN on CPU 1; $ROUNDS rounds x ${SECS}s per version"
    for op in $OPS; do
        start_node taskset -c 0
        # shellcheck disable=SC2046
        taskset -c 1 "$BIN" --addr "$ADDR:9042" --node-pid "$NODE_PID" $(op_args "$op") \
            --repeat "$ROUNDS" --seconds "$SECS" 2>"$DIR/client.log" | tail -n 2
        echo "# after $op: $(uptime)"
        stop_node
    done
    ;;
icount)
    echo "# $(date -u +%FT%TZ) $(uptime)"
    echo "# node $NODE_BIN under callgrind, client $BIN; N1=$N1 N2=$N2 requests per round"
    echo "| op | version | Ir per op |"
    echo "|---|---|---|"
    for op in $OPS; do
        start_node valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out"
        lz=$(op_args "$op")
        # shellcheck disable=SC2086
        "$BIN" --addr "$ADDR:9042" $lz --keys 1000 --requests 500 --repeat 1 >/dev/null 2>&1
        for v in 4 5; do
            ir=()
            for n in "$N1" "$N2"; do
                callgrind_control -z "$NODE_PID" >/dev/null
                # shellcheck disable=SC2086
                "$BIN" --addr "$ADDR:9042" $lz --keys 1000 --skip-load --versions "$v" \
                    --requests "$n" --repeat 1 >/dev/null 2>"$DIR/client.log"
                callgrind_control -d "v$v-$op-$n" "$NODE_PID" >/dev/null
                # Newest dump file of this node.
                f=$(ls -t "$DIR"/cg.out.* | head -n 1)
                ir+=("$(awk '/^(summary|totals):/ {print $2; exit}' "$f")")
            done
            per=$(( (ir[1] - ir[0]) / (2 * (N2 - N1)) ))
            echo "| $op | v$v | $per |"
        done
        stop_node
        mkdir -p "$DIR.dumps/$op"
        mv "$DIR"/cg.out* "$DIR.dumps/$op/" 2>/dev/null || true
    done
    ;;
*)
    echo "usage: $0 throughput|icount" >&2
    exit 1
    ;;
esac
