#!/usr/bin/env bash
# Issue-15 GPU proof: cold vs warm READY through pyserve, one GPU, Qwen3-8B (dummy weights).
#   warm-start.sh RESULTS
# Launch 1 starts with an empty workspace cache (WORKSPACE/cache: vLLM's torch.compile cache,
# Triton's); launch 2 is the same command, which finds the cache. Each launch's record (with its
# startup ledger) is copied to RESULTS; summary.txt compares them. Needs the vLLM bundle
# installed (scripts/gpu/env.sh).
set -euo pipefail
results=${1:?usage: warm-start.sh RESULTS}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
source "$here/env.sh"
prepare_results "$results"
ws=/tmp/ws-warm
rm -rf "$ws" "$HOME/.cache/vllm"  # nothing warm from anywhere else
for run in cold warm; do
    pyserve launch "$DENSE_MODEL" --port 8000 --workspace "$ws" --load-format dummy \
        --max-model-len 4096 --then "pyserve health --host 127.0.0.1 --check completion" \
        2>"$results/launch-$run.log"
    cp "$ws/latest.json" "$results/launch-$run.json"
    pyserve status --workspace "$ws" >"$results/status-$run.txt" || true
done
du -sh "$ws/cache"/* >"$results/cache-size.txt" 2>&1 || true
python3 - "$results" >"$results/summary.txt" <<'PY'
import json, sys
from pathlib import Path
results = Path(sys.argv[1])
runs = {run: json.loads((results / f"launch-{run}.json").read_text()) for run in ("cold", "warm")}
for run, record in runs.items():
    [(host, ledger)] = record["startup"].items()
    print(f"{run}: READY {record['ready_s']:.1f} s, compile cache {ledger['compile_cache']}, "
          f"phases {ledger['phases_s']}")
ratio = runs["warm"]["ready_s"] / runs["cold"]["ready_s"]
print(f"warm / cold READY = {ratio:.2f} (target <= 0.5)")
PY
cat "$results/summary.txt"
