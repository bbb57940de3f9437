#!/usr/bin/env bash
# Prints the configuration the Debian package and the container image
# install as /etc/gyre/gyre.toml: conf/gyre.toml, the commented template,
# with the data under /var/lib/gyre.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(sed -e 's|^# data_dir = "var/data"$|data_dir = "/var/lib/gyre/data"|' \
    -e 's|^# commitlog_dir = "var/commitlog"$|commitlog_dir = "/var/lib/gyre/commitlog"|' \
    conf/gyre.toml)
for key in 'data_dir = "/var/lib/gyre/data"' 'commitlog_dir = "/var/lib/gyre/commitlog"'; do
    if ! grep -qxF "$key" <<<"$out"; then
        echo "packaged-config.sh: conf/gyre.toml changed: cannot set $key" >&2
        exit 1
    fi
done
printf '%s\n' "$out"
