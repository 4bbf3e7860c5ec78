"""Topologies that know the model: the automatic choice ``launch`` makes when no parallel flag is
given, the memory check of an explicit choice, and the ranked candidates of ``pyserve plan``.
Pure: the model's config, the allocation and the GPU come in as data.

The automatic choice follows rules a user can check (one line per decision):

1. TP: the smallest TP that divides a node's GPUs and the model's heads and whose share of the
   weights fits one GPU with KV cache for one max-length sequence.
2. One node too small: PP over the nodes at TP = a node (layers split, no cross-node TP); if
   that does not fit either, the plan is refused with the numbers.
3. DP: every remaining GPU.
4. EP for MoE models when DP x TP would slice each expert thinner than 256 columns (vLLM splits
   MoE layers over DP x TP either way; EP keeps experts whole) or spans nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pyservecli.errors import PyserveError
from pyservecli.plan.estimate import Estimate, Workload, estimate, estimate_pd
from pyservecli.plan.gpus import GIB, GpuInfo
from pyservecli.plan.memory import DEFAULT_GPU_MEMORY_UTILIZATION, Fit, ModelMemory, fit
from pyservecli.plan.modelconfig import ModelFacts, check_model_fits
from pyservecli.plan.topology import Topology, plan_topology

if TYPE_CHECKING:  # perfmodel imports this module
    from pyservecli.plan.perfmodel import Figure

# Narrower expert slices than this run far below peak in the fused MoE kernels.
MIN_EXPERT_SLICE = 256


@dataclass(frozen=True)
class Shape:
    """One server of TP x PP x DP (EP), or with ``prefill`` > 0 a disaggregated fleet:
    ``prefill`` servers of TP ``prefill_tp`` and ``decode`` servers of TP ``tp``."""

    tp: int
    pp: int
    dp: int
    ep: bool
    prefill: int = 0
    decode: int = 0
    prefill_tp: int = 0

    @property
    def is_pd(self) -> bool:
        return self.prefill > 0

    @property
    def gpus(self) -> int:
        if self.is_pd:
            return self.prefill * self.prefill_tp + self.decode * self.tp
        return self.tp * self.pp * self.dp

    @property
    def label(self) -> str:
        """A directory name for measured results: tp2-dp1, tp1-dp2-ep, tp8-pp2, 1p-tp1-1d-tp1
        (the performance store's topology label too)."""
        if self.is_pd:
            return f"{self.prefill}p-tp{self.prefill_tp}-{self.decode}d-tp{self.tp}"
        text = f"tp{self.tp}" + (f"-pp{self.pp}" if self.pp > 1 else f"-dp{self.dp}")
        return text + ("-ep" if self.ep else "")

    def describe(self) -> str:
        if self.is_pd:
            return (f"{self.prefill} prefill (TP {self.prefill_tp}) + {self.decode} decode "
                    f"(TP {self.tp})")
        text = f"TP {self.tp}" + (f" x PP {self.pp}" if self.pp > 1 else f" x DP {self.dp}")
        return text + (f", EP {self.tp * self.dp}" if self.ep else "")

    def launch_settings(self) -> dict:
        """The launch settings (``api.prepare_launch`` keywords) of this shape."""
        if self.is_pd:
            return {"prefill": self.prefill, "decode": self.decode,
                    "prefill_tp": self.prefill_tp, "decode_tp": self.tp}
        return {"tp": self.tp, "pp": self.pp, "dp": None if self.pp > 1 else self.dp,
                "ep": self.ep}


@dataclass
class Choice:
    """A topology and why: what ``place`` plans and ``launch --dry-run`` prints."""

    shape: Shape | None  # None: nothing to choose (explicit flags or no GPU memory known)
    decisions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fit: Fit | None = None


def _gpu_bytes(gpu: GpuInfo | None) -> float | None:
    return None if gpu is None else gpu.memory_bytes


def _tp_options(gpus_per_node: int, config: dict | None) -> list[int]:
    options = []
    for tp in range(1, gpus_per_node + 1):
        if gpus_per_node % tp:
            continue
        try:
            if config is not None:
                check_model_fits(config, Topology(1, gpus_per_node, tp, 1, 1, 1, 0, "single"))
        except PyserveError:
            continue
        options.append(tp)
    return options


def _wants_ep(memory: ModelMemory, config: dict, group: int, gpus_per_node: int,
              decisions: list[str]) -> bool:
    size = memory.size
    if not size.is_moe or group <= 1:
        return False
    inter = config.get("moe_intermediate_size") or config.get("intermediate_size") or 0
    if size.num_experts % group:
        decisions.append(f"EP off: the {size.num_experts} experts do not split evenly over "
                         f"DP x TP = {group} GPUs")
        return False
    thin = isinstance(inter, int) and inter and inter / group < MIN_EXPERT_SLICE
    if thin or group > gpus_per_node:
        why = (f"DP x TP = {group} GPUs would slice each expert's {inter}-wide MLP to "
               f"{inter // group} columns" if thin else
               f"the MoE group of {group} GPUs spans nodes")
        decisions.append(f"EP {group}: {why}; EP keeps whole experts "
                         f"({size.num_experts // group} per GPU)")
        return True
    decisions.append(f"EP off: vLLM splits every expert over the DP x TP = {group} GPUs "
                     f"({inter // group}-wide slices); --ep partitions whole experts instead")
    return False


def choose(facts: ModelFacts, nodes: int, gpus_per_node: int, gpu: GpuInfo | None,
           ep: bool | None = None, utilization: float | None = None) -> Choice:
    """The automatic topology (no --tp/--pp/--dp given); ``ep``: the user's --ep/--no-ep."""
    util = utilization or DEFAULT_GPU_MEMORY_UTILIZATION
    gpu_bytes = _gpu_bytes(gpu)
    total = nodes * gpus_per_node
    if facts.memory is None or gpu_bytes is None:
        why = facts.source if facts.memory is None else "GPU memory not known (--gpu-memory)"
        return Choice(None, [f"TP 1 x DP {total}: model size not known ({why}); "
                             "give --tp to split it"])
    memory, config = facts.memory, facts.config or {}
    decisions: list[str] = []
    tps = _tp_options(gpus_per_node, config)
    if not tps:
        raise PyserveError(f"{facts.name}: no TP up to the {gpus_per_node} GPUs per node divides "
                           "its attention heads; give --tp")
    rejected = []
    for tp in tps:
        dp = total // tp
        shape_fit = fit(memory, gpu_bytes, tp, 1, dp, utilization=util)
        if shape_fit.weights_fit and shape_fit.holds_one_sequence:
            smaller = f" (TP {rejected[-1][0]}: {rejected[-1][1]})" if rejected else ""
            decisions.append(f"TP {tp}: the smallest TP whose share fits one GPU{smaller}: "
                             f"{shape_fit.describe()}")
            decisions.append(f"DP {dp}: one replica per {tp} GPU(s), every GPU of the "
                             f"allocation" if dp > 1 else "DP 1: one replica")
            use_ep = _wants_ep(memory, config, dp * tp, gpus_per_node, decisions) \
                if ep is None else ep
            if ep is not None and memory.size.is_moe and dp * tp > 1:
                decisions.append(f"EP {'on' if ep else 'off'}: as given")
            return Choice(Shape(tp, 1, dp, use_ep), decisions, fit=shape_fit)
        rejected.append((tp, _shortfall(shape_fit)))
    if nodes > 1:
        tp, pp = gpus_per_node, nodes
        shape_fit = fit(memory, gpu_bytes, tp, pp, 1, utilization=util)
        layers = memory.size.layers
        if shape_fit.weights_fit and layers >= pp:
            decisions.append(f"TP {tp} x PP {pp}: one node is too small even at TP {tp} "
                             f"({rejected[-1][1]}); PP splits the {layers} layers over the "
                             f"{nodes} nodes: {shape_fit.describe()}")
            choice = Choice(Shape(tp, pp, 1, False), decisions, fit=shape_fit)
            if not shape_fit.holds_one_sequence:
                choice.warnings.append(_kv_warning(shape_fit))
            return choice
    raise PyserveError(
        f"{facts.name} does not fit {nodes} node(s) x {gpus_per_node} GPUs of "
        f"{gpu.memory_gib:.1f} GiB ({gpu.source}): at TP {tps[-1]} {rejected[-1][1]}; add nodes, "
        "quantize (--quantization fp8), lower --max-model-len or raise "
        "--gpu-memory-utilization")


def _shortfall(shape_fit: Fit) -> str:
    if not shape_fit.weights_fit:
        return (f"weights {shape_fit.weights / GIB:.1f} GiB + runtime ~"
                f"{shape_fit.overhead / GIB:.1f} GiB exceed {shape_fit.budget / GIB:.1f} GiB "
                "per GPU")
    return (f"KV cache for {shape_fit.kv_tokens:,} tokens, less than one "
            f"{shape_fit.max_model_len:,}-token sequence")


def _kv_warning(shape_fit: Fit) -> str:
    return (f"KV cache holds {shape_fit.kv_tokens:,} tokens per replica, less than one "
            f"max-length sequence ({shape_fit.max_model_len:,}); vLLM will refuse to start: "
            f"lower --max-model-len to at most {shape_fit.kv_tokens:,}")


def check_memory(facts: ModelFacts, topology: Topology, gpu: GpuInfo | None,
                 utilization: float | None = None) -> Choice:
    """The memory check of an explicit topology: refused when the weights do not fit a GPU of
    known memory, a warning when the memory is assumed or the KV cache is short."""
    gpu_bytes = _gpu_bytes(gpu)
    if facts.memory is None or gpu_bytes is None:
        return Choice(None)
    shape_fit = fit(facts.memory, gpu_bytes, topology.tp, topology.pp, topology.dp,
                    bool(topology.ep), utilization=utilization or DEFAULT_GPU_MEMORY_UTILIZATION)
    choice = Choice(None, [f"memory: {shape_fit.describe()}"], fit=shape_fit)
    if not shape_fit.weights_fit:
        text = (f"{facts.name} does not fit TP {topology.tp} x PP {topology.pp}: "
                f"{_shortfall(shape_fit)} ({gpu.memory_gib:.1f} GiB from {gpu.source})")
        if gpu.assumed:
            choice.warnings.append(text)
        else:
            raise PyserveError(text + "; raise --tp/--pp, add nodes or quantize")
    elif not shape_fit.holds_one_sequence:
        choice.warnings.append(_kv_warning(shape_fit))
    return choice


@dataclass(frozen=True)
class Goodput:
    """The highest load (concurrency) at which every SLO holds, and the figure there."""

    concurrency: int
    figure: Figure

    def as_dict(self) -> dict:
        return {"concurrency": self.concurrency, "output_tok_s":
                round(self.figure.output_tok_s, 1), "source": self.figure.source}


@dataclass(frozen=True)
class Candidate:
    shape: Shape
    topology: Topology | None  # None: refused (``why``)
    fit: Fit | None
    estimate: Estimate | None
    why: str = ""  # why the shape is not valid / does not fit
    figure: object = None  # plan.perfmodel.Figure: measured, interpolated or estimated
    goodput: Goodput | None = None  # with SLOs: the best load that meets them (None: none)

    @property
    def valid(self) -> bool:
        return self.topology is not None and (self.fit is None or self.fit.weights_fit)

    @property
    def value(self):
        """The figure the ranking reads: the store's, else the bare estimate."""
        return self.figure if self.figure is not None else self.estimate

    def as_dict(self) -> dict:
        out = {"label": self.shape.label, "tp": self.shape.tp, "pp": self.shape.pp,
               "dp": self.shape.dp, "ep": self.shape.ep, "valid": self.valid}
        if self.shape.is_pd:
            out.update(prefill=self.shape.prefill, decode=self.shape.decode,
                       prefill_tp=self.shape.prefill_tp, decode_tp=self.shape.tp)
        if self.why:
            out["why"] = self.why
        if self.fit is not None:
            out["memory"] = {"weights_gib": round(self.fit.weights / GIB, 2),
                             "kv_cache_gib": round(max(0.0, self.fit.kv_bytes) / GIB, 2),
                             "kv_tokens": self.fit.kv_tokens,
                             "holds_max_len": self.fit.holds_one_sequence}
        if self.estimate is not None:
            out["estimate"] = self.estimate.as_dict()
        if self.figure is not None:
            out["figure"] = self.figure.as_dict()
        if self.goodput is not None:
            out["goodput"] = self.goodput.as_dict()
        return out


def shapes(nodes: int, gpus_per_node: int, moe: bool) -> list[Shape]:
    """Every way to use the whole allocation: TP within a node x DP (with and without EP for
    MoE), and one replica over all GPUs (TP x PP with PP > 1, or TP larger than a node)."""
    total = nodes * gpus_per_node
    found = []
    for tp in range(1, gpus_per_node + 1):
        if gpus_per_node % tp == 0:
            dp = total // tp
            found.append(Shape(tp, 1, dp, False))
            if moe and tp * dp > 1:
                found.append(Shape(tp, 1, dp, True))
    for tp in range(1, total + 1):
        if total % tp == 0:
            pp = total // tp
            if pp > 1 or tp > gpus_per_node:
                found.append(Shape(tp, pp, 1, False))
    return found


def pd_shapes(nodes: int, gpus_per_node: int) -> list[Shape]:
    """Disaggregated fleets over the whole allocation: P prefill and D decode servers of one
    TP within a node (every P:D split), the servers packed onto the nodes whole."""
    total = nodes * gpus_per_node
    found = []
    for tp in range(1, gpus_per_node + 1):
        if gpus_per_node % tp or total // tp < 2:
            continue
        servers = total // tp
        found += [Shape(tp, 1, 1, False, prefill=p, decode=servers - p, prefill_tp=tp)
                  for p in range(1, servers)]
    return found


def candidates(facts: ModelFacts, nodes: int, gpus_per_node: int, gpu: GpuInfo | None,
               workload: Workload, utilization: float | None = None,
               disaggregated: bool = True) -> list[Candidate]:
    util = utilization or DEFAULT_GPU_MEMORY_UTILIZATION
    gpu_bytes = _gpu_bytes(gpu)
    spec = gpu.estimate_spec if gpu is not None else None
    moe = facts.memory is not None and facts.memory.size.is_moe
    out = []
    every = shapes(nodes, gpus_per_node, moe) + (pd_shapes(nodes, gpus_per_node)
                                                 if disaggregated else [])
    for shape in every:
        try:
            if shape.is_pd:  # each server alone, within a node
                topology = plan_topology(1, shape.tp, tp=shape.tp, pp=1, dp=1)
                if shape.prefill_tp != shape.tp:
                    plan_topology(1, shape.prefill_tp, tp=shape.prefill_tp, pp=1, dp=1)
            else:
                topology = plan_topology(nodes, gpus_per_node, tp=shape.tp, pp=shape.pp,
                                         dp=None if shape.pp > 1 or shape.tp > gpus_per_node
                                         else shape.dp, ep=shape.ep)
            if facts.config is not None:
                check_model_fits(facts.config, topology, name=facts.name)
        except PyserveError as exc:
            out.append(Candidate(shape, None, None, None, why=str(exc)))
            continue
        shape_fit = est = None
        why = ""
        if facts.memory is not None:
            if gpu_bytes is not None:
                shape_fit = fit(facts.memory, gpu_bytes, shape.tp, shape.pp, shape.dp, shape.ep,
                                utilization=util)
                if not shape_fit.weights_fit:
                    why = _shortfall(shape_fit)
                elif not shape_fit.holds_one_sequence:
                    why = _kv_warning(shape_fit)
            est = estimate_shape(facts.memory, spec, shape, gpus_per_node, workload)
        out.append(Candidate(shape, topology, shape_fit, est, why=why))
    return out


def estimate_shape(memory: ModelMemory, spec, shape: Shape, gpus_per_node: int,
                   workload: Workload) -> Estimate:
    if shape.is_pd:
        return estimate_pd(memory, spec, prefill=shape.prefill, prefill_tp=shape.prefill_tp,
                           decode=shape.decode, decode_tp=shape.tp,
                           gpus_per_node=gpus_per_node, workload=workload)
    return estimate(memory, spec, tp=shape.tp, pp=shape.pp, dp=shape.dp, ep=shape.ep,
                    gpus_per_node=gpus_per_node, workload=workload)


# The estimator's resolution when no measurement corrects it: on 2x H200 it was within
# +0..+8 % for dense models and +9..+77 % for MoE models (2026-11-23 and 2026-11-30, first
# point after READY). Figures closer than their resolution (``perfmodel.RESOLUTION``: 5 %
# measured, 8 % interpolated, 15 % estimated) to the best are not told apart: among them the
# automatic rules' choice ranks first, then the simpler shape (aggregated, no PP, smallest TP,
# no EP).
ESTIMATE_RESOLUTION = 0.15

FigureOf = Callable[[Shape, Workload], object]  # -> plan.perfmodel.Figure | None


def goodput_search(run_at, start: int, meets, *, limit: int = 4096,
                   max_points: int = 6) -> tuple[int | None, list]:
    """The highest concurrency at which ``meets(record)`` holds, found with a handful of
    measurements (``run_at(concurrency)`` -> a ``PointRecord`` or None when it failed): from
    ``start``, double while the SLOs hold (halve while they do not) to bracket the edge, then
    bisect between the last load that held and the first that did not, as vLLM's ``bench sweep
    serve_sla`` does. Returns (that concurrency or None when even 1 misses, [(concurrency,
    record, held)] in the order measured)."""
    tried: list = []
    seen: dict[int, bool] = {}

    def held(load: int) -> bool:
        if load not in seen:
            record = run_at(load)
            ok = record is not None and bool(meets(record))
            seen[load] = ok
            tried.append((load, record, ok))
        return seen[load]

    load = max(1, min(start, limit))
    good = bad = None
    if held(load):
        good = load
        while len(tried) < max_points and load < limit:
            load = min(limit, load * 2)
            if not held(load):
                bad = load
                break
            good = load
    else:
        bad = load
        while len(tried) < max_points and load > 1:
            load = max(1, load // 2)
            if held(load):
                good = load
                break
            bad = load
    while good is not None and bad is not None and bad - good > 1 and len(tried) < max_points:
        middle = (good + bad) // 2
        if held(middle):
            good = middle
        else:
            bad = middle
    return good, tried


def with_figures(found: list[Candidate], workload: Workload, figure_of: FigureOf,
                 ttft_ms: float | None = None, tpot_ms: float | None = None) -> list[Candidate]:
    """Each valid candidate with its figure (``figure_of``: measured, interpolated or
    estimated, ``plan.perfmodel``) and, with SLOs, its goodput: the highest load (powers of two,
    then the workload's concurrency) at which its figure meets every SLO (p99 where measured,
    else the estimate), bisected between the last power of two that meets them and the first
    that does not, as ``plan --measure`` searches the measured edge."""
    out = []
    for cand in found:
        if not cand.valid or cand.estimate is None:
            out.append(cand)
            continue
        fig = figure_of(cand.shape, workload)
        good = None

        def held(load: int, cand=cand, fig=fig):
            """The figure at ``load`` when it meets every SLO, else None."""
            point = fig if load == workload.concurrency else figure_of(
                cand.shape, replace(workload, concurrency=load))
            return point if point is not None and meets_slo(point, ttft_ms, tpot_ms) else None

        if ttft_ms is not None or tpot_ms is not None:
            # The same bracket-then-bisect as the measured search, from 1 in flight up.
            load, tried = goodput_search(held, 1, lambda point: True,
                                         limit=workload.concurrency, max_points=64)
            if load is not None:
                good = Goodput(load, next(p for at, p, _ in tried if at == load))
        out.append(replace(cand, figure=fig, goodput=good))
    return out


def meets_slo(fig, ttft_ms: float | None, tpot_ms: float | None) -> bool:
    ttft = fig.ttft_p99_ms if fig.ttft_p99_ms is not None else fig.ttft_ms
    tpot = fig.tpot_p99_ms if fig.tpot_p99_ms is not None else fig.tpot_ms
    return ((ttft_ms is None or (ttft is not None and ttft <= ttft_ms))
            and (tpot_ms is None or (tpot is not None and tpot <= tpot_ms)))


def _resolution(c: Candidate) -> float:
    fig = c.figure
    return fig.resolution if fig is not None else ESTIMATE_RESOLUTION


def measured_backing(c: Candidate) -> bool:
    """Whether the candidate's figure rests on this model shape's own measurements (measured,
    interpolated, or estimated with a correction from them)."""
    return c.figure is not None and bool(getattr(c.figure, "own", False))


def overrules_rules(first: Candidate | None, rules_shape: Shape | None) -> bool:
    """Whether the ranking's first candidate replaces the automatic rules' choice for
    ``pyserve launch MODEL`` with no parallel flag: another one-server shape, that holds a
    sequence, whose figure is backed by measurements (this model's own, or a margin wider than
    the estimator's error between two topologies of one model of this family in the store;
    the bare estimator has been up to 1.4x wrong between two topologies of one MoE model)."""
    return (first is not None and first.shape != rules_shape and not first.shape.is_pd
            and (measured_backing(first) or evidence_backed(first))
            and (first.fit is None or first.fit.holds_one_sequence))


def evidence_backed(c: Candidate) -> bool:
    """Whether the candidate's figure is told apart at a resolution the store's measurements
    set: its own points, or pairs of topologies of other models of its family on this GPU whose
    estimates were that close to right (``perfmodel.topology_spread``)."""
    return c.figure is not None and bool(getattr(c.figure, "evidence_backed", False))


def rank(found: list[Candidate], goal: str, ttft_ms: float | None = None,
         tpot_ms: float | None = None, preferred: Shape | None = None) -> list[Candidate]:
    """Valid candidates first; then those meeting the SLOs (with SLOs: by goodput, the most
    output tok/s at a load that meets them); then by the goal (throughput: most output tok/s;
    latency: lowest TPOT + TTFT/1000) where the figures differ by more than their resolution,
    else ``preferred`` (the automatic rules' choice) first, then the simpler shape."""
    slo = ttft_ms is not None or tpot_ms is not None

    def meets(c: Candidate) -> bool:
        return not slo or c.value is None or c.goodput is not None

    def badness(c: Candidate) -> float:
        """Lower is better."""
        if slo and c.goodput is not None:
            return -c.goodput.figure.output_tok_s
        e = c.value
        if e is None:
            return 0.0
        return -e.output_tok_s if goal == "throughput" else e.tpot_ms + e.ttft_ms / 1000

    def tier(c: Candidate) -> tuple:
        # Without SLOs, prefill/decode follows every one-server shape: it pays for TPOT (the
        # decode servers never prefill), not for throughput (1P1D measured 0.88 of two
        # replicas at 1024/256, 2x H200).
        return (not c.valid, not (c.fit is None or c.fit.holds_one_sequence), not meets(c),
                c.shape.is_pd and not slo)

    def simple(c: Candidate) -> tuple:
        return (c.shape != preferred, c.shape.is_pd, c.shape.pp, c.shape.tp, c.shape.ep,
                c.shape.prefill)

    ordered = sorted(found, key=lambda c: (tier(c), badness(c), simple(c)))
    ranked: list[Candidate] = []
    while ordered:
        best = ordered[0]
        top = badness(best)
        # Within the resolution of the best of this tier: one group, preferred and simplest
        # first.
        def indistinct(c: Candidate, best: Candidate = best, top: float = top) -> bool:
            apart = None if slo or goal != "throughput" else runs_apart(best, c)
            if apart is not None:
                return not apart
            return _within(badness(c), top, goal if not slo else "throughput",
                           max(_resolution(best), _resolution(c)))

        near = [c for c in ordered if tier(c) == tier(best) and indistinct(c)]
        near.sort(key=simple)
        ranked += near
        ordered = [c for c in ordered if c not in near]
    return ranked


def runs_apart(a: Candidate, b: Candidate) -> bool | None:
    """Whether two measured figures with repeated runs (two or more each) are told apart: none
    of one's runs inside the other's range. None where either has fewer runs."""
    ra = getattr(a.figure, "runs", ()) if a.figure is not None else ()
    rb = getattr(b.figure, "runs", ()) if b.figure is not None else ()
    if len(ra) < 2 or len(rb) < 2:
        return None
    return max(ra) < min(rb) or max(rb) < min(ra)


def _tie_reason(a: Candidate, b: Candidate) -> str:
    if runs_apart(a, b) is False:
        return "their repeated runs overlap"
    return (f"within {100 * max(_resolution(a), _resolution(b)):.0f} %, the resolution of "
            "those figures")


def _within(value: float, best: float, goal: str, resolution: float) -> bool:
    if goal == "throughput":  # values are -tok/s
        return best == 0 or value <= best * (1 - resolution)
    return value <= best * (1 + resolution)


def explain(ranked: list[Candidate], goal: str, preferred: Shape | None) -> list[str]:
    """One line per decision a user could not read off the table: why rank 1 beat a
    candidate with a better figure, and where the ranking overrides the automatic rules."""
    valid = [c for c in ranked if c.valid and c.value is not None]
    if not valid:
        return []
    first = valid[0]
    lines = []
    if goal == "throughput" and first.goodput is None:
        # Without SLOs prefill/decode ranks after every one-server shape (``rank``).
        best = max((c for c in valid if c.shape.is_pd == first.shape.is_pd),
                   key=lambda c: c.value.output_tok_s)
        if best is not first and best.value.output_tok_s > first.value.output_tok_s:
            reason = ("the automatic rules' choice" if first.shape == preferred
                      else "the simpler shape")
            lines.append(
                f"{first.shape.describe()} ranks first though {best.shape.describe()} has the "
                f"higher figure ({_fig(best)} against {_fig(first)}): they are "
                f"{_tie_reason(best, first)}, and {reason} wins such ties")
    if goal == "throughput" and first.goodput is None:
        # Pairs in the wrong order by figure (both one-server or both P/D), each kind said
        # once, the first time it happens: an estimate above a better measured figure; else
        # (below rank 1, which the line above covers) two of a kind, ordered simpler first.
        above_measured = simpler_first = None
        for number, (upper, lower) in enumerate(zip(valid, valid[1:], strict=False), 1):
            if upper.shape.is_pd != lower.shape.is_pd or \
                    upper.value.output_tok_s >= lower.value.output_tok_s:
                continue
            if _estimated(upper) and not _estimated(lower):
                above_measured = above_measured or (
                    f"{upper.shape.describe()} ({_fig(upper)}) ranks above "
                    f"{lower.shape.describe()} ({_fig(lower)}): an estimate ranks beside the "
                    f"best figure within its resolution ({100 * _resolution(upper):.0f} %), "
                    "so it may stand above a measured figure it could equal")
            elif number > 1 and _estimated(upper) == _estimated(lower):
                simpler_first = simpler_first or (
                    f"rank {ranked.index(upper) + 1} {upper.shape.describe()} ({_fig(upper)}) "
                    f"stands above rank {ranked.index(lower) + 1} {lower.shape.describe()} "
                    f"({_fig(lower)}): {_tie_reason(upper, lower)}, the simpler shape "
                    "(fewer pipeline stages, then smaller TP, then no EP) comes first")
        lines += [line for line in (above_measured, simpler_first) if line]
    if preferred is not None and first.shape != preferred:
        rule = next((c for c in valid if c.shape == preferred), None)
        if rule is not None:
            lines.append(f"{first.shape.describe()} ranks above the automatic rules' "
                         f"{preferred.describe()}: {_fig(first)} against {_fig(rule)}")
            agg = next((c for c in valid if not c.shape.is_pd), None)
            if agg is not None and agg.shape != preferred and not measured_backing(agg):
                lines.append(f"pyserve launch keeps the rules' {preferred.describe()}: no "
                             f"measurement of this model backs {agg.shape.describe()}'s "
                             "figure (pyserve plan --measure settles it)")
    return lines


def _fig(c: Candidate) -> str:
    v = c.value
    source = getattr(v, "source", "estimated")
    return f"{v.output_tok_s:,.0f} tok/s {source}"


def _estimated(c: Candidate) -> bool:
    """Whether the candidate's figure is the estimator's (corrected or not), not measured."""
    return getattr(c.value, "source", "estimated") == "estimated"
