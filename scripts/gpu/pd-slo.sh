#!/usr/bin/env bash
# Issue-24 GPU proof on one 2-GPU node (2x H200): prefill/decode against aggregated serving by
# SLO. Qwen3-8B (dummy weights), OSL 256, TTFT <= 2 s and TPOT <= 20 ms at p99: the goodput (the
# most output tok/s at a load where both SLOs hold) of `--dp 2` and `--prefill 1 --decode 1`,
# found by `pyserve plan --measure --ttft --tpot` (bracket, then bisect), and of `--replicas 2`
# measured at the loads the search tried for `--dp 2`.
#   pd-slo.sh search ISL RESULTS            plan --measure of tp1-dp2 and 1p-tp1-1d-tp1
#   pd-slo.sh replicas ISL RESULTS LOADS    --replicas 2, one point per load ("4 8 16")
#   pd-slo.sh repeats ISL RESULTS LOADS NAME LAUNCH-FLAGS...
#                                           each load 3 times on fresh prompts (bench --repeats)
#                                           on one launch, e.g. repeats 1024 R "64 76" pd \
#                                           --prefill 1 --decode 1
# --resume keeps what an earlier call measured, so a phase cut by the device's 10-minute limit
# goes on where it stopped. Needs scripts/gpu/install.sh (with the nixl, nixl-cu13, vllm-router
# and orjson wheels) to have run on this node.
set -euo pipefail
usage="usage: pd-slo.sh search|replicas|repeats ISL RESULTS [LOADS [NAME LAUNCH-FLAGS...]]"
phase=${1:?$usage}
isl=${2:?$usage}
results=${3:?$usage}
osl=256
# Room for the prompt, the output and the chat template.
max_len=$((isl + osl + 512 > 4096 ? isl + osl + 512 : 4096))
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
ws=/tmp/ws-pd-slo
serve_args=(--load-format dummy --max-model-len "$max_len")
slo=(--ttft 2000 --tpot 20)
# The search starts at the goal's load: START (default 16) saves the points far above the edge.
start=(--concurrency "${START:-16}")
# bench_chain OUT_PREFIX MIN_PROMPTS [BENCH_ARGS...]: one `pyserve bench` per load of $loads
# (4 prompts per slot, at least MIN_PROMPTS; results in OUT_PREFIX<load>), joined by && for
# `bash -c`: --then runs one command without a shell, so the chain needs its own.
bench_chain() {
    local prefix=$1 min=$2 chain="" load
    shift 2
    for load in $loads; do
        chain+="pyserve bench --host 127.0.0.1 --port 8000 --isl $isl --osl $osl"
        chain+=" --concurrency $load --num-prompts $((4 * load > min ? 4 * load : min))"
        chain+="${*:+ $*} --out $prefix$load && "
    done
    echo "${chain}true"
}
case "$phase" in
search)
    pyserve plan "$DENSE_MODEL" --format json --isl "$isl" --osl "$osl" "${start[@]}" "${slo[@]}" \
        "${serve_args[@]}" >"$results/predicted-isl$isl.json"
    # Stops itself (SIGINT: pyserve stops its server, keeps what was measured) before the
    # device's per-call limit; the next call with the same arguments resumes.
    timeout -s INT -k 60 "${PHASE_LIMIT_S:-530}" pyserve plan "$DENSE_MODEL" --measure \
        --only tp1-dp2,1p-tp1-1d-tp1 --resume --workspace "$ws" --out "$results/measured-isl$isl" \
        --isl "$isl" --osl "$osl" "${start[@]}" "${slo[@]}" "${serve_args[@]}" \
        >>"$results/plan-isl$isl.txt" 2>>"$results/plan-isl$isl.log" || echo "plan --measure rc $?"
    ;;
replicas)
    loads=${4:?$usage}
    out=$results/replicas-isl$isl
    # The same points as plan --measure: random prompts, every request at once, 4 per slot.
    then_cmd=$(bench_chain "$out/c" 100)
    timeout -s INT -k 60 "${PHASE_LIMIT_S:-530}" pyserve launch "$DENSE_MODEL" --replicas 2 \
        --port 8000 --workspace "$ws" "${serve_args[@]}" --then "bash -c '$then_cmd'" \
        2>"$results/launch-replicas-isl$isl.log" || echo "replicas rc $?"
    ;;
repeats)
    loads=${4:?$usage}
    name=${5:?$usage}
    shift 5
    out=$results/repeats-isl$isl
    mkdir -p "$out"
    then_cmd=$(bench_chain "$out/$name-c" 0 --repeats 3)
    timeout -s INT -k 30 "${PHASE_LIMIT_S:-530}" pyserve launch "$DENSE_MODEL" "$@" --port 8000 \
        --workspace /tmp/ws-repeats "${serve_args[@]}" --then "bash -c '$then_cmd'" \
        >"$out/$name.log" 2>&1 || echo "$name rc $?"
    ;;
*)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
cp "$ws/perf.db" "$results/perf.db" 2>/dev/null || true
