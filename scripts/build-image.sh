#!/usr/bin/env bash
# Builds the container image gyre:<version> (and gyre:latest) with podman
# from deploy/container/Containerfile without any registry: the base is a
# Debian bookworm minbase root filesystem (scripts/build-rootfs.sh)
# imported with `podman import` as localhost/gyre-base:bookworm.
#
#   scripts/build-image.sh [--profile release|debug] [--no-build]
#                          [--bin-dir DIR] [--tag NAME] [--base IMAGE]
#
# --profile  which cargo profile's binaries go in (default release);
#            from $CARGO_TARGET_DIR/<profile> (or target/).
# --no-build use the binaries already built instead of running cargo.
# --bin-dir  take the built binaries from DIR (implies --no-build).
# --tag      image name (default localhost/gyre); tagged :<version> and :latest.
# --base     build on IMAGE from a registry (e.g. debian:bookworm-slim, as
#            the Containerfile's default) instead of the local minbase root.
#
# Exits 77 (skipped), saying why, when podman or runc is not installed
# (scripts/install-deploy-deps.sh installs them). Prints the image last.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=release
BUILD=1
BIN_DIR=""
TAG=localhost/gyre
BASE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE=${2:?--profile needs release or debug}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a directory}; BUILD=0; shift 2 ;;
        --tag) TAG=${2:?--tag needs a name}; shift 2 ;;
        --base) BASE=${2:?--base needs an image}; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$PROFILE" in
    release|debug) ;;
    *) echo "build-image.sh: --profile is release or debug, not $PROFILE" >&2; exit 2 ;;
esac
for tool in podman runc; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-image.sh: SKIPPED: $tool is not installed (scripts/install-deploy-deps.sh installs it)" >&2
        exit 77
    fi
done

TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
BINS=(gyre gyrectl gyresh gyre-stress)
if [ "$BUILD" = 1 ]; then
    flag=()
    if [ "$PROFILE" = release ]; then flag=(--release); fi
    cargo build "${flag[@]}" -p gyre-node -p gyrectl -p gyresh -p gyre-stress
fi
BIN_DIR=${BIN_DIR:-$TARGET_DIR/$PROFILE}
for b in "${BINS[@]}"; do
    if [ ! -x "$BIN_DIR/$b" ]; then
        echo "build-image.sh: $BIN_DIR/$b is missing (build it, or drop --no-build)" >&2
        exit 1
    fi
done
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)

# The base: a Debian root filesystem from Debian's packages, no registry
# (unless --base names a registry's image).
PULL=(--pull=missing)
if [ -z "$BASE" ]; then
    BASE=localhost/gyre-base:bookworm
    PULL=(--pull=never)
    ROOTFS=$(scripts/build-rootfs.sh | tail -1)
    stamp=$(stat -c %Y "$ROOTFS")
    if [ "$(podman image inspect --format '{{index .Labels "gyre.rootfs"}}' "$BASE" 2>/dev/null || true)" != "$stamp" ]; then
        podman import --change "LABEL gyre.rootfs=$stamp" --change "CMD [\"/bin/bash\"]" \
            "$ROOTFS" "$BASE" >/dev/null
    fi
fi

CTX=$(mktemp -d "${TMPDIR:-/tmp}/gyre-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
mkdir "$CTX/bin"
for b in "${BINS[@]}"; do
    strip --remove-section=.comment --remove-section=.note --strip-unneeded \
        -o "$CTX/bin/$b" "$BIN_DIR/$b"
done
scripts/packaged-config.sh > "$CTX/gyre.toml"
cp deploy/container/entrypoint.sh deploy/container/healthcheck.sh \
    deploy/container/Containerfile "$CTX/"

# runc: crun refuses the cgroup set-up on some hosts. --format docker keeps
# the HEALTHCHECK (the OCI format has none).
podman build --runtime runc --format docker "${PULL[@]}" \
    --build-arg "BASE=$BASE" -t "$TAG:$VERSION" -t "$TAG:latest" \
    -f "$CTX/Containerfile" "$CTX" >&2
echo "$TAG:$VERSION"
