#!/usr/bin/env bash
# `pyserve offline` on one GPU node (vLLM's engine under torchrun, no API server), dummy weights,
# random prompts of ISL 1024 / OSL 256, every request submitted at once.
#   offline.sh PHASE RESULTS
# Phases (the GPU count comes from the node):
#   one        Qwen3-8B on GPU 0 only                 (512 prompts)
#   dp         Qwen3-8B --dp N (all GPUs)             (512 x N prompts)
#   tp         Qwen3-8B --tp N                        (512 prompts)
#   moe-tp     Qwen3-30B-A3B --tp N --ep              (512 prompts)
#   profile    Qwen3-8B on GPU 0, 32 prompts, a VizTracer trace per rank, then summarized
#   torch-profile  the same with vLLM's torch profiler (a trace per rank), then summarized
# Needs scripts/gpu/install.sh to have run on this node. Results are plain files under RESULTS.
set -euo pipefail
phase=${1:?usage: offline.sh PHASE RESULTS}
results=${2:?usage: offline.sh PHASE RESULTS}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
gpus=$(nvidia-smi -L | grep -c '^GPU')
dense=$DENSE_MODEL moe=$MOE_MODEL
engine_args=(--load-format dummy --max-model-len 4096)
extra=()
case "$phase" in
one) model=$dense plan=(--gpus-per-node 1) prompts=512
    export CUDA_VISIBLE_DEVICES=0 ;;
dp) model=$dense plan=(--dp "$gpus") prompts=$((512 * gpus)) ;;
tp) model=$dense plan=(--tp "$gpus") prompts=512 ;;
moe-tp) model=$moe plan=(--tp "$gpus" --ep) prompts=512 ;;
profile) model=$dense plan=(--gpus-per-node 1) prompts=32
    extra=(--viztracer "$results/offline-profile/viztracer.json")
    export CUDA_VISIBLE_DEVICES=0 ;;
torch-profile) model=$dense plan=(--gpus-per-node 1) prompts=32
    extra=(--torch-profile "$results/offline-torch-profile/traces")
    export CUDA_VISIBLE_DEVICES=0 ;;
*)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
out=$results/offline-$phase
start=$(date +%s.%N)
pyserve offline "$model" "${plan[@]}" --isl 1024 --osl 256 \
    --num-prompts "$prompts" --out "$out" --workspace "/tmp/ws-offline-$phase" "${extra[@]}" \
    "${engine_args[@]}" >"$out.txt" 2>"$out.log" && rc=0 || rc=$?
end=$(date +%s.%N)
echo "offline $phase: exit $rc, $(python3 -c "print(f'{$end - $start:.1f}')") s in all" \
    | tee -a "$results/phases.txt"
if [[ $phase == *profile ]] && [ "$rc" = 0 ]; then
    pyserve trace summarize "$out" >"$out/summary.txt" 2>&1 || rc=$?
fi
exit "$rc"
