#!/usr/bin/env bash
# On the GPU node: install the offline vLLM bundle (parts collected in PARTS) and the carried
# wheels, idempotently.   scripts/gpu/install.sh PARTS_DIR WHEEL_DIR
set -euo pipefail
parts=${1:?usage: install.sh PARTS_DIR WHEEL_DIR}
wheels=${2:?usage: install.sh PARTS_DIR WHEEL_DIR}
site=${PYSERVE_GPU_SITE:-/tmp/site}
if ! PYTHONPATH="$site" python3 -c "import vllm" 2>/dev/null; then
    bash "$parts/install-bundle.sh" "$parts" "$site"
fi
shopt -s nullglob
carried=("$wheels"/*.whl)
if [ ${#carried[@]} -gt 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "${carried[@]}"
fi
PYTHONPATH="$site" python3 -c "import vllm, click, rich; print('vllm', vllm.__version__)"
