#!/usr/bin/env bash
# Issue-24 GPU proof on one 2-GPU node (2x H200): model shapes the estimator was not fitted on,
# every 2-GPU topology measured through `pyserve plan --measure` (dummy weights, ISL 1024 /
# OSL 256, 128 requests in flight, fresh prompts per launch), so that any later ranking can be
# scored against the measured best.
#   out-of-sample.sh MODEL TOP RESULTS
# MODEL: a built-in shape (mixtral-8x7b, deepseek-v2-lite, qwen3-14b, qwen3-32b, ...); TOP: how
# many of the ranked candidates to launch (4: every non-PP shape of a MoE model on 2 GPUs).
# --resume keeps what an earlier call measured, so a phase cut by the device's 10-minute limit
# goes on where it stopped. Needs scripts/gpu/install.sh to have run on this node.
# Environment: ONLY=tp2-dp1,tp1-dp2 measures those candidates instead of the TOP ranked;
# REPEATS=3 runs each point three times on fresh prompts (median and spread; #29);
# NUM_PROMPTS (default 256) requests per point.
set -euo pipefail
model=${1:?usage: out-of-sample.sh MODEL TOP RESULTS}
top=${2:?usage: out-of-sample.sh MODEL TOP RESULTS}
results=${3:?usage: out-of-sample.sh MODEL TOP RESULTS}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
dir=/tmp/models/$model
pyserve model create "$model" "$dir" >/dev/null
point=(--isl 1024 --osl 256 --concurrency 128 --num-prompts "${NUM_PROMPTS:-256}")
chosen=(--top "$top")
if [ -n "${ONLY:-}" ]; then
    chosen=(--only "$ONLY")
fi
serve_args=(--load-format dummy --max-model-len 4096)
pyserve plan "$dir" --format json "${point[@]}" "${serve_args[@]}" >"$results/predicted-$model.json"
# A phase stops itself (SIGINT: pyserve stops its server and keeps what was measured) before the
# device's per-call limit; the next call with the same arguments resumes.
timeout -s INT -k 60 "${PHASE_LIMIT_S:-520}" pyserve plan "$dir" --measure "${chosen[@]}" --repeats "${REPEATS:-1}" --resume --workspace /tmp/ws-plan \
    --out "$results/measured-$model" "${point[@]}" "${serve_args[@]}" \
    >>"$results/plan-$model.txt" 2>>"$results/plan-$model.log" || echo "plan --measure rc $?"
