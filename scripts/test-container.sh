#!/usr/bin/env bash
# `make test-container`: builds docker/Dockerfile with podman and runs the image
# (tests/deploy/test_container.py). Needs root, as CI has: rootful podman with the runc runtime.
#
# No container registry is reachable here, so the base image the Dockerfile names,
# debian:bookworm-slim, is made from Debian's archive by `debootstrap --variant=minbase bookworm`
# and imported under that name. Everything podman keeps (that base image, the build's layer
# cache) lives in its own storage under $SLUICE_CACHE/podman, not in the machine's default
# storage, together with the debootstrap tarball: `rm -rf "$SLUICE_CACHE"` starts from cold.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test-container: needs root (rootful podman; CI runs as root)" >&2
    exit 1
fi

# podman's Recommends (buildah, slirp4netns, uidmap, fuse-overlayfs) are for rootless use; as
# root it needs runc (crun fails on these machines' hybrid cgroup v1 + v2 mounts), netavark and
# iptables for the published port, catatonit for `kube play`'s pause image, and debootstrap
# for the base image.
DEB_PKGS=(podman runc netavark iptables catatonit debootstrap)
missing=()
for p in "${DEB_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "test-container: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
PODMAN_DIR=$CACHE/podman
RUN_DIR=/run/sluice-container-test
mkdir -p "$PODMAN_DIR" "$RUN_DIR"

# podman's defaults raise RLIMIT_NOFILE and RLIMIT_NPROC in every container above the hard
# limits these machines give root, and runc then fails with "error setting rlimits". Containers
# get the caller's open-file limit and a fixed thread limit instead (sluice's threads are well
# under it). netavark is named: a new storage would otherwise consider the CNI config that
# Debian's podman also ships, and warn that its plugins are missing.
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=65536
cat >"$PODMAN_DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[network]
network_backend = "netavark"
[engine]
runtime = "runc"
tmp_dir = "$RUN_DIR/libpod"
EOF
cat >"$PODMAN_DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$PODMAN_DIR/storage"
runroot = "$RUN_DIR/storage"
EOF
export CONTAINERS_CONF=$PODMAN_DIR/containers.conf
export CONTAINERS_STORAGE_CONF=$PODMAN_DIR/storage.conf

# The base image: debootstrap once into a tarball, import it whenever podman's storage lacks it.
BASE=debian:bookworm-slim
TARBALL=$CACHE/debian-bookworm-minbase.tar
if [ ! -f "$TARBALL" ]; then
    echo "test-container: debootstrap --variant=minbase bookworm (once; cached in $TARBALL)"
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -n 30 "$CACHE/debootstrap.log" >&2; exit 1; }
    # what the debian:bookworm-slim image also drops: apt's package cache and lists
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$root"
    trap - EXIT
fi
if ! podman image exists "localhost/$BASE"; then
    echo "test-container: podman import $TARBALL as $BASE"
    podman import -q "$TARBALL" "localhost/$BASE" >/dev/null
fi

# Each build's images stay, untagged, as the layer cache (tens of MB more per source change);
# untagged images that no other image builds on and that are older than a week are pruned.
podman image prune -f --filter until=168h >/dev/null

# BuildKit's Dockerfile parser, for Dockerfile.cuda's stages that cannot be built here
.venv/bin/python -c "import dockerfile" 2>/dev/null || .venv/bin/pip install -q --disable-pip-version-check dockerfile==3.4.0

# Everything in this storage is the test's own: containers and pods left by a run that was
# killed go before the run, and this run's go after it, passed, failed or interrupted.
clean() {
    podman pod rm -a -f -t 0 >/dev/null 2>&1 || true
    podman rm -a -f -t 0 >/dev/null 2>&1 || true
}
clean
trap clean EXIT
export SLUICE_CONTAINER_TEST=1
.venv/bin/python -m pytest -q -p no:cacheprovider -rs tests/deploy/test_container.py "$@"
