"""How long `pyserve plan` takes with a large performance store: fills a store with N points
(default 10,000: 40 model shapes of three families, two GPU kinds, 1-16 GPUs, every topology,
six loads) and times `api.plan_topologies` for a shape that has points and one that has none.

    python scripts/perf_store_scale.py [--rows 10000]

Target (#24): under 1 s with 10,000 rows. A benchmark, not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pyservecli import api
from pyservecli.bench.perfstore import PerfPoint, PerfStore
from pyservecli.models.dummy import builtin_config
from pyservecli.plan.perfkey import model_shape


def fill(store: PerfStore, rows: int) -> dict:
    bases = [builtin_config(n) for n in ("qwen3-8b", "qwen3-30b-a3b", "deepseek-v2-lite")]
    made = 0
    points = []
    first = None
    for variant in range(40):
        config = {**bases[variant % 3], "num_hidden_layers": 20 + variant}
        shape = model_shape(config)
        first = first or config
        for gpu in ("H200", "H100"):
            for gpus in (1, 2, 4, 8, 16):
                for tp in (t for t in (1, 2, 4, 8) if t <= gpus):
                    for load in (1, 8, 32, 64, 128, 256):
                        if made >= rows:
                            break
                        points.append(PerfPoint(
                            shape=shape.fingerprint,
                            shape_json=json.dumps(shape.fields, sort_keys=True),
                            model=f"m{variant}", gpu=gpu, gpu_memory_gib=140.4, gpus=gpus,
                            vllm="0.26.0", tp=tp, pp=1, dp=gpus // tp, ep=False, roles="",
                            prefill_tp=0, flags="{}", isl=1024, osl=256, concurrency=load,
                            rate=None, output_tok_s=100.0 * load, ttft_p50_ms=100.0,
                            ttft_p99_ms=200.0, tpot_p50_ms=10.0, tpot_p99_ms=12.0,
                            weights="dummy", source="bench", result=f"/r/{made}.json",
                            recorded="2026-11-30T00:00:00Z"))
                        made += 1
    while made < rows:  # repeats of the first points, other result files
        points.append(replace(points[made % 1000], result=f"/r/{made}.json"))
        made += 1
    store.add(points)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = PerfStore(Path(tmp) / "perf.db")
        started = time.perf_counter()
        config = fill(store, args.rows)
        print(f"filled {len(store.points())} rows in {time.perf_counter() - started:.2f} s")
        for name, cfg in (("a stored shape", config),
                          ("an unseen shape", {**config, "hidden_size": 3072})):
            model = Path(tmp) / name.replace(" ", "-")
            model.mkdir()
            (model / "config.json").write_text(json.dumps(cfg))
            for slo in (False, True):
                started = time.perf_counter()
                plan = api.plan_topologies(str(model), gpus_per_node=8, gpu_memory=141,
                                           nodelist="n[1-2]", perf_db=store.path,
                                           workspace=tmp, tpot_ms=50.0 if slo else None)
                took = time.perf_counter() - started
                print(f"plan of {name} on 2 x 8 H200{' with --tpot' if slo else ''}: "
                      f"{took:.3f} s, {len(plan.ranked)} candidates, "
                      f"{plan.store['points']} points of the shape, "
                      f"{plan.store['family_points']} of its family")


if __name__ == "__main__":
    main()
