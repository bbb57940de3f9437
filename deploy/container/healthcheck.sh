#!/bin/sh
# The image's HEALTHCHECK: the node's admin endpoint answers /status. It
# binds admin.listen_address, 127.0.0.1 unless GYRE_ADMIN_ADDRESS says
# otherwise.
set -eu
exec /usr/bin/gyrectl status --host "${GYRE_ADMIN_ADDRESS:-127.0.0.1}" --port "${GYRE_ADMIN_PORT:-9180}" >/dev/null
