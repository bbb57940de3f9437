#!/bin/sh
# The container's entrypoint: runs gyre with /etc/gyre/gyre.toml, the
# environment variables below overriding its keys (README "Deployment").
#
#   GYRE_CLUSTER_NAME      cluster.name
#   GYRE_SEEDS             cluster.seeds: comma-separated IPs or host names
#                          (names are resolved here, waiting up to
#                          GYRE_SEED_WAIT_SECS, default 120, for DNS)
#   GYRE_NUM_TOKENS        cluster.num_tokens
#   GYRE_DATACENTER        cluster.datacenter
#   GYRE_RACK              cluster.rack
#   GYRE_LISTEN_ADDRESS    network.listen_address (an IP; default: the
#                          address the container's host name resolves to)
#   GYRE_INTERNODE_PORT    network.internode_port
#   GYRE_CQL_ADDRESS       network.cql_address
#   GYRE_CQL_PORT          network.cql_port
#   GYRE_ADMIN_ADDRESS     network.admin_address
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
# its DNS name resolved, retrying: a StatefulSet's seed pod is published
# in DNS a moment after it starts.
resolve() {
    if is_ip "$1"; then echo "$1"; return 0; fi
    host=${1%%:*}
    port=""
    if [ "$host" != "$1" ]; then port=":${1#*:}"; fi
    deadline=$(( $(date +%s) + ${GYRE_SEED_WAIT_SECS:-120} ))
    while :; do
        ip=$(getent ahostsv4 "$host" 2>/dev/null | awk 'NR == 1 {print $1}')
        if [ -n "$ip" ]; then echo "$ip$port"; return 0; fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "gyre-entrypoint: cannot resolve seed $host" >&2
            return 1
        fi
        sleep 2
    done
}

listen=${GYRE_LISTEN_ADDRESS:-}
if [ -z "$listen" ]; then
    listen=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR == 1 {print $1}')
fi
seeds=""
if [ -n "${GYRE_SEEDS:-}" ]; then
    for s in $(echo "$GYRE_SEEDS" | tr ',' ' '); do
        ip=$(resolve "$s")
        seeds=${seeds:+$seeds,}$ip
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
