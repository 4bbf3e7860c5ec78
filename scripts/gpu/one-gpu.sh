#!/usr/bin/env bash
# Issue-7 run 1 on one GPU: Qwen3-8B (config-only, dummy weights) through pyserve and plain vLLM.
#   one-gpu.sh pyserve RESULTS   pyserve launch -> READY -> health -> bench c1/c128 -> profile
#   one-gpu.sh plain RESULTS     plain `vllm serve`, same flags, same benchmarks
#   one-gpu.sh fp8 RESULTS       pyserve launch --quantization fp8, same benchmarks
# Needs scripts/gpu/install.sh to have run on this node. Results are plain files under RESULTS.
set -euo pipefail
phase=${1:?usage: one-gpu.sh pyserve|plain|fp8 RESULTS}
results=${2:?usage: one-gpu.sh pyserve|plain|fp8 RESULTS}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
model=$DENSE_MODEL
serve_args=(--load-format dummy --max-model-len 4096
    --profiler-config "{\"profiler\":\"torch\",\"torch_profiler_dir\":\"$results/traces\"}")

case "$phase" in
pyserve)
    PROFILE=1 pyserve launch "$model" --port 8000 --workspace /tmp/ws-pyserve "${serve_args[@]}" \
        --then "bash $here/after-ready.sh pyserve $results" 2>"$results/launch-pyserve.log"
    cp /tmp/ws-pyserve/latest.json "$results/launch-pyserve.json"
    ;;
fp8)
    pyserve launch "$model" --port 8000 --workspace /tmp/ws-fp8 "${serve_args[@]}" \
        --quantization fp8 --then "bash $here/after-ready.sh fp8 $results" \
        2>"$results/launch-fp8.log"
    cp /tmp/ws-fp8/latest.json "$results/launch-fp8.json"
    ;;
plain)
    setsid vllm serve "$model" --port 8000 "${serve_args[@]}" >"$results/plain-vllm.log" 2>&1 &
    server=$!
    # Same READY rule as pyserve (health, model listed, 1-token completion), timed from start.
    python3 - "$model" "$server" >"$results/plain-start.txt" <<'PY'
import os, sys, time
from pyservecli.run.readiness import probe_ready
start = time.monotonic()
while True:
    ok, why = probe_ready("http://127.0.0.1:8000", sys.argv[1], timeout=2.0)
    if ok:
        print(f"plain vllm serve: READY {time.monotonic() - start:.1f} s after start")
        break
    try:
        os.kill(int(sys.argv[2]), 0)
    except ProcessLookupError:
        sys.exit("plain vllm serve died before READY")
    time.sleep(0.25)
PY
    PYSERVE_BASE_URL=http://127.0.0.1:8000 bash "$here/after-ready.sh" plain "$results" || true
    kill -TERM -- "-$server" 2>/dev/null || kill -TERM "$server"
    wait "$server" || true
    ;;
*)
    echo "unknown phase $phase" >&2
    exit 2
    ;;
esac
