#!/usr/bin/env bash
# Issue-16 GPU proof on one 2-GPU node (2x H200): the planner's predicted ranking against the
# measured one, through `pyserve plan --measure` (dummy weights, ISL 1024 / OSL 256, 128 requests
# in flight), and the automatic plan (`pyserve launch MODEL`, no parallel flags) benchmarked.
#   plan-measure.sh PHASE RESULTS
# Phases, each under 10 minutes (the workspace, and so the compile cache, is shared):
#   dense      Qwen3-8B: the 2 best-ranked candidates (TP1 x DP2, TP2)
#   moe-a      Qwen3-30B-A3B: the 2 best-ranked candidates
#   moe-b      Qwen3-30B-A3B: the next 2 (--resume keeps the first two)
#   auto       both models launched with no parallel flags and benchmarked at the same point
# Needs scripts/gpu/install.sh to have run on this node. Results are plain files under RESULTS.
set -euo pipefail
phase=${1:?usage: plan-measure.sh PHASE RESULTS}
results=${2:?usage: plan-measure.sh PHASE RESULTS}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
ws=/tmp/ws-plan
serve_args=(--load-format dummy --max-model-len 4096)
point=(--isl 1024 --osl 256 --concurrency 128 --num-prompts 256)
measure() { # NAME MODEL TOP [--resume]
    local name=$1 model=$2 top=$3
    shift 3
    pyserve plan "$model" --format json "${point[@]}" "${serve_args[@]}" \
        >"$results/predicted-$name.json"
    pyserve plan "$model" --measure --top "$top" "$@" --workspace "$ws" \
        --out "$results/measured-$name" "${point[@]}" "${serve_args[@]}" \
        >"$results/plan-$name.txt" 2>"$results/plan-$name.log"
}
case "$phase" in
dense) measure dense "$DENSE_MODEL" 2 ;;
moe-a) measure moe "$MOE_MODEL" 2 ;;
moe-b) measure moe "$MOE_MODEL" 4 --resume ;;
auto)
    for name in dense moe; do
        model=$DENSE_MODEL
        [ "$name" = moe ] && model=$MOE_MODEL
        pyserve launch "$model" --dry-run "${serve_args[@]}" >"$results/auto-$name-plan.txt"
        pyserve launch "$model" --port 8000 --workspace "$ws" "${serve_args[@]}" \
            --then "pyserve bench --host 127.0.0.1 ${point[*]} --out $results/auto-$name" \
            2>"$results/auto-$name.log"
    done
    ;;
*)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
