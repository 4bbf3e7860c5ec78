#!/usr/bin/env bash
# The embedded default job: serve a config-only tiny Qwen3 (random weights, real engine) on this
# machine's CPU with `pyserve launch`, run `pyserve health` against it once READY, then stop.
# Called by `make demo`; the variables below come from the Makefile.
set -euo pipefail

PYSERVE=${PYSERVE:-pyserve}
WORKSPACE=${WORKSPACE:-pyserve-work}
DEMO_MODEL=${DEMO_MODEL:-qwen3-tiny}
DEMO_PORT=${DEMO_PORT:-8000}

model_dir="$WORKSPACE/models/$DEMO_MODEL"
"$PYSERVE" model create "$DEMO_MODEL" "$model_dir" >/dev/null

# CPU engine settings: 1 GiB of KV cache, no compilation (start-up time matters more here).
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-$PWD/$WORKSPACE/cache}
export HF_HUB_OFFLINE=1

exec "$PYSERVE" launch "$model_dir" --workspace "$WORKSPACE" --port "$DEMO_PORT" \
    --load-format dummy --enforce-eager --dtype bfloat16 --max-model-len 2048 \
    --then "$PYSERVE health --host 127.0.0.1 --port $DEMO_PORT"
