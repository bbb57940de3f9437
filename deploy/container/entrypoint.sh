#!/bin/sh
# The container's entrypoint: runs gyre with /etc/gyre/gyre.toml, the
# environment variables below overriding its keys (README "Deployment").
#
#   GYRE_CLUSTER_NAME      cluster.name
#   GYRE_SEEDS             cluster.seeds: comma-separated IPs or host names
#                          (names are resolved here, retried for up to
#                          GYRE_SEED_WAIT_SECS, default 120; names still
#                          unresolved then are left out)
#   GYRE_NUM_TOKENS        cluster.num_tokens
#   GYRE_DATACENTER        cluster.datacenter
#   GYRE_RACK              cluster.rack
#   GYRE_LISTEN_ADDRESS    network.listen_address (an IP; default: the
#                          address the container's host name resolves to)
#   GYRE_INTERNODE_PORT    network.internode_port
#   GYRE_CQL_ADDRESS       network.cql_address
#   GYRE_CQL_PORT          network.cql_port
#   GYRE_ADMIN_ADDRESS     admin.listen_address (default 127.0.0.1)
#   GYRE_ADMIN_PORT        network.admin_port
#   GYRE_COMMITLOG_SYNC    storage.commitlog_sync (periodic, group, batch)
#   GYRE_LOG_LEVEL         log.level
#
# Arguments after the image name are passed to gyre as more flags
# (`gyre --help`). The entrypoint execs the node, so `podman stop` and
# Kubernetes deliver SIGTERM to it: it announces its shutdown, flushes and
# exits.
set -eu

CONFIG=${GYRE_CONFIG:-/etc/gyre/gyre.toml}

is_ip() {
    case "$1" in
        *:*:*) return 0 ;;                      # IPv6
        *[!0-9.:]*) return 1 ;;                 # a name
        *) return 0 ;;
    esac
}

# An IP (with the port, if given) for a seed: itself if it is an IP, else
# its DNS name resolved; fails when the name does not resolve (yet).
resolve() {
    if is_ip "$1"; then echo "$1"; return 0; fi
    host=${1%%:*}
    port=""
    if [ "$host" != "$1" ]; then port=":${1#*:}"; fi
    ip=$(getent ahostsv4 "$host" 2>/dev/null | awk 'NR == 1 {print $1}')
    [ -n "$ip" ] || return 1
    echo "$ip$port"
}

listen=${GYRE_LISTEN_ADDRESS:-}
if [ -z "$listen" ]; then
    listen=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR == 1 {print $1}')
fi
# Seeds by name (a StatefulSet's pod 0 is published in DNS a moment after
# it starts): retried until GYRE_SEED_WAIT_SECS; then the names still
# unresolved are left out with a warning, or the start fails if none
# resolved.
seeds=""
if [ -n "${GYRE_SEEDS:-}" ]; then
    deadline=$(( $(date +%s) + ${GYRE_SEED_WAIT_SECS:-120} ))
    pending=$(echo "$GYRE_SEEDS" | tr ',' ' ')
    while :; do
        left=""
        for s in $pending; do
            if ip=$(resolve "$s"); then
                seeds=${seeds:+$seeds,}$ip
            else
                left="$left $s"
            fi
        done
        pending=$left
        [ -n "$pending" ] || break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            if [ -z "$seeds" ]; then
                echo "gyre-entrypoint: cannot resolve any seed of GYRE_SEEDS=$GYRE_SEEDS" >&2
                exit 1
            fi
            echo "gyre-entrypoint: warning: seeds left out (not in DNS):$pending" >&2
            break
        fi
        sleep 2
    done
fi

# The user's arguments stay first; each set variable adds its flag.
for pair in \
    "--cluster-name=${GYRE_CLUSTER_NAME:-}" \
    "--seeds=$seeds" \
    "--num-tokens=${GYRE_NUM_TOKENS:-}" \
    "--datacenter=${GYRE_DATACENTER:-}" \
    "--rack=${GYRE_RACK:-}" \
    "--listen-address=$listen" \
    "--internode-port=${GYRE_INTERNODE_PORT:-}" \
    "--cql-address=${GYRE_CQL_ADDRESS:-}" \
    "--cql-port=${GYRE_CQL_PORT:-}" \
    "--admin-address=${GYRE_ADMIN_ADDRESS:-}" \
    "--admin-port=${GYRE_ADMIN_PORT:-}" \
    "--commitlog-sync=${GYRE_COMMITLOG_SYNC:-}" \
    "--log-level=${GYRE_LOG_LEVEL:-}"; do
    case "$pair" in
        *=) ;;
        *) set -- "$@" "$pair" ;;
    esac
done
echo "gyre-entrypoint: gyre --config $CONFIG $*" >&2
exec /usr/bin/gyre --config "$CONFIG" "$@"
