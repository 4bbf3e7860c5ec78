"""How the planner does on model shapes it has no measurement of: for every shape with a grid
of measured 2-GPU topologies in pyserve's seed (docs/results), plan as if that shape had never
been measured (its own points left out; the other shapes' points still correct the estimate),
and score the plan against the measurements.

    python scripts/planner_out_of_sample.py [--gpu H200] [--gpus 2]

Prints, per shape and topology: measured output tok/s, the bare estimate and its error, the
estimate after the store's correction (other shapes of the family) and its error; per shape:
plan's rank 1 and the automatic choice (`pyserve launch MODEL`, no flags), each as measured
tok/s over the best measured. The point is the one the GPU runs measured (ISL 1024, OSL 256,
128 in flight). Then p99 TTFT, which SLO goodput is decided on: the estimate (the last prompt of
the clients' first burst) against every closed-loop point of the seed that records it, any
load and prompt length, and against what the planner compared before it modelled p99 (its p50
estimate). No GPU, no vLLM: it reads the seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from pyservecli.bench.perfstore import figure_source, seed_points
from pyservecli.plan.auto import (
    Shape,
    candidates,
    choose,
    estimate_shape,
    overrules_rules,
    rank,
    with_figures,
)
from pyservecli.plan.estimate import Workload
from pyservecli.plan.gpus import GpuInfo, find_gpu
from pyservecli.plan.modelconfig import ModelFacts
from pyservecli.plan.perfkey import flags_key, shape_from_json
from pyservecli.plan.perfmodel import shape_of_point


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="H200")
    parser.add_argument("--gpus", type=int, default=2)
    args = parser.parse_args()
    spec = find_gpu(args.gpu)
    gpu = GpuInfo(spec.memory_gib, spec, "the seed's GPU")
    workload = Workload(1024, 256, 128)
    seed = [p for p in seed_points() if p.gpu == spec.name and p.gpus == args.gpus
            and p.roles == "" and p.isl == 1024 and p.osl == 256 and p.concurrency == 128
            and p.rate is None]
    by_shape: dict[str, list] = {}
    for p in seed:
        by_shape.setdefault(p.shape, []).append(p)
    flags = flags_key({})
    errors = {"bare": [], "corrected": []}
    print(f"{'model':18} {'topology':12} {'measured':>9} {'estimate':>9} {'error':>7} "
          f"{'corrected':>9} {'error':>7}  source of the correction")
    scores = []
    for fingerprint, points in sorted(by_shape.items(), key=lambda kv: kv[1][0].model):
        grid = {(p.tp, p.pp, p.dp, p.ep): [] for p in points}
        for p in points:
            grid[(p.tp, p.pp, p.dp, p.ep)].append(p.output_tok_s)
        if len(grid) < 2:
            continue  # one topology: nothing to rank
        shape = shape_from_json(points[0].shape_json)
        memory = shape.memory()
        facts = ModelFacts(points[0].model, {**shape.fields["config"], "architectures":
                                             [shape.fields["architecture"]]}, memory, "seed")
        others = [p for p in seed_points() if p.shape != fingerprint]
        figure_of = figure_source(None, shape, spec.name, args.gpus, flags, args.gpus, memory,
                                  spec, points=others)
        found = with_figures(candidates(facts, 1, args.gpus, gpu, workload,
                                        disaggregated=False), workload, figure_of)
        rules = choose(facts, 1, args.gpus, gpu)
        ranked = [c for c in rank(found, "throughput", preferred=rules.shape) if c.valid]
        measured = {key: statistics.fmean(values) for key, values in grid.items()}
        best = max(measured.values())
        name = points[0].model.rstrip("/").split("/")[-1]
        for cand in ranked:
            s = cand.shape
            key = (s.tp, s.pp, s.dp, s.ep)
            if key not in measured:
                continue
            got = measured[key]
            bare = 100 * (cand.estimate.output_tok_s - got) / got
            fixed = 100 * (cand.figure.output_tok_s - got) / got
            errors["bare"].append(abs(bare))
            errors["corrected"].append(abs(fixed))
            print(f"{name:18} {s.label:12} {got:9,.0f} {cand.estimate.output_tok_s:9,.0f} "
                  f"{bare:+6.0f}% {cand.figure.output_tok_s:9,.0f} {fixed:+6.0f}%  "
                  f"{cand.figure.note}")
        first = ranked[0].shape
        rank1 = measured.get((first.tp, first.pp, first.dp, first.ep))
        # What `pyserve launch MODEL` takes: the rules, unless the ranking overrules them.
        auto = ranked[0].shape if overrules_rules(ranked[0], rules.shape) else (
            rules.shape or Shape(1, 1, args.gpus, False))
        chosen = measured.get((auto.tp, auto.pp, auto.dp, auto.ep))
        scores.append({"model": name, "plan_rank1": first.label,
                       "plan_rank1_vs_best": None if rank1 is None else round(rank1 / best, 3),
                       "automatic": auto.label,
                       "automatic_vs_best": None if chosen is None else round(chosen / best, 3),
                       "best": Shape(*max(measured, key=measured.get)).label})
    print()
    for row in scores:
        print(json.dumps(row))
    print(f"mean |error|: bare {statistics.fmean(errors['bare']):.1f} %, after the store's "
          f"correction {statistics.fmean(errors['corrected']):.1f} % "
          f"({len(errors['bare'])} measured topologies)")
    print()
    ttft_p99(spec, args.gpus)
    return 0


def ttft_p99(spec, gpus: int) -> None:
    """Estimated p99 TTFT against the measured one, per family, over the seed's closed-loop
    points of this GPU and count (one server or prefill/decode)."""
    rows: dict[str, list] = {}
    for p in seed_points():
        cand = shape_of_point(p)
        if (p.gpu != spec.name or p.gpus != gpus or not p.concurrency or p.rate is not None
                or p.ttft_p99_ms is None or cand is None):
            continue
        shape = shape_from_json(p.shape_json)
        est = estimate_shape(shape.memory(), spec, cand, gpus, Workload(p.isl, p.osl,
                                                                          p.concurrency))
        rows.setdefault(shape.family, []).append(
            (abs(est.ttft_p99_ms - p.ttft_p99_ms) / p.ttft_p99_ms,
             abs(est.ttft_ms - p.ttft_p99_ms) / p.ttft_p99_ms, (est.ttft_p99_ms - p.ttft_p99_ms)
             / p.ttft_p99_ms))
    for family, found in sorted(rows.items()):
        signed = [r[2] for r in found]
        print(f"p99 TTFT, {family}: mean |error| {100 * statistics.fmean(r[0] for r in found):.1f}"
              f" % (range {100 * min(signed):+.0f} to {100 * max(signed):+.0f} %); the p50 "
              f"estimate taken for p99 (before): {100 * statistics.fmean(r[1] for r in found):.1f}"
              f" % ({len(found)} points)")


if __name__ == "__main__":
    sys.exit(main())
