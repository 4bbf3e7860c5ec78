"""The Python API on a GPU node: serve Qwen3-8B (dummy weights), health, one bench point, stop.
    python3 scripts/gpu/api-check.py RESULTS      (after `source scripts/gpu/env.sh`)
Writes RESULTS/api/{check.json,bench/...}; exits 1 if a check or the point fails."""

import json
import sys
import time
from pathlib import Path

from pyservecli import api
from pyservecli.models.dummy import create_model_dir

results = Path(sys.argv[1]) / "api"
# The same config-only model as the shell scripts' (env.sh: DENSE_MODEL); made here too, so
# this check also runs on its own.
model = create_model_dir("qwen3-8b", Path("/tmp/models/qwen3-8b"))
started = time.monotonic()
with api.serve(str(model), gpus_per_node=1, port=8100,
               vllm_args=["--load-format", "dummy", "--max-model-len", "4096"],
               workspace="/tmp/ws-api", log_path=results / "launch.log") as server:
    ready = time.monotonic() - started
    checks = api.health(server.base_url)
    points = api.bench(server.base_url, isl=1024, osl=256, concurrency=64, num_prompts=256,
                       out=results / "bench", workspace="/tmp/ws-api")
stopped = time.monotonic() - started
summary = {
    "ready_s_seen_by_caller": round(ready, 1),
    "ready_s_in_record": server.record()["ready_s"],
    "checks_passed": sum(c.passed for c in checks), "checks": len(checks),
    "failed_checks": [c.name for c in checks if not c.passed],
    "point_status": [p.status for p in points],
    "output_throughput": [p.result.get("output_throughput") for p in points],
    "stopped_after_s": round(stopped, 1),
}
results.mkdir(parents=True, exist_ok=True)
(results / "check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
sys.exit(0 if not summary["failed_checks"] and all(p.valid for p in points) else 1)
