#!/usr/bin/env bash
# Issue-17 GPU proof on one 2-GPU node (2x H200): Qwen3-8B (dummy weights) served 1P1D
# (`--prefill 1 --decode 1`, NIXL between the GPUs, vllm-router in P/D mode) and as 2 replicas
# behind the router (`--replicas 2`), each benchmarked at ISL 1024 / OSL 256, 128 in flight
# (the same point as plan-measure.sh, whose TP 1 x DP 2 run is the --dp 2 figure).
#   pd.sh PHASE RESULTS      PHASE: pd | replicas
# Needs the vLLM bundle and the nixl, nixl-cu13, vllm-router and orjson wheels in
# $PYSERVE_GPU_SITE (pip install --no-deps --target).
set -euo pipefail
phase=${1:?usage: pd.sh PHASE RESULTS}
results=${2:?usage: pd.sh PHASE RESULTS}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
case "$phase" in
pd) shape=(--prefill 1 --decode 1) ;;
replicas) shape=(--replicas 2) ;;
*)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
ws=/tmp/ws-pd
pyserve launch "$DENSE_MODEL" "${shape[@]}" --dry-run --load-format dummy \
    --max-model-len 4096 >"$results/plan-$phase.txt"
pyserve launch "$DENSE_MODEL" "${shape[@]}" --port 8000 --workspace "$ws" --load-format dummy \
    --max-model-len 4096 --then "pyserve bench --host 127.0.0.1 --port 8000 --isl 1024 \
--osl 256 --concurrency 128 --num-prompts 256 --out $results/bench-$phase" \
    2>"$results/launch-$phase.log" && rc=0 || rc=$?
echo "phase $phase: exit $rc" | tee -a "$results/phases.txt"
cp "$ws/latest.json" "$results/record-$phase.json" 2>/dev/null || true
mkdir -p "$results/logs-$phase"
find "$ws/logs" -name '*.log' -size -20M -exec cp {} "$results/logs-$phase/" \; 2>/dev/null || true
exit "$rc"
