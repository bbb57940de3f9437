#!/usr/bin/env bash
# Builds the Debian package gyre_<version>_<arch>.deb with dpkg-deb from the
# workspace binaries (gyre, gyrectl, gyresh, gyre-stress): /usr/bin/*,
# /etc/gyre/gyre.toml (a conffile: data under /var/lib/gyre), the systemd
# unit gyre.service and the maintainer scripts in deploy/debian/.
#
#   scripts/build-deb.sh [--profile release|debug] [--out DIR] [--no-build]
#                        [--bin-dir DIR]
#
# --profile  which cargo profile's binaries to package (default release);
#            they are taken from $CARGO_TARGET_DIR/<profile> (or target/).
# --no-build use the binaries already built instead of running cargo.
# --bin-dir  take the built binaries from DIR (implies --no-build).
# --out      where the .deb goes (default target/deb). Prints its path last.
# GYRE_DEB_MAINTAINER sets the Maintainer field (default: a placeholder).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PROFILE=release
OUT=""
BIN_DIR=""
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE=${2:?--profile needs release or debug}; shift 2 ;;
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a directory}; BUILD=0; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$PROFILE" in
    release|debug) ;;
    *) echo "build-deb.sh: --profile is release or debug, not $PROFILE" >&2; exit 2 ;;
esac
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/deb}
BINS=(gyre gyrectl gyresh gyre-stress)

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-deb.sh: $tool is missing (run scripts/install-deploy-deps.sh)" >&2
        exit 1
    fi
done

if [ "$BUILD" = 1 ]; then
    flag=()
    if [ "$PROFILE" = release ]; then flag=(--release); fi
    cargo build "${flag[@]}" -p gyre-node -p gyrectl -p gyresh -p gyre-stress
fi
BIN_DIR=${BIN_DIR:-$TARGET_DIR/$PROFILE}
for b in "${BINS[@]}"; do
    if [ ! -x "$BIN_DIR/$b" ]; then
        echo "build-deb.sh: $BIN_DIR/$b is missing (build it, or drop --no-build)" >&2
        exit 1
    fi
done

# Who the package names as its maintainer (set it for a package you publish).
MAINTAINER=${GYRE_DEB_MAINTAINER:-Gyre developers <gyre@localhost>}
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
ARCH=$(dpkg --print-architecture)
if [ -z "$VERSION" ]; then
    echo "build-deb.sh: no version in Cargo.toml [workspace.package]" >&2
    exit 1
fi

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/gyre-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
PKG=$STAGE/pkg
install -d -m 0755 "$PKG/DEBIAN" "$PKG/usr/bin" "$PKG/etc/gyre" \
    "$PKG/lib/systemd/system" "$PKG/usr/share/doc/gyre"

# Binaries, stripped as Debian's dh_strip does.
for b in "${BINS[@]}"; do
    strip --remove-section=.comment --remove-section=.note --strip-unneeded \
        -o "$PKG/usr/bin/$b" "$BIN_DIR/$b"
    chmod 0755 "$PKG/usr/bin/$b"
done

# The configuration: the commented template with the packaged paths set.
scripts/packaged-config.sh > "$PKG/etc/gyre/gyre.toml"
chmod 0644 "$PKG/etc/gyre/gyre.toml"

install -m 0644 deploy/debian/gyre.service "$PKG/lib/systemd/system/gyre.service"
install -m 0644 deploy/debian/README.Debian "$PKG/usr/share/doc/gyre/README.Debian"
cat > "$PKG/usr/share/doc/gyre/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: gyre

Files: *
Copyright: $(date -u +%Y) the Gyre developers
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
# A native package's changelog: this build.
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    printf 'gyre (%s) unstable; urgency=medium\n\n' "$VERSION"
    printf '  * Built from commit %s by scripts/build-deb.sh.\n\n' "$REV"
    printf ' -- %s  %s\n' "$MAINTAINER" "$(date -u -R)"
} | gzip -9n > "$PKG/usr/share/doc/gyre/changelog.gz"
chmod 0644 "$PKG/usr/share/doc/gyre/changelog.gz"
for s in postinst prerm postrm; do
    install -m 0755 "deploy/debian/$s" "$PKG/DEBIAN/$s"
done
echo /etc/gyre/gyre.toml > "$PKG/DEBIAN/conffiles"

# Shared-library dependencies, as dpkg-shlibdeps computes them for a
# source package (it wants a debian/control to read).
mkdir -p "$STAGE/src/debian"
printf 'Source: gyre\n\nPackage: gyre\nArchitecture: any\n' > "$STAGE/src/debian/control"
SHLIBS=$(cd "$STAGE/src" && dpkg-shlibdeps -O "${BINS[@]/#/$PKG/usr/bin/}" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
if [ -z "$SHLIBS" ]; then
    echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2
    exit 1
fi
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
cat > "$PKG/DEBIAN/control" <<CONTROL
Package: gyre
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $INSTALLED_SIZE
Depends: $SHLIBS, passwd
Section: database
Priority: optional
Description: Cassandra-style leaderless wide-column database
 Gyre is a leaderless wide-column database that speaks the CQL native
 protocol v4: nodes spread data over a Murmur3 token ring, find each other
 by gossip and store data in an LSM engine. This package holds the node
 (gyre, run by systemd as the gyre user), the operations tool gyrectl, the
 CQL shell gyresh and the load generator gyre-stress.
CONTROL
(cd "$PKG" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum) > "$PKG/DEBIAN/md5sums"

# Debug builds are only for tests: compress fast.
COMPRESS=(-Zxz)
if [ "$PROFILE" = debug ]; then COMPRESS=(-Zgzip -z1); fi
mkdir -p "$OUT"
DEB=$OUT/gyre_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group "${COMPRESS[@]}" --build "$PKG" "$DEB" >/dev/null
echo "$DEB"
