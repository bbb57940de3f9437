#!/usr/bin/env bash
# Installs what the deployment tests need (Debian): dpkg-dev and binutils
# to build the .deb (dpkg-shlibdeps, strip), lintian to check it, debootstrap for the clean
# root it is installed into and the image's base, podman with runc for the
# image and the three-container test, systemd for `systemd-analyze verify`
# of the unit, openssl for scripts/k8s-tls-secret.sh. Idempotent; a no-op
# when everything is installed.
set -euo pipefail
PKGS=(dpkg-dev binutils lintian debootstrap podman runc uidmap systemd openssl)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg -s "$p" >/dev/null 2>&1; then missing+=("$p"); fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
