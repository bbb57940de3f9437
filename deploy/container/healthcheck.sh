#!/bin/sh
# The image's HEALTHCHECK: the node's admin endpoint answers /status.
set -eu
addr=${GYRE_ADMIN_ADDRESS:-${GYRE_LISTEN_ADDRESS:-}}
if [ -z "$addr" ]; then
    addr=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR == 1 {print $1}')
fi
exec /usr/bin/gyrectl status --host "${addr:-127.0.0.1}" --port "${GYRE_ADMIN_PORT:-9180}" >/dev/null
