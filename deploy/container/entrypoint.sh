#!/bin/sh
# The container's entrypoint: runs gyre with /etc/gyre/gyre.toml, the
# environment variables below overriding its keys (README "Deployment").
#
#   GYRE_CLUSTER_NAME      cluster.name
#   GYRE_SEEDS             cluster.seeds: comma-separated IPs or host names
#                          (names are resolved here, retried for up to
#                          GYRE_SEED_WAIT_SECS, default 120; names still
#                          unresolved then are left out; a node that finds
#                          itself among the seeds waits for no other)
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
#   GYRE_AUTO_BOOTSTRAP    cluster.auto_bootstrap (true, false)
#   GYRE_RING_DELAY_MS     cluster.ring_delay_ms
#   GYRE_AUTHENTICATOR     auth.authenticator (AllowAll, PasswordAuthenticator)
#   GYRE_AUTHORIZER        auth.authorizer (AllowAll, CassandraAuthorizer)
#   GYRE_CLIENT_ENCRYPTION          client_encryption.enabled (true, false)
#   GYRE_CLIENT_ENCRYPTION_OPTIONAL client_encryption.optional
#   GYRE_CLIENT_CERTIFICATE         client_encryption.certificate (PEM file)
#   GYRE_CLIENT_PRIVATE_KEY         client_encryption.private_key
#   GYRE_CLIENT_CA_CERTIFICATE      client_encryption.ca_certificate
#   GYRE_CLIENT_REQUIRE_CLIENT_AUTH client_encryption.require_client_auth
#   GYRE_INTERNODE_ENCRYPTION       server_encryption.internode_encryption
#                                   (none, all)
#   GYRE_INTERNODE_CERTIFICATE      server_encryption.certificate
#   GYRE_INTERNODE_PRIVATE_KEY      server_encryption.private_key
#   GYRE_INTERNODE_CA_CERTIFICATE   server_encryption.ca_certificate
#   GYRE_INTERNODE_ENDPOINT_VERIFICATION
#                          server_encryption.require_endpoint_verification
#                          (false where node addresses change, as pod IPs)
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
# Seeds by name (a StatefulSet's pods are published in DNS a moment after
# they start): retried until GYRE_SEED_WAIT_SECS; then the names still
# unresolved are left out with a warning, or the start fails if none
# resolved. A new node (no state on its volume) that is one of the seeds
# itself (pod 0 forming a new cluster, before pod 1 exists) waits for no
# other: it may be the first. A known node waits: a seed that only knows
# itself would stay alone (pod 0 rescheduled at a new IP).
seeds=""
if [ -n "${GYRE_SEEDS:-}" ]; then
    deadline=$(( $(date +%s) + ${GYRE_SEED_WAIT_SECS:-120} ))
    pending=$(echo "$GYRE_SEEDS" | tr ',' ' ')
    self=""
    known=""
    [ ! -e /var/lib/gyre/data/node_state.json ] || known=yes
    while :; do
        left=""
        for s in $pending; do
            if ip=$(resolve "$s"); then
                seeds=${seeds:+$seeds,}$ip
                [ -n "$known" ] || [ "${ip%%:*}" != "$listen" ] || self=yes
            else
                left="$left $s"
            fi
        done
        pending=$left
        [ -n "$pending" ] || break
        if [ -n "$self" ] || [ "$(date +%s)" -ge "$deadline" ]; then
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
    "--log-level=${GYRE_LOG_LEVEL:-}" \
    "--auto-bootstrap=${GYRE_AUTO_BOOTSTRAP:-}" \
    "--ring-delay-ms=${GYRE_RING_DELAY_MS:-}" \
    "--authenticator=${GYRE_AUTHENTICATOR:-}" \
    "--authorizer=${GYRE_AUTHORIZER:-}"; do
    case "$pair" in
        *=) ;;
        *) set -- "$@" "$pair" ;;
    esac
done
# Keys without a flag of their own: `--set section.key=value`.
for pair in \
    "client_encryption.enabled=${GYRE_CLIENT_ENCRYPTION:-}" \
    "client_encryption.optional=${GYRE_CLIENT_ENCRYPTION_OPTIONAL:-}" \
    "client_encryption.certificate=${GYRE_CLIENT_CERTIFICATE:-}" \
    "client_encryption.private_key=${GYRE_CLIENT_PRIVATE_KEY:-}" \
    "client_encryption.ca_certificate=${GYRE_CLIENT_CA_CERTIFICATE:-}" \
    "client_encryption.require_client_auth=${GYRE_CLIENT_REQUIRE_CLIENT_AUTH:-}" \
    "server_encryption.internode_encryption=${GYRE_INTERNODE_ENCRYPTION:-}" \
    "server_encryption.certificate=${GYRE_INTERNODE_CERTIFICATE:-}" \
    "server_encryption.private_key=${GYRE_INTERNODE_PRIVATE_KEY:-}" \
    "server_encryption.ca_certificate=${GYRE_INTERNODE_CA_CERTIFICATE:-}" \
    "server_encryption.require_endpoint_verification=${GYRE_INTERNODE_ENDPOINT_VERIFICATION:-}"; do
    case "$pair" in
        *=) ;;
        *) set -- "$@" --set "$pair" ;;
    esac
done
echo "gyre-entrypoint: gyre --config $CONFIG $*" >&2
exec /usr/bin/gyre --config "$CONFIG" "$@"
