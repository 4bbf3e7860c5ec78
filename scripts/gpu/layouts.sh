#!/usr/bin/env bash
# Issue-24 GPU check of the layer-aware planner on one GPU: a model whose layers are not all full
# attention (gemma-3-27b: five 1,024-token sliding-window layers to one global), served with
# dummy weights, measured at a short and a long prompt so that the windows matter in the second:
#   layouts.sh MODEL RESULTS
# POINTS lists ISL:CONCURRENCY:NUM_PROMPTS (default "1024:128:384 8192:32:96"); REPEATS (default
# 2) runs each on fresh prompts; one warm-up point first, kept apart under warmup/. Every point
# goes to RESULTS/perf.db. Needs scripts/gpu/install.sh to have run on this node.
set -euo pipefail
model=${1:?usage: layouts.sh MODEL RESULTS}
results=${2:?usage: layouts.sh MODEL RESULTS}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
dir=/tmp/models/$model
pyserve model create "$model" "$dir" >/dev/null
export PYSERVE_PERF_DB=$results/perf.db
points=${POINTS:-1024:128:384 8192:32:96}
for point in $points; do
    IFS=: read -r isl concurrency _ <<<"$point"
    pyserve plan "$dir" --format json --isl "$isl" --osl 256 --concurrency "$concurrency" \
        --max-model-len 10240 >"$results/predicted-$model-$isl.json" || true
done
cat >"$results/after-ready-$model.sh" <<EOF
#!/usr/bin/env bash
set -uo pipefail
host=\${PYSERVE_BASE_URL#http://}
port=\${host##*:}
host=\${host%:*}
status=0
pyserve bench --host "\$host" --port "\$port" --isl 1024 --osl 256 --concurrency 64 \\
    --num-prompts 64 --out "$results/$model/warmup" >/dev/null || status=1
for point in $points; do
    IFS=: read -r isl concurrency prompts <<<"\$point"
    pyserve bench --host "\$host" --port "\$port" --isl "\$isl" --osl 256 \\
        --concurrency "\$concurrency" --num-prompts "\$prompts" --repeats "${REPEATS:-2}" \\
        --out "$results/$model/isl\$isl-c\$concurrency" || status=1
done
exit "\$status"
EOF
timeout -s INT -k 60 "${PHASE_LIMIT_S:-540}" pyserve launch "$dir" --port 8000 \
    --workspace /tmp/ws-layouts --load-format dummy --max-model-len 10240 \
    --then "bash $results/after-ready-$model.sh" \
    >"$results/launch-$model.txt" 2>"$results/launch-$model.log" || echo "launch rc $?"
cp /tmp/ws-layouts/latest.json "$results/launch-$model.json" 2>/dev/null || true
