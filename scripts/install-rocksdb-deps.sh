#!/usr/bin/env bash
# Installs what the `rocksdb` feature needs to build: libclang for the
# bindings (Debian). Idempotent; a no-op when already installed.
set -euo pipefail
if dpkg -s libclang-dev >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev
