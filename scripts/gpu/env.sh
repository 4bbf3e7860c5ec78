# Source on a GPU node that received the offline vLLM bundle (see README.rst, "GPU runs"):
#   source scripts/gpu/env.sh
# Makes the bundle's vLLM, the carried wheels and this checkout's pyserve importable, puts a
# `vllm` command on PATH, and sets what every GPU run here needs.
# shellcheck shell=bash
SITE=${PYSERVE_GPU_SITE:-/tmp/site}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PYTHONPATH="$repo:$SITE${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$SITE/bin"
# The bundle is installed with pip --target: no console scripts. pyserve calls `vllm`.
printf '#!/bin/sh\nexec python3 -m vllm.entrypoints.cli.main "$@"\n' >"$SITE/bin/vllm"
printf '#!/bin/sh\nexec python3 -m pyservecli "$@"\n' >"$SITE/bin/pyserve"
printf '#!/bin/sh\nexec python3 -m ray.scripts.scripts "$@"\n' >"$SITE/bin/ray"
# vllm-router (pyserve --replicas / --prefill): its console script, from the carried wheel.
printf '#!/bin/sh\nexec python3 -c "from vllm_router.launch_router import main; main()" "$@"\n' \
    >"$SITE/bin/vllm-router"
chmod +x "$SITE/bin/vllm" "$SITE/bin/pyserve" "$SITE/bin/ray" "$SITE/bin/vllm-router"
export PATH="$SITE/bin:$PATH"
# FlashInfer is not in the bundle.
export VLLM_USE_FLASHINFER_SAMPLER=0
# Never use NVLink multicast on shared hosts (multi-GPU kinds): it can take the GPUs down.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1

# The config-only models every script serves (real shapes, generated tokenizer).
DENSE_MODEL=/tmp/models/qwen3-8b
MOE_MODEL=/tmp/models/qwen3-30b-a3b

# prepare_results DIR: create DIR, note the GPUs and versions measured there, write the models.
prepare_results() {
    mkdir -p "$1"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$1/gpu.csv"
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" \
        >"$1/versions.txt"
    pyserve model create qwen3-8b "$DENSE_MODEL" >/dev/null
    pyserve model create qwen3-30b-a3b "$MOE_MODEL" >/dev/null
}
