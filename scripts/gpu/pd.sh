#!/usr/bin/env bash
# Issue-17 GPU proof on one 2-GPU node (2x H200): Qwen3-8B (dummy weights) served 1P1D
# (`--prefill 1 --decode 1`, NIXL between the GPUs, vllm-router in P/D mode) and as 2 replicas
# behind the router (`--replicas 2`) and as one server with `--dp 2`, each benchmarked at
# ISL / OSL 256 with 128 in flight (ISL 1024 by default; 8192 is the long-prefill point).
#   pd.sh PHASE RESULTS [ISL]      PHASE: pd | replicas | dp
# Needs the vLLM bundle and the nixl, nixl-cu13, vllm-router and orjson wheels in
# $PYSERVE_GPU_SITE (pip install --no-deps --target).
set -euo pipefail
phase=${1:?usage: pd.sh PHASE RESULTS [ISL]}
results=${2:?usage: pd.sh PHASE RESULTS [ISL]}
isl=${3:-1024}
osl=256
# Room for the prompt, the output and the chat template; at least the 4096 of the first run.
max_len=$((isl + osl + 512 > 4096 ? isl + osl + 512 : 4096))
# The 1024 run kept its files without a suffix; later ISLs are named after theirs.
tag=$phase
[ "$isl" = 1024 ] || tag=$phase-isl$isl
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
case "$phase" in
pd) shape=(--prefill 1 --decode 1) ;;
replicas) shape=(--replicas 2) ;;
dp) shape=(--dp 2) ;;
*)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
ws=/tmp/ws-pd
pyserve launch "$DENSE_MODEL" "${shape[@]}" --dry-run --load-format dummy \
    --max-model-len "$max_len" >"$results/plan-$tag.txt"
pyserve launch "$DENSE_MODEL" "${shape[@]}" --port 8000 --workspace "$ws" --load-format dummy \
    --max-model-len "$max_len" --then "pyserve bench --host 127.0.0.1 --port 8000 --isl $isl \
--osl $osl --concurrency 128 --num-prompts 256 --out $results/bench-$tag" \
    2>"$results/launch-$tag.log" && rc=0 || rc=$?
echo "phase $tag: exit $rc" | tee -a "$results/phases.txt"
cp "$ws/latest.json" "$results/record-$tag.json" 2>/dev/null || true
mkdir -p "$results/logs-$tag"
find "$ws/logs" -name '*.log' -size -20M -exec cp {} "$results/logs-$tag/" \; 2>/dev/null || true
exit "$rc"
