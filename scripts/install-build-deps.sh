#!/usr/bin/env bash
# Installs what `cargo build --workspace` needs beyond the Rust toolchain:
# OpenSSL's headers and pkg-config, for the TLS of gyresh and gyre-stress
# (the scylla driver's openssl-010 backend). Debian; idempotent, a no-op
# when already installed. .ci/run runs it.
set -euo pipefail
if dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libssl-dev pkg-config
