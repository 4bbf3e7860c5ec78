#!/usr/bin/env bash
# The system tools the tests and the test cluster need, installed where missing (Debian's apt):
#   scripts/install-system-deps.sh [--docker]
# The linter (shellcheck) checks every shipped and rendered script; SLURM, munge, iproute2 and
# util-linux's nsenter make the multi-node test cluster (tests/cluster/up.sh); prometheus scrapes
# a launch through its service-discovery file (tests/test_engine_launch.py); tmux runs pyserve top
# as a person would (tests/test_top.py); with --docker also Debian's
# docker.io, debootstrap and pigz (the CPU image of tests/test_docker.py), podman (which runs that
# image too), and the Docker daemon started.
# As root it installs; otherwise (or with PYSERVE_NO_INSTALL=1) it names the packages and the
# command, and exits 2.
set -euo pipefail

pairs=(shellcheck:shellcheck shfmt:shfmt slurmctld:slurmctld slurmd:slurmd srun:slurm-client
    munged:munge ip:iproute2 nsenter:util-linux prometheus:prometheus tmux:tmux)
if [ "${1:-}" = "--docker" ]; then
    pairs+=(dockerd:docker.io debootstrap:debootstrap pigz:pigz podman:podman)
fi
need=()
for pair in "${pairs[@]}"; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair##*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || [ -n "${PYSERVE_NO_INSTALL:-}" ]; then
        echo "install-system-deps: missing ${need[*]}; install them with:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
        exit 2
    fi
    echo "install-system-deps: installing ${need[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "${1:-}" = "--docker" ]; then
    # No init system starts the daemon on CI machines.
    bash "$(dirname "$0")/start-dockerd.sh"
fi
