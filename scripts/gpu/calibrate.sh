#!/usr/bin/env bash
# One GPU, TP 1: the performance model's estimate against measurement at several loads, to set
# its MoE factor on data it was not fitted to before (the 2x H200 planner run stays the check).
#   calibrate.sh dense|moe RESULTS
# For each concurrency C in LOADS (default "32 64 128 256"; ISL 1024 / OSL 256, 2 x C prompts, at
# least 128):
# RESULTS/predicted-NAME-cC.json (`pyserve plan --format json`) and RESULTS/NAME-cC/ (`pyserve
# bench` against one `pyserve launch` of the model). Under 10 minutes per phase on an H200.
# Needs scripts/gpu/install.sh to have run on this node. Results are plain files under RESULTS.
set -euo pipefail
phase=${1:?usage: calibrate.sh dense|moe RESULTS}
results=${2:?usage: calibrate.sh dense|moe RESULTS}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
case "$phase" in
dense) model=$DENSE_MODEL ;;
moe) model=$MOE_MODEL ;;
*)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
read -r -a loads <<<"${LOADS:-32 64 128 256}"
serve_args=(--load-format dummy --max-model-len 4096)
for c in "${loads[@]}"; do
    pyserve plan "$model" --format json --isl 1024 --osl 256 --concurrency "$c" \
        "${serve_args[@]}" >"$results/predicted-$phase-c$c.json"
done
# The benchmarks, run once the server is READY (pyserve launch --then).
bench_all=$(mktemp /tmp/calibrate-bench-XXXXXX.sh)
{
    echo "set -e"
    for c in "${loads[@]}"; do
        prompts=$((2 * c > 128 ? 2 * c : 128))
        echo "pyserve bench --host 127.0.0.1 --isl 1024 --osl 256 --concurrency $c" \
            "--num-prompts $prompts --out $results/$phase-c$c"
    done
} >"$bench_all"
pyserve launch "$model" --port 8000 --workspace "/tmp/ws-cal-$phase" "${serve_args[@]}" \
    --then "bash $bench_all" 2>"$results/launch-$phase.log"
cp "/tmp/ws-cal-$phase/latest.json" "$results/launch-$phase.json"
