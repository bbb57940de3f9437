#!/bin/sh
# The image's HEALTHCHECK: the node's admin endpoint answers /status. It
# binds admin.listen_address, 127.0.0.1 unless GYRE_ADMIN_ADDRESS says
# otherwise.
#
# `gyre-healthcheck --ready` (the Kubernetes readiness probe) also needs
# the node to be UN in its own view: NORMAL, so not while it bootstraps
# (it serves CQL only once NORMAL) nor while it leaves.
set -eu
admin=${GYRE_ADMIN_ADDRESS:-127.0.0.1}
port=${GYRE_ADMIN_PORT:-9180}
if [ "${1:-}" != "--ready" ]; then
    exec /usr/bin/gyrectl status --host "$admin" --port "$port" >/dev/null
fi
listen=${GYRE_LISTEN_ADDRESS:-}
if [ -z "$listen" ]; then
    listen=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR == 1 {print $1}')
fi
status=$(/usr/bin/gyrectl status --host "$admin" --port "$port")
echo "$status" | awk -v me="$listen:${GYRE_INTERNODE_PORT:-7000}" \
    '$1 == "UN" && $2 == me { found = 1 } END { exit !found }'
