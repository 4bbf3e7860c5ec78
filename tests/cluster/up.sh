#!/usr/bin/env bash
# Bring up a SLURM test cluster on this machine: one network namespace per node joined by a
# bridge, munge and slurmctld on the host, one slurmd per namespace. Idempotent; needs root.
# Afterwards: export SLURM_CONF=$STATE_DIR/slurm.conf (printed last) and use salloc/srun/sbatch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
source "$here/common.sh"

[ "$(id -u)" = 0 ] || { echo "up.sh: needs root" >&2; exit 1; }
for tool in ip nsenter munged slurmctld slurmd srun; do
    command -v "$tool" >/dev/null || { echo "up.sh: $tool not installed" >&2; exit 1; }
done

mkdir -p "$STATE_DIR"/{munge,ctld,log}
chmod 700 "$STATE_DIR/munge"
conf="$STATE_DIR/slurm.conf"

# --- network: bridge + one namespace per node -------------------------------------------
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
fi
ip link set "$BRIDGE" up
# A Docker daemon on the same machine sets the FORWARD policy to DROP, and with br_netfilter
# bridged frames pass through it: node-to-node traffic on the bridge would be dropped. Allow
# exactly the bridge's own traffic (tagged, so down.sh removes only this rule).
if command -v iptables >/dev/null 2>&1; then
    rule=(FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment pyserve-cluster -j ACCEPT)
    iptables -C "${rule[@]}" 2>/dev/null || iptables -I "${rule[@]}"
fi
for i in $(seq 1 "$NODES"); do
    ns=$(node_name "$i")
    if [ ! -e "/var/run/netns/$ns" ]; then
        ip netns add "$ns"
    fi
    if ! ip link show "pysv-v$i" >/dev/null 2>&1; then
        ip link add "pysv-v$i" type veth peer name "pysv-p$i"
        ip link set "pysv-p$i" netns "$ns"
        ip -n "$ns" link set "pysv-p$i" name eth0
        ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
    fi
    ip link set "pysv-v$i" master "$BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace default via "$BRIDGE_IP" dev eth0
    if ! grep -q "^$(node_ip "$i") $ns " /etc/hosts; then
        echo "$(node_ip "$i") $ns $HOSTS_TAG" >>/etc/hosts
    fi
done

# --- configuration ----------------------------------------------------------------------
ctld_host=$(hostname)
node_lines=""
for i in $(seq 1 "$NODES"); do
    node_lines+="NodeName=$(node_name "$i") NodeAddr=$(node_ip "$i") CPUs=$(nproc) "
    node_lines+="RealMemory=1000 Gres=gpu:$GPUS_PER_NODE State=UNKNOWN"$'\n'
done
cat >"$conf" <<CONF
ClusterName=pyserve-test
SlurmctldHost=$ctld_host($BRIDGE_IP)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$STATE_DIR/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool-%n
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd-%n.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=30
$node_lines
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
echo "CgroupPlugin=cgroup/v1" >"$STATE_DIR/cgroup.conf"
: >"$STATE_DIR/gres.conf"
# slurmd drops GPUs without a device file; plain files stand in for /dev/nvidiaN here.
mkdir -p "$STATE_DIR/dev"
for i in $(seq 1 "$NODES"); do
    name=$(node_name "$i")
    mkdir -p "$STATE_DIR/spool-$name"
    for g in $(seq 0 $((GPUS_PER_NODE - 1))); do
        touch "$STATE_DIR/dev/$name-gpu$g"
        echo "NodeName=$name Name=gpu File=$STATE_DIR/dev/$name-gpu$g" >>"$STATE_DIR/gres.conf"
    done
done
export SLURM_CONF="$conf"

# --- daemons ----------------------------------------------------------------------------
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! alive "$STATE_DIR/munge/munged.pid"; then
    [ -f "$STATE_DIR/munge/munge.key" ] ||
        dd if=/dev/urandom of="$STATE_DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$STATE_DIR/munge/munge.key"
    munged --force --socket="$STATE_DIR/munge/munge.socket" \
        --key-file="$STATE_DIR/munge/munge.key" --pid-file="$STATE_DIR/munge/munged.pid" \
        --log-file="$STATE_DIR/log/munged.log" --seed-file="$STATE_DIR/munge/munge.seed"
fi
if ! alive "$STATE_DIR/slurmctld.pid"; then
    slurmctld -f "$conf"
fi
for i in $(seq 1 "$NODES"); do
    name=$(node_name "$i")
    if ! alive "$STATE_DIR/slurmd-$name.pid"; then
        # nsenter (not `ip netns exec`, which remounts /sys and breaks slurmd's cgroup checks)
        nsenter --net="/var/run/netns/$name" slurmd -f "$conf" -N "$name"
    fi
done

# --- wait until every node is idle --------------------------------------------------------
for _ in $(seq 1 60); do
    idle=$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l)
    [ "$idle" -ge "$NODES" ] && break
    sleep 1
done
if [ "$idle" -lt "$NODES" ]; then
    echo "up.sh: only $idle of $NODES nodes became idle:" >&2
    sinfo -N >&2 || true
    tail -n 20 "$STATE_DIR"/log/*.log >&2 || true
    exit 1
fi
echo "export SLURM_CONF=$conf"
