#!/usr/bin/env bash
# Run by `pyserve launch --then` once the server is READY: health, then 1024/256 points, then
# (with PROFILE=1) a short profiled run.
#   after-ready.sh LABEL RESULTS_DIR
# POINTS lists the points as CONCURRENCY:NUM_PROMPTS (default "1:20 128:512"); REPEATS=N runs
# each point N times on fresh prompts (median and spread, #29); WARMUP=C:N runs one point first,
# kept apart under warmup/, so that no measured point pays for first-request compilation.
set -uo pipefail
label=${1:?usage: after-ready.sh LABEL RESULTS_DIR}
results=${2:?usage: after-ready.sh LABEL RESULTS_DIR}
host=${PYSERVE_BASE_URL#http://}
port=${host##*:}
host=${host%:*}
mkdir -p "$results/$label"
status=0
pyserve health --host "$host" --port "$port" >"$results/$label/health.txt" 2>&1 || status=1
if [ -n "${WARMUP:-}" ]; then
    pyserve bench --host "$host" --port "$port" --isl 1024 --osl 256 \
        --concurrency "${WARMUP%%:*}" --num-prompts "${WARMUP##*:}" \
        --out "$results/$label/warmup" >/dev/null || status=1
fi
for point in ${POINTS:-1:${C1_PROMPTS:-20} 128:${C128_PROMPTS:-512}}; do
    concurrency=${point%%:*}
    prompts=${point##*:}
    pyserve bench --host "$host" --port "$port" --isl 1024 --osl 256 \
        --concurrency "$concurrency" --num-prompts "$prompts" --repeats "${REPEATS:-1}" \
        --out "$results/$label/c$concurrency" || status=1
done
if [ "${PROFILE:-0}" = 1 ]; then
    pyserve bench --host "$host" --port "$port" --isl 1024 --osl 256 --concurrency 8 \
        --num-prompts 8 --profile --out "$results/$label/profile" || status=1
fi
exit "$status"
