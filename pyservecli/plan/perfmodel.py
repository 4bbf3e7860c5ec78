"""The planner's figure for one candidate, from what was measured before. Pure: the stored
points come in as data (``bench.perfstore.PerfPoint``), the estimator as a function.

In order:
1. **measured**: points of the same shape, GPU, GPU count, flags, topology and workload (the
   mean of repeats);
2. **interpolated**: the same, at concurrencies on both sides of the one asked for (linear in
   log2 of the concurrency);
3. **estimated**: the analytic estimate, times the store's measured / estimated ratio for the
   closest kind of point there is: the same topology at other loads, else other topologies of
   the same shape, else shapes of the same family (dense, MoE, MoE with MLA) on that GPU.
   With no point at all, the estimate as it is.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyservecli.plan.estimate import Estimate, Workload

MEASURED, INTERPOLATED, ESTIMATED = "measured", "interpolated", "estimated"
# How far apart two figures of each source must be to be told apart: one fresh run's spread
# (2x H200 runs of one point differed by up to ~5 %), the interpolation's, and an estimate
# corrected by this topology's own points at other loads.
RESOLUTION = {MEASURED: 0.05, INTERPOLATED: 0.08, ESTIMATED: 0.08}
# An estimate without this topology's own points, when the store has no evidence of its own
# (see ``topology_spread``): how far the estimator's error differed between two topologies of
# one model on 2x H200 (2026-11-23 and 2026-11-30, 1024/256 at 128): dense models +0..+8 %
# (15 % kept from before), MoE models +9..+77 %, up to 1.41x apart between topologies of one
# model (Qwen3-30B-A3B: +23 % and +74 %), so 30 %. These are also the most the store's
# evidence can make them.
UNMEASURED_RESOLUTION = {"dense": 0.15, "moe": 0.30, "moe-mla": 0.30}


@dataclass(frozen=True)
class Figure:
    output_tok_s: float
    ttft_ms: float | None
    tpot_ms: float | None
    ttft_p99_ms: float | None
    tpot_p99_ms: float | None
    source: str  # measured | interpolated | estimated
    note: str  # e.g. "2 runs", "between c64 and c256", "x0.81 from 3 points of this shape"
    correction: float | None = None  # the factor applied to the estimate
    family: str = "dense"  # the model's family (plan.perfkey.ModelShape.family)
    own: bool = False  # backed by this shape's own measured points
    # How far the estimator's error has differed between two topologies of one model in the
    # store (``topology_spread``), when it has such a pair: the evidence behind the resolution.
    spread: float | None = None
    # A measured figure's runs (output tok/s of each repeat): two figures with two runs or more
    # each are told apart by whether their runs overlap, not by a resolution.
    runs: tuple[float, ...] = ()

    @property
    def resolution(self) -> float:
        if self.source == ESTIMATED and "this topology" not in self.note:
            cap = UNMEASURED_RESOLUTION.get(self.family, 0.30)
            if self.spread is not None:
                return min(max(self.spread, RESOLUTION[MEASURED]), cap)
            return cap
        return RESOLUTION[self.source]

    @property
    def evidence_backed(self) -> bool:
        """Whether the resolution this figure is told apart at comes from measurements (its
        own points, or the store's pairs of topologies of one model) rather than a constant."""
        return self.own or (self.spread is not None and self.resolution < UNMEASURED_RESOLUTION
                            .get(self.family, 0.30))

    def as_dict(self) -> dict:
        out = {"output_tok_s": round(self.output_tok_s, 1), "source": self.source,
               "note": self.note}
        for key in ("ttft_ms", "tpot_ms", "ttft_p99_ms", "tpot_p99_ms"):
            value = getattr(self, key)
            out[key] = None if value is None else round(value, 2)
        if self.correction is not None:
            out["correction"] = round(self.correction, 3)
        out["resolution"] = round(self.resolution, 3)
        return out


def shape_of_point(point):
    """The candidate shape (``plan.auto.Shape``) a stored point measured: one server, or a
    prefill/decode fleet; None for replicas behind a router and offline runs, which no
    candidate is."""
    from pyservecli.plan.auto import Shape

    if point.roles.startswith("pd:"):
        _, prefill, decode = point.roles.split(":")
        return Shape(point.tp, 1, 1, False, prefill=int(prefill), decode=int(decode),
                     prefill_tp=point.prefill_tp or point.tp)
    if point.roles:
        return None
    return Shape(point.tp, point.pp, point.dp, bool(point.ep))


def _closed_loop(point, workload: Workload) -> bool:
    return point.isl == workload.isl and point.osl == workload.osl and point.rate is None \
        and bool(point.concurrency)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _lerp(low, high, attr: str, t: float) -> float | None:
    a, b = getattr(low, attr), getattr(high, attr)
    if a is None or b is None:
        return None
    return a + (b - a) * t


def figure(shape, workload: Workload, estimate: Estimate | None, points: Sequence,
           estimate_of: Callable[[object], Estimate | None],
           family_points: Sequence = (), family: str = "dense",
           ratios: Callable[[Sequence], list[float]] | None = None,
           spread_of: Callable[[Sequence], float | None] | None = None) -> Figure | None:
    """The figure for candidate ``shape`` (``plan.auto.Shape``) at ``workload``. ``points``:
    the store's points of this model shape, GPU, GPU count and flags; ``family_points``: those
    of other shapes of the same family on this GPU; ``estimate_of(point)``: the analytic
    estimate of a stored point (its own shape, topology and workload), for the correction;
    ``ratios(pool)``: the measured / estimated ratios of a pool (default
    ``correction_ratios``; a caller planning many candidates passes a cached one);
    ``spread_of(pool)`` likewise for ``topology_spread``."""
    same = [p for p in points if shape_of_point(p) == shape]
    mine = [p for p in same if _closed_loop(p, workload)]
    exact = [p for p in mine if p.concurrency == workload.concurrency]
    if exact:
        return Figure(_mean([p.output_tok_s for p in exact]),
                      _mean([p.ttft_p50_ms for p in exact]), _mean([p.tpot_p50_ms for p in exact]),
                      _mean([p.ttft_p99_ms for p in exact]), _mean([p.tpot_p99_ms for p in exact]),
                      MEASURED, f"{len(exact)} run{'s' if len(exact) > 1 else ''}",
                      family=family, own=True,
                      runs=tuple(p.output_tok_s for p in exact if p.output_tok_s))
    below = [p for p in mine if p.concurrency < workload.concurrency]
    above = [p for p in mine if p.concurrency > workload.concurrency]
    if below and above:
        low = max(below, key=lambda p: p.concurrency)
        high = min(above, key=lambda p: p.concurrency)
        t = (math.log2(workload.concurrency) - math.log2(low.concurrency)) / (
            math.log2(high.concurrency) - math.log2(low.concurrency))
        return Figure(_lerp(low, high, "output_tok_s", t), _lerp(low, high, "ttft_p50_ms", t),
                      _lerp(low, high, "tpot_p50_ms", t), _lerp(low, high, "ttft_p99_ms", t),
                      _lerp(low, high, "tpot_p99_ms", t), INTERPOLATED,
                      f"between c{low.concurrency} and c{high.concurrency}", family=family,
                      own=True)
    if estimate is None:
        return None
    for pool, what in ((same, "this topology at other loads"),
                       (list(points), "other topologies of this shape"),
                       (list(family_points), "shapes of this family")):
        found = ratios(pool) if ratios is not None else correction_ratios(pool, estimate_of)
        if found:
            ratios_found = found
            factor = statistics.median(ratios_found)
            # The evidence behind the resolution: only a corrected estimate carries it. A
            # one-server candidate is told apart from other one-server shapes, so its evidence
            # is how far the estimator's error differed between one-server topologies; pairs
            # with a prefill/decode fleet (another estimator, estimate_pd) say nothing of that.
            evidence = [*points, *family_points]
            if not shape.is_pd:
                evidence = [p for p in evidence if not p.roles.startswith("pd:")]
            spread = spread_of(evidence) if spread_of is not None else \
                topology_spread(evidence, estimate_of)
            return Figure(estimate.output_tok_s * factor, estimate.ttft_ms / factor,
                          estimate.tpot_ms / factor, _scaled(estimate.ttft_p99_ms, 1 / factor),
                          None, ESTIMATED,
                          f"x{factor:.2f} from {len(ratios_found)} measured point"
                          f"{'s' if len(ratios_found) > 1 else ''} of {what}",
                          correction=factor,
                          family=family, own="this shape" in what or "this topology" in what,
                          spread=spread)
    return Figure(estimate.output_tok_s, estimate.ttft_ms, estimate.tpot_ms,
                  estimate.ttft_p99_ms, None, ESTIMATED,
                  "no measured point of this shape or family on this GPU", family=family)


def topology_spread(pool: Sequence, estimate_of) -> float | None:
    """How far the estimator's error differed between topologies of one model measured at one
    workload: over every (model shape, ISL, OSL, concurrency) with two or more topologies, the
    largest max / min of their measured / estimated ratios, minus one. Two estimates of one
    model closer than this cannot be told apart; further apart, the store has seen the
    estimator order such topologies right. None without such a pair."""
    groups: dict[tuple, dict[object, list[float]]] = {}
    for point in pool:
        if not point.concurrency or point.rate is not None or not point.output_tok_s:
            continue
        topology = shape_of_point(point)
        if topology is None:
            continue
        est = estimate_of(point)
        if est is None or est.output_tok_s <= 0:
            continue
        key = (point.shape, point.isl, point.osl, point.concurrency)
        groups.setdefault(key, {}).setdefault(topology, []).append(
            point.output_tok_s / est.output_tok_s)
    spreads = []
    for by_topology in groups.values():
        if len(by_topology) >= 2:
            means = [statistics.fmean(values) for values in by_topology.values()]
            spreads.append(max(means) / min(means) - 1)
    return max(spreads) if spreads else None


def correction_ratios(pool: Sequence, estimate_of) -> list[float]:
    """Measured / estimated output tok/s of each closed-loop point of ``pool``."""
    ratios = []
    for point in pool:
        if not point.concurrency or point.rate is not None or not point.output_tok_s:
            continue
        est = estimate_of(point)
        if est is not None and est.output_tok_s > 0:
            ratios.append(point.output_tok_s / est.output_tok_s)
    return ratios
