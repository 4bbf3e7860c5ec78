#!/usr/bin/env bash
# What docs/captures/2026-11-30-cpu-fleet-launch.txt ran, from the repository root after
# `make setup`, inside `tmux new-session -x 160 -y 60`; the screen read with
# `tmux capture-pane -p -J -S -200`.
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p /tmp/cap/tmp
export VLLM_CPU_KVCACHE_SPACE=1 TMPDIR=/tmp/cap/tmp VLLM_CACHE_ROOT=/tmp/cap/cache HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
pyserve model create qwen3-tiny /tmp/cap/qwen3-tiny >/dev/null
cd /tmp/cap
pyserve launch ./qwen3-tiny --replicas 2 --port 18300 --workspace /tmp/cap/ws --load-format dummy \
    --enforce-eager --dtype bfloat16 --max-model-len 2048 \
    --then "pyserve health --host 127.0.0.1 --port 18300 --check completion --check chat"
