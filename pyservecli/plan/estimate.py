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

    @property
    def output_tok_s_per_gpu(self) -> float:
        return self.output_tok_s / self.gpus

    def as_dict(self) -> dict:
        return {"output_tok_s": round(self.output_tok_s, 1),
                "output_tok_s_per_gpu": round(self.output_tok_s_per_gpu, 1),
                "ttft_ms": round(self.ttft_ms, 2), "tpot_ms": round(self.tpot_ms, 3)}


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


def estimate(memory: ModelMemory, gpu: GpuSpec, *, tp: int, pp: int, dp: int, ep: bool,
             gpus_per_node: int, workload: Workload) -> Estimate:
    size = memory.size
    gpus = tp * pp * dp
    ranks_busy = min(dp, workload.concurrency)
    batch = max(1, math.ceil(workload.concurrency / dp))  # requests per DP rank
    peak = gpu.bf16_tflops * 1e12
    hbm = gpu.hbm_tbs * 1e12 * HBM_EFFICIENCY
    tp_link = gpu.link_gbs if tp <= gpus_per_node else INTER_NODE_GBS
    # MoE layers of all DP ranks run as one group of DP x TP GPUs (vLLM flattens TP across DP,
    # and expert parallelism partitions the same group): the ranks' tokens are gathered before
    # each MoE layer and scattered after it.
    moe_group = tp * dp if size.is_moe and pp == 1 else 1
    moe_link = gpu.link_gbs if moe_group <= gpus_per_node else INTER_NODE_GBS
    layers = size.layers

    def collectives_s(tokens: int) -> float:
        activations = tokens * size.hidden * ACTIVATION_BYTES
        seconds = 2 * layers * _allreduce_s(activations, tp, tp_link)
        if dp > 1 and moe_group > 1:
            seconds += 2 * size.moe_layers * _alltoall_s(activations * dp, moe_group, moe_link)
        return seconds

    # Prefill: 2 FLOPs per active parameter per token, plus attention over the prompt.
    def prefill_s(requests: int) -> float:
        tokens = requests * workload.isl
        flops = 2 * size.active * tokens + 2 * layers * size.query_dim * workload.isl * tokens
        compute = flops / (tp * pp) / (peak * PREFILL_MFU * _gemm_efficiency(tp))
        # PP: the requests go through the stages as up to PP micro-batches; one request alone
        # passes every stage in turn.
        micro = min(pp, requests)
        return compute * (pp + micro - 1) / micro + collectives_s(tokens)

    # Decode step of `batch` sequences at the mean context length.
    context = workload.isl + workload.osl / 2
    weights = memory.weights_per_gpu(tp, pp, dp, ep)
    expert_bytes = size.experts * memory.fmt.linear_bytes / memory.expert_shards(tp, pp, dp)
    if size.is_moe:
        tokens_seen = batch * (dp if moe_group > 1 else 1)
        touched = 1 - (1 - size.experts_per_token / size.num_experts) ** tokens_seen
        weights -= expert_bytes * (1 - touched)
    # PP keeps PP micro-batches in flight, each reading its stage's weights again.
    read = weights * pp + batch * context * memory.kv.bytes_per_token(tp, pp)
    compute = 2 * size.active * batch / (tp * pp) / (peak * DECODE_MFU)
    # PP: one scheduler step per micro-batch.
    step = max(read / hbm, compute) + collectives_s(batch) + STEP_OVERHEAD_S * pp

    prefill = prefill_s(batch)
    round_s = prefill + workload.osl * step
    return Estimate(output_tok_s=ranks_busy * batch * workload.osl / round_s,
                    ttft_ms=1000 * prefill_s(max(1, batch // 2)),
                    tpot_ms=1000 * (step + prefill / workload.osl), gpus=gpus)
