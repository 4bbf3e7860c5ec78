#!/usr/bin/env bash
# Rebuild pyserve's seed performance store (pyservecli/bench/perf-seed.csv) from the GPU results
# in docs/results. Only fresh-prompt serving results and offline runs go in: the 2026-11-22
# 2x H200 points at 256 in flight and the calibration's "cached" runs resent prompts the server
# had cached (docs/benchmarks.rst), so they would overstate throughput.
#   scripts/perf-seed.sh            (run from the repository root)
set -euo pipefail
db=$(mktemp -d)/seed.db
export PYSERVE_PERF_DB=$db
for dir in \
    docs/results/2026-11-22-2xh200-offline \
    docs/results/2026-11-22-h100-offline \
    docs/results/2026-11-23-2xh200-planner \
    docs/results/2026-11-23-2xh200-pd/bench-replicas \
    docs/results/2026-11-23-h200-calibrate/fresh \
    docs/results/2026-11-30-2xh200-out-of-sample; do
    python3 -m pyservecli perf import "$dir" 2>/dev/null
done
python3 -m pyservecli perf export --out pyservecli/bench/perf-seed.csv
rm -rf "$(dirname "$db")"
