#!/usr/bin/env bash
# Start Debian's Docker daemon where no init system does (CI, containers-in-VMs); a running
# daemon is left alone.   scripts/start-dockerd.sh   (root)
set -euo pipefail
if docker info >/dev/null 2>&1; then
    exit 0
fi
command -v dockerd >/dev/null || { echo "start-dockerd: dockerd not installed (apt-get install docker.io)" >&2; exit 2; }
log=${DOCKERD_LOG:-/var/log/pyserve-dockerd.log}
setsid dockerd >>"$log" 2>&1 </dev/null &
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        echo "start-dockerd: daemon up ($(docker version --format '{{.Server.Version}}'))"
        exit 0
    fi
    sleep 1
done
echo "start-dockerd: dockerd did not come up; last lines of $log:" >&2
tail -20 "$log" >&2
exit 1
