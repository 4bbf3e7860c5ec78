#!/usr/bin/env bash
# Issue-7 runs 2 and 3 on one multi-GPU node (2x or 4x H200): each phase is one
# `pyserve launch ... --then after-ready.sh` with dummy weights, ISL 1024 / OSL 256.
#   multi-gpu.sh PHASE RESULTS
# Phases (the GPU count comes from the node):
#   one        Qwen3-8B on GPU 0 only: the scaling baseline (c 1, 128)
#   dp         Qwen3-8B --dp N (all GPUs)               (c 128, 128*N)
#   tp         Qwen3-8B --tp N                          (c 1, 128)
#   ray        Qwen3-8B --dp N --backend ray            (c 128*N)
#   moe-tp     Qwen3-30B-A3B --tp N --ep                (c 1, 128, 256)
#   moe-dp     Qwen3-30B-A3B --dp N --ep                (c 128, 256)
# POINTS=C:N ... replaces the phase's points; REPEATS and WARMUP go to after-ready.sh.
# Needs scripts/gpu/install.sh to have run on this node. Results are plain files under RESULTS.
set -euo pipefail
phase=${1:?usage: multi-gpu.sh PHASE RESULTS}
results=${2:?usage: multi-gpu.sh PHASE RESULTS}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
gpus=$(nvidia-smi -L | grep -c '^GPU')
dense=$DENSE_MODEL moe=$MOE_MODEL
serve_args=(--load-format dummy --max-model-len 4096)
full=$((128 * gpus))
case "$phase" in
one) model=$dense launch=(--gpus-per-node 1) points="1:8 128:512"
    export CUDA_VISIBLE_DEVICES=0 ;;
dp) model=$dense launch=(--dp "$gpus") points="128:512 $full:$((4 * full))" ;;
tp) model=$dense launch=(--tp "$gpus") points="1:8 128:512" ;;
ray) model=$dense launch=(--dp "$gpus" --backend ray) points="$full:$((4 * full))" ;;
moe-tp) model=$moe launch=(--tp "$gpus" --ep) points="1:8 128:512 $full:$((4 * full))" ;;
moe-dp) model=$moe launch=(--dp "$gpus" --ep) points="128:512 $full:$((4 * full))" ;;
*)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
ws=/tmp/ws-$phase
start=$(date +%s.%N)
POINTS=${POINTS:-$points} pyserve launch "$model" --port 8000 --workspace "$ws" "${launch[@]}" \
    "${serve_args[@]}" --then "bash $here/after-ready.sh $phase $results" \
    2>"$results/launch-$phase.log" && rc=0 || rc=$?
end=$(date +%s.%N)
echo "phase $phase: exit $rc, $(python3 -c "print(f'{$end - $start:.1f}')") s in all" \
    | tee -a "$results/phases.txt"
cp "$ws/latest.json" "$results/launch-$phase.json" 2>/dev/null || true
# Keep the logs of every rank (vLLM's own tracebacks live there, not in pyserve's stderr).
mkdir -p "$results/logs-$phase"
find "$ws" -name '*.log' -size -20M -exec cp {} "$results/logs-$phase/" \; 2>/dev/null || true
exit "$rc"
