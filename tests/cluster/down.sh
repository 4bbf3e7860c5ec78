#!/usr/bin/env bash
# Tear down what up.sh created: daemons (by their pid files), namespaces, veths, the bridge, the
# /etc/hosts lines and the state directory. Idempotent; touches nothing else.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
source "$here/common.sh"

[ "$(id -u)" = 0 ] || { echo "down.sh: needs root" >&2; exit 1; }

stop_pidfile() {
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

# Clients of this cluster (srun/salloc/sbatch left by an interrupted test) carry its SLURM_CONF.
# The shell that called us may carry it too (after `export SLURM_CONF=...`): spare our ancestors.
ancestors=" "
pid=$$
while [ "$pid" -gt 1 ] 2>/dev/null; do
    ancestors+="$pid "
    pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || echo 1)
done
for environ in /proc/[0-9]*/environ; do
    if { tr '\0' '\n' <"$environ"; } 2>/dev/null | grep -qx "SLURM_CONF=$STATE_DIR/slurm.conf"; then
        pid=${environ#/proc/}
        pid=${pid%/environ}
        case "$ancestors" in
        *" $pid "*) ;;
        *) kill -9 "$pid" 2>/dev/null ;;
        esac
    fi
done

if [ -d "$STATE_DIR" ]; then
    export SLURM_CONF="$STATE_DIR/slurm.conf"
    # Cancel the test cluster's jobs so their steps end before the daemons go.
    if [ -f "$SLURM_CONF" ] && command -v scancel >/dev/null; then
        squeue -h -o '%i' 2>/dev/null | xargs -r scancel --quiet --full 2>/dev/null
    fi
    for pidfile in "$STATE_DIR"/slurmd-*.pid; do
        stop_pidfile "$pidfile"
    done
    stop_pidfile "$STATE_DIR/slurmctld.pid"
    stop_pidfile "$STATE_DIR/munge/munged.pid"
fi

for netns in /var/run/netns/pysv-node*; do
    [ -e "$netns" ] || continue
    ns=$(basename "$netns")
    # Processes still inside the namespace were started there by the cluster's jobs.
    pids=$(ip netns pids "$ns" 2>/dev/null)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null
    fi
    ip netns delete "$ns"
done
for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^pysv-v'); do
    ip link delete "$link" 2>/dev/null
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
if command -v iptables >/dev/null 2>&1; then
    while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment pyserve-cluster \
        -j ACCEPT 2>/dev/null; do :; done
fi
if grep -q "$HOSTS_TAG" /etc/hosts; then
    # /etc/hosts may be a bind mount: rewrite it in place rather than replacing the file.
    kept=$(grep -v "$HOSTS_TAG" /etc/hosts)
    printf '%s\n' "$kept" >/etc/hosts
fi
rm -rf "$STATE_DIR"
exit 0
