# Shared settings of the test cluster (sourced by up.sh and down.sh). Everything the cluster
# creates is named with the pysv- prefix or lives under STATE_DIR, so down.sh removes exactly it.
# shellcheck shell=bash disable=SC2034
NODES=${PYSERVE_CLUSTER_NODES:-2}
GPUS_PER_NODE=${PYSERVE_CLUSTER_GPUS:-1}
SUBNET=${PYSERVE_CLUSTER_SUBNET:-10.77.0}
BRIDGE=pysv-br0
BRIDGE_IP="$SUBNET.1"
STATE_DIR=${PYSERVE_CLUSTER_STATE:-/run/pyserve-cluster}
HOSTS_TAG="# pyserve-test-cluster"
CTLD_PORT=${PYSERVE_CLUSTER_CTLD_PORT:-6917}
SLURMD_PORT=${PYSERVE_CLUSTER_SLURMD_PORT:-6918}

node_name() { echo "pysv-node$1"; }
node_ip() { echo "$SUBNET.$((10 + $1))"; }
