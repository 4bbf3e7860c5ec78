#!/usr/bin/env bash
# Run by `pyserve launch --then` once the server is READY: health, then the 1024/256 points at
# concurrency 1 and 128, then (with PROFILE=1) a short profiled run.
#   after-ready.sh LABEL RESULTS_DIR
set -uo pipefail
label=${1:?usage: after-ready.sh LABEL RESULTS_DIR}
results=${2:?usage: after-ready.sh LABEL RESULTS_DIR}
host=${PYSERVE_BASE_URL#http://}
port=${host##*:}
host=${host%:*}
mkdir -p "$results/$label"
status=0
pyserve health --host "$host" --port "$port" >"$results/$label/health.txt" 2>&1 || status=1
pyserve bench --host "$host" --port "$port" --isl 1024 --osl 256 --concurrency 1 \
    --num-prompts "${C1_PROMPTS:-20}" --out "$results/$label/c1" || status=1
pyserve bench --host "$host" --port "$port" --isl 1024 --osl 256 --concurrency 128 \
    --num-prompts "${C128_PROMPTS:-512}" --out "$results/$label/c128" || status=1
if [ "${PROFILE:-0}" = 1 ]; then
    pyserve bench --host "$host" --port "$port" --isl 1024 --osl 256 --concurrency 8 \
        --num-prompts 8 --profile --out "$results/$label/profile" || status=1
fi
exit "$status"
