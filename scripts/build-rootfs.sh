#!/usr/bin/env bash
# A Debian bookworm root filesystem (debootstrap --variant=minbase) as a
# tarball, built once and kept in a cache: the clean root the Debian
# package test installs into, and the base of the container image built
# without a registry (scripts/build-image.sh).
#
#   scripts/build-rootfs.sh [--cache DIR]     prints the tarball's path
#
# The mirror is the one this machine's apt uses (override with
# GYRE_DEBIAN_MIRROR). Needs root and debootstrap
# (scripts/install-deploy-deps.sh).
set -euo pipefail

CACHE=${GYRE_ROOTFS_CACHE:-$HOME/.cache/gyre-rootfs}
while [ $# -gt 0 ]; do
    case "$1" in
        --cache) CACHE=${2:?--cache needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "build-rootfs.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
SUITE=bookworm
TARBALL=$CACHE/$SUITE-minbase.tar
if [ -s "$TARBALL" ]; then
    echo "$TARBALL"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    echo "build-rootfs.sh: debootstrap is missing (run scripts/install-deploy-deps.sh)" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "build-rootfs.sh: debootstrap needs root" >&2
    exit 1
fi

mirror() {
    if [ -n "${GYRE_DEBIAN_MIRROR:-}" ]; then
        echo "$GYRE_DEBIAN_MIRROR"
        return
    fi
    # deb822 sources (URIs:) or one-line sources (deb URI suite ...).
    local m
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}')
    if [ -z "$m" ]; then
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '$1 == "deb" && $2 !~ /security/ && $2 !~ /^\[/ {print $2; exit}')
    fi
    if [ -z "$m" ]; then
        echo "build-rootfs.sh: no Debian mirror in /etc/apt; set GYRE_DEBIAN_MIRROR" >&2
        exit 1
    fi
    echo "$m"
}
MIRROR=$(mirror)

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "build-rootfs.sh: debootstrap --variant=minbase $SUITE from $MIRROR" >&2
debootstrap --variant=minbase "$SUITE" "$WORK/root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -20 "$WORK/debootstrap.log" >&2
    exit 1
}
# What a container or a test root does not need: apt's lists and caches,
# documentation and locales (as debian:bookworm-slim leaves them out).
rm -rf "$WORK/root/var/lib/apt/lists/"* "$WORK/root/var/cache/apt/"*.bin \
    "$WORK/root/var/cache/apt/archives/"*.deb \
    "$WORK/root/usr/share/doc/"* "$WORK/root/usr/share/man/"* \
    "$WORK/root/usr/share/info/"* "$WORK/root/usr/share/locale/"*
tar --numeric-owner -C "$WORK/root" -cf "$WORK/rootfs.tar" .
mv "$WORK/rootfs.tar" "$TARBALL"
echo "$TARBALL"
