#!/usr/bin/env bash
# Gyre against Redis on this machine, in one run (issue 12, "The benchmark").
#
# Measures, with 64 requests in flight and 100-byte values:
#   - Redis (Debian's redis-server) with AOF appendfsync everysec and always:
#     redis-benchmark -t set / -t get -n N -c 64 -d 100 -r N;
#   - one Gyre node with commitlog_sync periodic, group and batch:
#     gyre-stress write then read, CL ONE, RF 1 (with its built-in client,
#     `--driver native`, a single-threaded-style event loop per connection
#     like redis-benchmark's; `--driver scylla` measures with the scylla
#     driver instead);
#   - three Gyre nodes, RF 3, commitlog_sync group: gyre-stress write then
#     read at QUORUM;
# and prints one markdown table: ops/s, p50, p99, the ratio to the matching
# Redis mode (periodic against AOF everysec, group and batch against AOF
# always, reads against GET), and the CPU per operation of the client (the
# stress tool) and of the server (redis-server or the gyre node processes,
# from /proc/<pid>/stat utime + stime before and after each step).
#
# Usage: scripts/bench-vs-redis.sh [--ops N] [--quick] [--driver D] [--out FILE] [--no-build] [--keep]
#
# Redis and the nodes run on loopback addresses of their own (127.0.0.1:16379
# for Redis, 127.0.0.41-43 for Gyre) with data in a throwaway directory;
# everything started is stopped at exit, also on failure or Ctrl-C.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench-vs-redis.sh [options]

  --ops N       operations per step, and the key population (default 200000)
  --quick       a small run (5000 ops per step), to check the script itself
  --driver D    gyre-stress's client for the measured steps: native (default)
                or scylla
  --out FILE    also write the table (and its notes) to FILE
  --no-build    do not run cargo build --release (use the binaries already in
                $CARGO_TARGET_DIR/release, or target/release)
  --keep        keep the temporary directory (logs, JSON reports)
  -h, --help    this text

Environment: CARGO_TARGET_DIR (where the release binaries are built),
BENCH_REDIS_PORT (default 16379), BENCH_GYRE_IP_PREFIX (default 127.0.0)
and BENCH_GYRE_FIRST_IP (default 41).
EOF
}

OPS=200000
QUICK=0
OUT=""
BUILD=1
KEEP=0
DRIVER=native
while [[ $# -gt 0 ]]; do
    case "$1" in
        --ops)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] || { echo "--ops needs a positive number" >&2; exit 2; }
            OPS=$2
            shift 2
            ;;
        --quick) QUICK=1; shift ;;
        --driver)
            [[ $# -ge 2 && ( "$2" == native || "$2" == scylla ) ]] || { echo "--driver is native or scylla" >&2; exit 2; }
            DRIVER=$2
            shift 2
            ;;
        --out)
            [[ $# -ge 2 ]] || { echo "--out needs a file" >&2; exit 2; }
            OUT=$2
            shift 2
            ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [[ $QUICK -eq 1 ]]; then
    OPS=5000
fi

CONCURRENCY=64
VALUE_SIZE=100
REDIS_PORT=${BENCH_REDIS_PORT:-16379}
IP_PREFIX=${BENCH_GYRE_IP_PREFIX:-127.0.0}
FIRST_IP=${BENCH_GYRE_FIRST_IP:-41}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# A relative CARGO_TARGET_DIR is relative to where cargo runs: the repo root.
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
BIN=$TARGET_DIR/release
CLK_TCK=$(getconf CLK_TCK)
START_TIME=$(date +%s)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- teardown

WORK=$(mktemp -d -t gyre-bench.XXXXXX)
REDIS_PID=""
CLUSTER_DIRS=()

stop_redis() {
    if [[ -n $REDIS_PID ]] && kill -0 "$REDIS_PID" 2>/dev/null; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$REDIS_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    REDIS_PID=""
}

# Stops a cluster gracefully, then SIGKILLs whatever of it is still running.
stop_cluster() {
    local dir=$1 pidfile pid
    [[ -d $dir ]] || return 0
    if [[ -x $BIN/gyrectl ]]; then
        timeout 60 "$BIN/gyrectl" cluster down --dir "$dir" >/dev/null 2>&1 || true
    fi
    for pidfile in "$dir"/node*/pid; do
        [[ -f $pidfile ]] || continue
        pid=$(<"$pidfile")
        if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_redis
    local d
    for d in "${CLUSTER_DIRS[@]+"${CLUSTER_DIRS[@]}"}"; do
        stop_cluster "$d"
    done
    if [[ $KEEP -eq 1 || $rc -ne 0 ]]; then
        log "logs and reports kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- setup

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null || ! command -v redis-cli >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "redis-server and redis-tools are missing and installing them needs root"
    log "installing redis-server and redis-tools"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
command -v python3 >/dev/null || die "python3 is needed (to parse the reports)"

if [[ $BUILD -eq 1 ]]; then
    log "building gyre, gyrectl and gyre-stress (release) into $TARGET_DIR"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p gyre-node -p gyrectl -p gyre-stress)
fi
for b in gyre gyrectl gyre-stress; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing (build it, or drop --no-build)"
done

port_in_use() { # ip port
    ss -Hltn "sport = :$2" 2>/dev/null | awk '{print $4}' | grep -Eq "^(\\*|0\\.0\\.0\\.0|\\[::\\]|$1):$2\$"
}
port_in_use 127.0.0.1 "$REDIS_PORT" && die "127.0.0.1:$REDIS_PORT is in use (set BENCH_REDIS_PORT)"
for i in 0 1 2; do
    ip=$IP_PREFIX.$((FIRST_IP + i))
    for p in 7000 9042 9180; do
        port_in_use "$ip" "$p" && die "$ip:$p is in use (set BENCH_GYRE_FIRST_IP)"
    done
done

# user + system CPU ticks of the given processes, summed.
cpu_ticks() {
    local total=0 pid t
    for pid in "$@"; do
        # Fields after the ") " that closes the command name: utime is the
        # 12th, stime the 13th (14th and 15th of the whole line).
        t=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo "$total"
}

# Runs a command and writes the user and system CPU seconds it used to $1.
run_timed() {
    local cpu_file=$1
    shift
    python3 - "$cpu_file" "$@" <<'PY'
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write(f"{ru.ru_utime} {ru.ru_stime}\n")
sys.exit(rc)
PY
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# ---------------------------------------------------------------- Redis

bench_redis() {
    local fsync=$1
    local dir=$WORK/redis-$fsync t before after
    mkdir -p "$dir"
    log "redis, appendfsync $fsync: starting on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" \
        --appendonly yes --appendfsync "$fsync" --save '' \
        --daemonize no --logfile "$dir/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 100); do
        [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
        kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited; see $dir/redis.log"
        sleep 0.1
    done
    [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] || die "redis-server did not answer"
    for t in set get; do
        log "redis, appendfsync $fsync: $t, $OPS ops"
        before=$(cpu_ticks "$REDIS_PID")
        run_timed "$dir/$t.cpu" redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t "$t" \
            -n "$OPS" -c "$CONCURRENCY" -d "$VALUE_SIZE" -r "$OPS" --csv >"$dir/$t.csv"
        after=$(cpu_ticks "$REDIS_PID")
        python3 - "$dir/$t.csv" "$dir/$t.cpu" "$OPS" "$((after - before))" "$CLK_TCK" "$fsync" "$t" >>"$RESULTS" <<'PY'
import csv, sys
path, cpu_path, ops, ticks, hz, fsync, op = sys.argv[1:]
rows = [r for r in csv.DictReader(open(path)) if r.get("test")]
if len(rows) != 1:
    sys.exit(f"unexpected redis-benchmark output in {path}")
r = rows[0]
user, system = map(float, open(cpu_path).read().split())
name = {"set": "SET", "get": "GET"}[op]
print("\t".join([f"Redis, AOF {fsync}", name, ops, r["rps"], r["p50_latency_ms"],
                 r["p99_latency_ms"], str(user + system), str(int(ticks) / int(hz)),
                 "0", "0", ""]))
PY
    done
    stop_redis
}

# ---------------------------------------------------------------- Gyre

# gyre-stress OP against the cluster in $1, recording a row for $2.
# Args: cluster dir, setup label, op (write|read), CL, RF, compare-to
# (redis fsync mode), hosts.
stress_step() {
    local dir=$1 label=$2 op=$3 cl=$4 rf=$5 versus=$6 hosts=$7
    local pids=() pidfile before after json=$dir/$op.json
    for pidfile in "$dir"/node*/pid; do
        pids+=("$(<"$pidfile")")
    done
    log "$label: $op, $OPS ops at $cl"
    before=$(cpu_ticks "${pids[@]}")
    "$BIN/gyre-stress" "$op" --hosts "$hosts" --ops "$OPS" --keys "$OPS" \
        --concurrency "$CONCURRENCY" --value-size "$VALUE_SIZE" --cl "$cl" --rf "$rf" \
        --driver "$DRIVER" --quiet --json "$json" >"$dir/$op.out" 2>&1 ||
        { cat "$dir/$op.out" >&2; die "gyre-stress $op failed ($label)"; }
    after=$(cpu_ticks "${pids[@]}")
    python3 - "$json" "$((after - before))" "$CLK_TCK" "$label" "$op" "$versus" >>"$RESULTS" <<'PY'
import json, sys
path, ticks, hz, label, op, versus = sys.argv[1:]
r = json.load(open(path))
t = r["total"]
lat = t["latency_ms"]
cpu = r["cpu"]["user_s"] + r["cpu"]["system_s"]
redis_op = {"write": "SET", "read": "GET"}[op]
print("\t".join([label, op, str(t["ops"]), str(t["ops_per_s"]), str(lat["p50"]), str(lat["p99"]),
                 str(cpu), str(int(ticks) / int(hz)), str(t["errors"]), str(r.get("not_found", 0)),
                 f"Redis, AOF {versus}|{redis_op}"]))
PY
}

# Starts a fresh cluster of $2 nodes with commitlog_sync $3, runs write then
# read at CL $4 against it, and stops it.
bench_gyre() {
    local name=$1 nodes=$2 sync=$3 cl=$4 versus=$5 label=$6
    local dir=$WORK/$name hosts="" i
    CLUSTER_DIRS+=("$dir")
    for ((i = 0; i < nodes; i++)); do
        hosts+="${hosts:+,}$IP_PREFIX.$((FIRST_IP + i))"
    done
    log "$label: starting $nodes node(s) on $hosts"
    "$BIN/gyrectl" cluster up --dir "$dir" --nodes "$nodes" --gyre-bin "$BIN/gyre" \
        --cluster-name "gyre-bench" --ip-prefix "$IP_PREFIX" --first-ip "$FIRST_IP" \
        --timeout-secs 120 -- --commitlog-sync "$sync" >"$dir.up.log" 2>&1 ||
        { cat "$dir.up.log" >&2; die "gyrectl cluster up failed ($label)"; }
    # Keyspace and table first (RF = nodes), so that no DDL falls in a
    # measured step.
    "$BIN/gyre-stress" write --hosts "$hosts" --ops 1000 --concurrency 8 \
        --value-size "$VALUE_SIZE" --rf "$nodes" --quiet >"$dir/prime.out" 2>&1 ||
        { cat "$dir/prime.out" >&2; die "gyre-stress could not create its table ($label)"; }
    stress_step "$dir" "$label" write "$cl" "$nodes" "$versus" "$hosts"
    stress_step "$dir" "$label" read "$cl" "$nodes" "$versus" "$hosts"
    log "$label: stopping"
    stop_cluster "$dir"
}

# ---------------------------------------------------------------- the run

log "work directory $WORK, $OPS ops per step"
bench_redis everysec
bench_redis always
bench_gyre g1-periodic 1 periodic ONE everysec "Gyre 1 node, commitlog periodic, CL ONE"
bench_gyre g1-group 1 group ONE always "Gyre 1 node, commitlog group, CL ONE"
bench_gyre g1-batch 1 batch ONE always "Gyre 1 node, commitlog batch, CL ONE"
bench_gyre g3-group 3 group QUORUM always "Gyre 3 nodes RF=3, commitlog group, QUORUM"

ELAPSED=$(($(date +%s) - START_TIME))
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | head -c1)
REDIS_VERSION=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')

TABLE=$WORK/table.md
python3 - "$RESULTS" "$OPS" "$COMMIT${DIRTY:+ (modified)}" "$REDIS_VERSION" "$(nproc)" "$ELAPSED" "$DRIVER" >"$TABLE" <<'PY'
import sys
path, ops, commit, redis_version, cpus, elapsed, driver = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
redis = {(r[0], r[1]): float(r[3]) for r in rows if r[0].startswith("Redis")}

def num(x, digits=0):
    return f"{x:,.{digits}f}"

print(f"Gyre {commit} against Redis {redis_version}; {ops} ops per step, "
      f"64 in flight, 100-byte values, {cpus} CPUs, gyre-stress --driver {driver}, whole run {elapsed} s.")
print()
print("| setup | op | ops/s | p50 ms | p99 ms | vs Redis | client CPU µs/op | server CPU µs/op |")
print("|---|---|---:|---:|---:|---|---:|---:|")
notes = []
by_label = {}
for setup, op, n, rate, p50, p99, ccpu, scpu, errors, not_found, versus in rows:
    n, rate = int(n), float(rate)
    by_label[(setup, op)] = rate
    if versus:
        vs_setup, vs_op = versus.split("|")
        base = redis.get((vs_setup, vs_op))
        ratio = f"{rate / base:.2f}× {vs_setup.split(', ')[1]} {vs_op}" if base else "?"
    else:
        ratio = "—"
    per_op = lambda s: num(float(s) * 1e6 / n, 1) if n else "?"
    print(f"| {setup} | {op} | {num(rate)} | {float(p50):.2f} | {float(p99):.2f} | {ratio} "
          f"| {per_op(ccpu)} | {per_op(scpu)} |")
    if int(errors) or int(not_found):
        notes.append(f"{setup} {op}: {errors} errors, {not_found} rows not found")
print()
three = "Gyre 3 nodes RF=3, commitlog group, QUORUM"
one = "Gyre 1 node, commitlog group, CL ONE"
for op in ("write", "read"):
    if (three, op) in by_label and (one, op) in by_label and by_label[(one, op)]:
        notes.append(f"3 nodes QUORUM / 1 node ({op}, group): "
                     f"{by_label[(three, op)] / by_label[(one, op)]:.2f}×")
notes.append("Server CPU: user+system of redis-server or of every gyre node process, over "
             "the whole client process (connect and prepare included); client CPU: "
             "redis-benchmark's whole process, gyre-stress's measured phase.")
for n in notes:
    print(f"- {n}")
PY

cat "$TABLE"
if [[ -n $OUT ]]; then
    cp "$TABLE" "$OUT"
    log "table written to $OUT"
fi
log "done in ${ELAPSED} s"
