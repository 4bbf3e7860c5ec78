"""A first-order performance model of one topology at one workload. Pure functions.

The benchmark it predicts is ``vllm bench serve`` with random prompts: CONCURRENCY requests in
flight, each ISL tokens in and OSL tokens out. Each DP rank serves CONCURRENCY / DP of them;
its time per "round" of requests is the prefill of their prompts (compute bound) plus OSL decode
steps (memory bound: weights, touched experts and the KV cache read once per step), plus the
collectives TP and EP add per layer and a fixed scheduler cost per step.

    output tok/s = requests in flight x OSL / round time
    TTFT ~ half the batch's prefill;  TPOT ~ decode step + prefill share per output token

The efficiency factors were set from one measured point (Qwen3-8B on one H100, 128 x 1024/256:
4,755 output tok/s measured, 4.6k estimated) and are the same for every GPU. The estimate is
for ranking topologies, not for quoting: ``pyserve plan --measure`` measures the top ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pyservecli.plan.gpus import GpuSpec
from pyservecli.plan.memory import ModelMemory

PREFILL_MFU = 0.6  # share of peak 16-bit FLOPS a large prefill reaches
DECODE_MFU = 0.4
HBM_EFFICIENCY = 0.85  # share of HBM bandwidth a decode step reaches
LINK_EFFICIENCY = 0.7  # share of NVLink (or network) bandwidth a collective reaches
STEP_OVERHEAD_S = 1.0e-3  # scheduler, sampling and launch cost of one engine step
ALLREDUCE_LATENCY_S = 10e-6
ALLTOALL_LATENCY_S = 25e-6
INTER_NODE_GBS = 50.0  # per GPU, one direction: 400 Gb/s InfiniBand / EFA
ACTIVATION_BYTES = 2


@dataclass(frozen=True)
class Workload:
    isl: int
    osl: int
    concurrency: int

    def label(self) -> str:
        return f"{self.concurrency} x {self.isl}/{self.osl}"


@dataclass(frozen=True)
class Estimate:
    output_tok_s: float
    ttft_ms: float
    tpot_ms: float
    gpus: int
    # The p99 TTFT of a closed loop: its clients start together, and the last prompt of that
    # burst waits for the prefill of every prompt ahead of it on its server. None where not
    # modelled.
    ttft_p99_ms: float | None = None

    @property
    def output_tok_s_per_gpu(self) -> float:
        return self.output_tok_s / self.gpus

    def as_dict(self) -> dict:
        return {"output_tok_s": round(self.output_tok_s, 1),
                "output_tok_s_per_gpu": round(self.output_tok_s_per_gpu, 1),
                "ttft_ms": round(self.ttft_ms, 2), "tpot_ms": round(self.tpot_ms, 3),
                "ttft_p99_ms": None if self.ttft_p99_ms is None else round(self.ttft_p99_ms, 2)}


def _gemm_efficiency(tp: int) -> float:
    """Smaller per-GPU shards run further below peak."""
    return 1.0 - 0.05 * math.log2(tp)


def _allreduce_s(nbytes: float, ranks: int, link_gbs: float) -> float:
    if ranks <= 1:
        return 0.0
    return ALLREDUCE_LATENCY_S + 2 * (ranks - 1) / ranks * nbytes / (link_gbs * 1e9
                                                                    * LINK_EFFICIENCY)


def _alltoall_s(nbytes: float, ranks: int, link_gbs: float) -> float:
    if ranks <= 1:
        return 0.0
    return ALLTOALL_LATENCY_S + (ranks - 1) / ranks * nbytes / (link_gbs * 1e9 * LINK_EFFICIENCY)


# One API-server process streams at most about this many output tokens per second (HTTP, SSE
# chunks, detokenisation). vLLM 0.26 starts one per DP rank and one for a TP-only server. The
# most one process has been measured at is 8,100 tok/s (Qwen3-8B TP 2, 2x H200, 2026-11-23);
# the cap sits above it so that it binds only for small models on fast GPUs.
API_SERVER_TOK_S = 10_000.0
# Expert slices narrower than this run below peak in the fused MoE kernels (no EP, DP x TP > 1).
FULL_SPEED_SLICE = 512


@dataclass(frozen=True)
class _Server:
    """The cost functions of one server of the topology (seconds)."""

    prefill_s: Callable[[float], float]  # (requests) -> seconds to prefill that many prompts
    step_s: Callable[[float], float]  # (batch) -> seconds of one decode step of `batch`
    # sequences per DP rank


def _server(memory: ModelMemory, gpu: GpuSpec, *, tp: int, pp: int, dp: int, ep: bool,
            gpus_per_node: int, workload: Workload) -> _Server:
    size = memory.size
    peak = gpu.bf16_tflops * 1e12
    hbm = gpu.hbm_tbs * 1e12 * HBM_EFFICIENCY
    tp_link = gpu.link_gbs if tp <= gpus_per_node else INTER_NODE_GBS
    # MoE layers of all DP ranks run as one group of DP x TP GPUs (vLLM flattens TP across DP):
    # without EP every expert is sliced over the group; with EP each GPU holds whole experts.
    # Either way the ranks' tokens are gathered before each MoE layer and scattered after it.
    moe_group = tp * dp if size.is_moe and pp == 1 else 1
    moe_link = gpu.link_gbs if moe_group <= gpus_per_node else INTER_NODE_GBS
    layers = size.layers
    expert_share = size.experts * size.experts_per_token / max(1, size.num_experts)
    dense_active = size.active - expert_share  # attention, dense MLPs, shared experts, head
    slice_width = 0
    if size.is_moe and moe_group > 1 and not ep:
        slice_width = memory.expert_width / moe_group if memory.expert_width else 0

    def moe_efficiency(tokens_per_gpu: float) -> float:
        """Share of the GEMM rate the expert kernels reach: thin slices (no EP) and, with EP,
        the most loaded GPU (random routing) set the pace."""
        if not size.is_moe or moe_group <= 1:
            return 1.0
        if not ep:
            return min(1.0, max(slice_width, 1) / FULL_SPEED_SLICE) ** 0.5
        routed = max(1.0, tokens_per_gpu * size.experts_per_token)
        return 1.0 / (1.0 + math.sqrt(2.0 * math.log(moe_group) / routed))

    def collectives_s(tokens: int) -> float:
        activations = tokens * size.hidden * ACTIVATION_BYTES
        seconds = 2 * layers * _allreduce_s(activations, tp, tp_link)
        if dp > 1 and moe_group > 1:
            seconds += 2 * size.moe_layers * _alltoall_s(activations * dp, moe_group, moe_link)
        return seconds

    def prefill_s(requests: int) -> float:
        """2 FLOPs per active parameter per token plus attention over the prompt; the routed
        experts' share at the MoE kernels' efficiency."""
        tokens = requests * workload.isl
        # Windowed layers attend to their window, linear-attention and Mamba layers to none.
        attention = 2 * size.attending_layers(workload.isl) * size.query_dim * workload.isl \
            * tokens
        rate = peak * PREFILL_MFU * _gemm_efficiency(tp)
        compute = (2 * dense_active * tokens + attention) / (tp * pp) / rate
        if size.is_moe:
            compute += 2 * expert_share * tokens / (tp * pp) / (rate * moe_efficiency(
                tokens * dp / max(1, moe_group)))
        # PP: the requests go through the stages as up to PP micro-batches; one request alone
        # passes every stage in turn.
        micro = min(pp, requests)
        return compute * (pp + micro - 1) / micro + collectives_s(tokens)

    context = workload.isl + workload.osl / 2
    weights_all = memory.weights_per_gpu(tp, pp, dp, ep)
    expert_bytes = size.experts * memory.fmt.linear_bytes / memory.expert_shards(tp, pp, dp)

    def step_s(batch: int) -> float:
        """One decode step of ``batch`` sequences at the mean context length: weights, the
        touched experts and the KV cache read once (memory bound), or the GEMMs (compute)."""
        weights = weights_all
        if size.is_moe:
            tokens_seen = batch * (dp if moe_group > 1 else 1)
            touched = 1 - (1 - size.experts_per_token / size.num_experts) ** tokens_seen
            weights -= expert_bytes * (1 - touched)
        # PP keeps PP micro-batches in flight, each reading its stage's weights again.
        read = weights * pp + batch * memory.kv.bytes_per_sequence(context, tp, pp)
        compute = 2 * size.active * batch / (tp * pp) / (peak * DECODE_MFU)
        # PP: one scheduler step per micro-batch.
        return max(read / hbm, compute) + collectives_s(batch) + STEP_OVERHEAD_S * pp

    return _Server(prefill_s, step_s)


def estimate(memory: ModelMemory, gpu: GpuSpec, *, tp: int, pp: int, dp: int, ep: bool,
             gpus_per_node: int, workload: Workload) -> Estimate:
    """One server of TP x PP x DP at ``workload`` (closed loop: CONCURRENCY clients)."""
    gpus = tp * pp * dp
    ranks_busy = min(dp, workload.concurrency)
    batch = max(1, math.ceil(workload.concurrency / dp))  # requests per DP rank
    server = _server(memory, gpu, tp=tp, pp=pp, dp=dp, ep=ep, gpus_per_node=gpus_per_node,
                     workload=workload)
    step = server.step_s(batch)
    prefill = server.prefill_s(batch)
    round_s = prefill + workload.osl * step
    output = ranks_busy * batch * workload.osl / round_s
    api_servers = dp  # vLLM 0.26: one API-server process per DP rank
    capped = min(output, API_SERVER_TOK_S * api_servers)
    # A front-end bound server streams slower than its engine could: TPOT grows with it.
    tpot = (step + prefill / workload.osl) * output / capped
    # p50: a prompt in the middle of its rank's share of the burst; p99: the last of it.
    return Estimate(output_tok_s=capped, ttft_ms=1000 * server.prefill_s(max(1, batch // 2)),
                    tpot_ms=1000 * tpot, gpus=gpus, ttft_p99_ms=1000 * prefill)


def estimate_pd(memory: ModelMemory, gpu: GpuSpec, *, prefill: int, prefill_tp: int,
                decode: int, decode_tp: int, gpus_per_node: int,
                workload: Workload) -> Estimate:
    """``prefill`` servers of TP ``prefill_tp`` that only prefill, ``decode`` servers of TP
    ``decode_tp`` that only decode, behind the router (closed loop of CONCURRENCY clients).

    A request's cycle is its prefill (waiting behind the others' when the prefill servers are
    the bottleneck), the KV transfer, and OSL decode steps at the decode servers' batch, which
    no prefill interrupts: TPOT is the bare decode step, TTFT carries the prefill queue."""
    conc = workload.concurrency
    pre = _server(memory, gpu, tp=prefill_tp, pp=1, dp=1, ep=False,
                  gpus_per_node=gpus_per_node, workload=workload)
    dec = _server(memory, gpu, tp=decode_tp, pp=1, dp=1, ep=False,
                  gpus_per_node=gpus_per_node, workload=workload)
    # The prefill servers' capacity in requests per second, prefilling the queue in batches.
    chunk = max(1, math.ceil(conc / prefill))
    prefill_rate = prefill * chunk / pre.prefill_s(chunk)
    kv_bytes = memory.kv.bytes_per_sequence(workload.isl, prefill_tp)
    transfer = ALLTOALL_LATENCY_S + kv_bytes / (INTER_NODE_GBS * 1e9 * LINK_EFFICIENCY)
    first = pre.prefill_s(1) + transfer  # a prompt that does not wait
    # Closed loop: CONCURRENCY = rate x (time to first token + OSL x TPOT), and the decode
    # batch is what the rate keeps in decode. Solved by damped fixed-point iteration.
    batch = conc / decode
    rate = step = 0.0
    for _ in range(100):
        step = dec.step_s(max(1, math.ceil(batch)))
        rate = min(prefill_rate, conc / (first + workload.osl * step))
        batch = 0.5 * batch + 0.5 * max(1.0, rate * workload.osl * step / decode)
    output = min(rate * workload.osl, API_SERVER_TOK_S * decode)
    ttft = max(first, conc / rate - workload.osl * step)
    # p99: the clients start together and every prompt goes to the prefill servers, whose
    # share of that burst (CONCURRENCY / prefill servers) the last prompt waits behind; the
    # decode servers' GPUs take no part in it. Then its KV transfer.
    burst = pre.prefill_s(chunk) + transfer
    return Estimate(output_tok_s=output, ttft_ms=1000 * ttft, tpot_ms=1000 * step,
                    gpus=prefill * prefill_tp + decode * decode_tp,
                    ttft_p99_ms=1000 * max(ttft, burst))
