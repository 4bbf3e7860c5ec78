#!/usr/bin/env bash
# Build the local Debian base image for docker/Dockerfile.cpu without a registry:
# debootstrap a minimal Debian into a directory and `docker import` it.
#   scripts/docker-base.sh [TAG]          (default pyserve-debian-base:bookworm; needs root)
# The Debian mirror is the one this host's apt already uses (no address is written here).
set -euo pipefail
tag=${1:-pyserve-debian-base:bookworm}
suite=${DEBIAN_SUITE:-bookworm}
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "docker-base: $tag already present"
    exit 0
fi
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    # deb822 sources (URIs: ...) first, then the one-line format (deb URL suite ...).
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
if [ -z "$mirror" ]; then
    echo "docker-base: no Debian mirror found in this host's apt sources; set DEBIAN_MIRROR" >&2
    exit 2
fi
command -v debootstrap >/dev/null || { echo "docker-base: install debootstrap" >&2; exit 2; }
rootfs=$(mktemp -d /tmp/pyserve-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "docker-base: debootstrap $suite (minbase) into $rootfs"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    exit 1
}
rm -f "$rootfs.log"
# Debian's own apt sources inside the image point at the same mirror.
tar -C "$rootfs" -c . | docker import \
    --change 'LABEL org.opencontainers.image.title=pyserve-debian-base' \
    --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "docker-base: imported $tag"
