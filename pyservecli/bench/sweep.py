"""``pyserve sweep``: many benchmark points against one server, or against several servers.

Bench-parameter sweeps (rate, concurrency, input, output) reuse one running server: given by
``--host`` or started once. Serve-parameter sweeps give several ``--serve`` lines; each is
launched (``api.serve``: any number of nodes, inside the same allocation), benchmarked, and
stopped before the next. Result paths depend only on the server label, suite and point, so
``--resume`` skips what is done. The loop itself is ``api.sweep``.
"""

from __future__ import annotations

import hashlib
import re

from pyservecli.bench.suites import BenchPoint, _random

SWEEPS: dict[str, tuple[BenchPoint, ...]] = {
    "rate": tuple(_random("rate", 512, 256, r) for r in (1, 2, 4, 8, 16, 32, "inf")),
    "concurrency": tuple(_random("concurrency", 512, 256, "inf", conc=c)
                         for c in (1, 2, 4, 8, 16, 32, 64, 128)),
    "input": tuple(_random("input", i, 128, "inf")
                   for i in (128, 256, 512, 1024, 2048, 4096, 8192, 16384)),
    "output": tuple(_random("output", 512, o, "inf") for o in (64, 128, 256, 512, 1024, 2048)),
}


def serve_label(serve_args: list[str]) -> str:
    """A stable directory name for one server configuration: the model and its flags
    ("Qwen_Qwen3-8B_max-model-len=4096"); a long one is cut and given a hash of the whole, so
    two configurations never share a folder."""
    text = " ".join(serve_args) or "default"
    label = re.sub(r"[^A-Za-z0-9.=_-]+", "_", text.replace("--", "")).strip("_.")
    label = re.sub(r"\.{2,}", "_", label)
    if len(label) > 120:
        digest = hashlib.sha256("\0".join(serve_args).encode()).hexdigest()[:10]
        label = f"{label[:109]}-{digest}"
    return label or "default"


def overhead(wall_s: float, results) -> dict:
    """How much of the sweep's wall time was not spent inside benchmark runs (every point that
    ran counts, valid or not: its time was spent either way)."""
    bench_s = sum(r.result.get("duration", 0) or 0 for r in results
                  if r.status in ("ok", "invalid"))
    return {"wall_s": round(wall_s, 2), "bench_s": round(bench_s, 2),
            "overhead_pct": round(100 * (wall_s - bench_s) / bench_s, 2) if bench_s else None}
