"""How much GPU memory a model needs: parameters, bytes per weight, KV cache per token, and the
fit of one topology. Pure functions of a config.json (a dict) and the vLLM settings.

Sizes are counted from the config the way vLLM lays the model out: embeddings and LM head are
vocabulary-parallel over TP and stay in the model's dtype when the linear layers are quantized;
attention (or DeepSeek's multi-head latent attention) and dense MLPs are TP-sharded; routed
experts are split over DP x TP (vLLM flattens TP across DP for MoE layers, with or without expert
parallelism); PP splits the layers.
Norms and biases are left out (well under 0.1 % of any model listed in the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyservecli.errors import PyserveError

GIB = 1024**3
# Per-GPU memory vLLM needs besides weights and KV cache: activations at the profiling batch,
# CUDA graphs, NCCL buffers and the CUDA context. An estimate (vLLM 0.2x on H100/H200 logs
# 1.5-3 GiB for 8B-30B models at default settings); the plan says it is one.
RUNTIME_OVERHEAD_BYTES = 2.5 * GIB
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

# Where configs name the number of routed experts (Qwen, DeepSeek, Mixtral, others).
EXPERT_KEYS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
_EXPERTS_PER_TOKEN_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_topk",
                           "num_selected_experts")
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp16": 2,
                "bf16": 2}
# Quantization methods (quantization_config.quant_method or --quantization) by bytes per
# quantized weight, scales included (int4: one 16-bit scale per group of 128).
_INT4 = 0.5 + 2 / 128
_QUANT_BYTES = {
    "fp8": 1.0, "fbgemm_fp8": 1.0, "ptpc_fp8": 1.0, "experts_int8": 1.0, "fp8_e4m3": 1.0,
    "modelopt": 1.0, "w8a8": 1.0, "int8": 1.0,
    "awq": _INT4, "awq_marlin": _INT4, "gptq": _INT4, "gptq_marlin": _INT4, "marlin": _INT4,
    "mxfp4": 0.5 + 1 / 32, "modelopt_fp4": 0.5 + 1 / 16, "nvfp4": 0.5 + 1 / 16,
    "bitsandbytes": _INT4, "hqq": _INT4,
}


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts of the language model, by where vLLM puts them."""

    embedding: int  # input embeddings
    lm_head: int  # 0 when tied to the embeddings
    attention: int  # all layers
    dense_mlp: int  # dense MLP layers, all layers
    experts: int  # routed experts, all layers (0 for a dense model)
    shared: int  # shared experts and routers, all layers
    num_experts: int
    experts_per_token: int
    layers: int
    moe_layers: int
    hidden: int
    query_dim: int  # heads x query head size: attention's cost per token of context
    expert_width: int = 0  # one routed expert's intermediate size (MoE)

    @property
    def total(self) -> int:
        return (self.embedding + self.lm_head + self.attention + self.dense_mlp + self.experts
                + self.shared)

    @property
    def linear(self) -> int:
        """The weights a quantization method quantizes (decoder linear layers)."""
        return self.attention + self.dense_mlp + self.experts + self.shared

    @property
    def active(self) -> int:
        """Parameters one token passes through (MoE: only its experts)."""
        routed = self.experts * self.experts_per_token // self.num_experts \
            if self.num_experts else 0
        return self.total - self.experts + routed - self.embedding

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0


@dataclass(frozen=True)
class WeightFormat:
    dtype_bytes: float  # embeddings, LM head, activations
    linear_bytes: float  # quantized (or not) linear weights
    name: str  # for messages: "bf16", "fp8", "awq (4-bit)"

    def weight_bytes(self, size: ModelSize) -> float:
        return (size.embedding + size.lm_head) * self.dtype_bytes \
            + size.linear * self.linear_bytes


@dataclass(frozen=True)
class KvShape:
    layers: int
    kv_heads: int  # 0 for MLA
    head_dim: int
    latent_dim: int  # MLA: kv_lora_rank + qk_rope_head_dim (one latent per token, not sharded)
    dtype_bytes: float

    def bytes_per_token(self, tp: int = 1, pp: int = 1) -> float:
        """KV cache bytes one token takes on one GPU of a TP x PP replica."""
        layers = math.ceil(self.layers / pp)
        if self.latent_dim:
            return layers * self.latent_dim * self.dtype_bytes
        # vLLM shards KV heads over TP; past the head count each GPU keeps one (replicated).
        heads = max(1, self.kv_heads // tp)
        return 2 * layers * heads * self.head_dim * self.dtype_bytes


def _int(config: dict, *keys: str, default: int = 0) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def _require(config: dict, key: str, name: str) -> int:
    value = _int(config, key)
    if value <= 0:
        said = "has no" if config.get(key) is None else f"has {config[key]!r} as"
        raise PyserveError(f"{name}: config.json {said} {key} (a positive whole number); "
                           "cannot size the model")
    return value


def moe_layer_count(config: dict, layers: int, experts: int) -> int:
    """How many decoder layers hold routed experts (the rest have a dense MLP)."""
    if not experts:
        return 0
    if "first_k_dense_replace" in config or "moe_layer_freq" in config:  # DeepSeek V2/V3
        first = _int(config, "first_k_dense_replace")
        freq = max(1, _int(config, "moe_layer_freq", default=1))
        return sum(1 for i in range(layers) if i >= first and i % freq == 0)
    only_dense = config.get("mlp_only_layers") or []
    step = max(1, _int(config, "decoder_sparse_step", default=1))  # Qwen MoE
    return sum(1 for i in range(layers)
               if i not in only_dense and (i + 1) % step == 0)


def model_size(config: dict, name: str = "model") -> ModelSize:
    """Parameter counts from a config.json (a multimodal model's text_config already merged)."""
    hidden = _require(config, "hidden_size", name)
    layers = _require(config, "num_hidden_layers", name)
    heads = _require(config, "num_attention_heads", name)
    vocab = _require(config, "vocab_size", name)
    kv_heads = _int(config, "num_key_value_heads", default=heads)
    head_dim = _int(config, "head_dim", default=hidden // heads)
    if config.get("kv_lora_rank"):  # DeepSeek's multi-head latent attention
        rope = _int(config, "qk_rope_head_dim")
        nope = _int(config, "qk_nope_head_dim", default=head_dim)
        v_dim = _int(config, "v_head_dim", default=head_dim)
        q_lora = _int(config, "q_lora_rank")
        qk = nope + rope
        query_dim = heads * qk
        query = hidden * q_lora + q_lora * heads * qk if q_lora else hidden * heads * qk
        kv_lora = _int(config, "kv_lora_rank")
        attention = query + hidden * (kv_lora + rope) + kv_lora * heads * (nope + v_dim) \
            + heads * v_dim * hidden
    else:
        attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
        query_dim = heads * head_dim
    experts = _int(config, *EXPERT_KEYS)
    moe_layers = moe_layer_count(config, layers, experts)
    intermediate = _int(config, "intermediate_size")
    # Mixtral-style configs size their experts with intermediate_size.
    expert_inter = _int(config, "moe_intermediate_size", default=intermediate)
    one_expert = 3 * hidden * expert_inter  # gate, up and down projections
    shared_per_layer = 0
    if experts:
        shared_per_layer = hidden * experts  # the router
        shared_per_layer += _int(config, "n_shared_experts") * one_expert
        shared_inter = _int(config, "shared_expert_intermediate_size")
        if shared_inter:  # Qwen2-MoE: one shared expert of its own width and a gate
            shared_per_layer += 3 * hidden * shared_inter + hidden
    embedding = vocab * hidden
    tied = bool(config.get("tie_word_embeddings", False))
    return ModelSize(
        embedding=embedding,
        lm_head=0 if tied else embedding,
        attention=attention * layers,
        dense_mlp=3 * hidden * intermediate * (layers - moe_layers),
        experts=experts * one_expert * moe_layers,
        shared=shared_per_layer * moe_layers,
        num_experts=experts,
        experts_per_token=_int(config, *_EXPERTS_PER_TOKEN_KEYS, default=1 if experts else 0),
        layers=layers,
        moe_layers=moe_layers,
        hidden=hidden,
        query_dim=query_dim,
        expert_width=expert_inter if experts else 0,
    )


def _quant_bytes(method: str, qconfig: dict) -> float | None:
    method = method.lower()
    if method in ("compressed-tensors", "compressed_tensors"):
        bits = _compressed_tensors_bits(qconfig)
        return None if bits is None else bits / 8 + (2 / 128 if bits < 8 else 0)
    if method in ("gptq", "gptq_marlin", "awq", "awq_marlin"):
        bits = qconfig.get("bits") or qconfig.get("w_bit")
        group = qconfig.get("group_size") or qconfig.get("q_group_size")
        group = group if isinstance(group, int) and group > 0 else 128  # -1: per channel
        if isinstance(bits, int) and 1 < bits <= 8:
            return bits / 8 + 2 / group
    if method == "bitsandbytes" and qconfig.get("load_in_8bit"):
        return 1.0
    if method == "modelopt":
        algo = str(qconfig.get("quant_algo", "FP8")).upper()
        return _QUANT_BYTES["nvfp4"] if "FP4" in algo else 1.0
    return _QUANT_BYTES.get(method)


def _compressed_tensors_bits(qconfig: dict) -> int | None:
    groups = qconfig.get("config_groups")
    if not isinstance(groups, dict):
        return None
    for group in groups.values():
        weights = group.get("weights") if isinstance(group, dict) else None
        if isinstance(weights, dict) and isinstance(weights.get("num_bits"), int):
            return weights["num_bits"]
    return None


def weight_format(config: dict, dtype: str | None = None,
                  quantization: str | None = None) -> WeightFormat:
    """Bytes per weight from ``--dtype`` / config dtype and ``--quantization`` /
    ``quantization_config``. Unknown quantization methods are refused by name."""
    dtype = (dtype or "auto").lower()
    if dtype == "auto":
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        # vLLM serves float32 checkpoints in 16 bits unless told --dtype float32.
        dtype_bytes = 2 if dtype == "float32" else _DTYPE_BYTES.get(dtype, 2)
    elif dtype in _DTYPE_BYTES:
        dtype_bytes = _DTYPE_BYTES[dtype]
    else:
        raise PyserveError(f"--dtype {dtype}: unknown (auto, bfloat16, float16, float32)")
    qconfig = config.get("quantization_config")
    qconfig = qconfig if isinstance(qconfig, dict) else {}
    method = quantization or qconfig.get("quant_method")
    if not method:
        return WeightFormat(dtype_bytes, dtype_bytes, "bf16" if dtype_bytes == 2 and
                            "bfloat" in dtype else "fp16" if dtype_bytes == 2 else "fp32")
    method = str(method)
    linear = _quant_bytes(method, qconfig)
    if linear is None:
        raise PyserveError(
            f"quantization {method!r}: pyserve does not know its bytes per weight, so it cannot "
            "size the model; plan with explicit --tp/--pp/--dp")
    bits = "8-bit" if linear >= 1 else "4-bit" if linear > 0.25 else f"{linear * 8:.0f}-bit"
    return WeightFormat(dtype_bytes, linear, f"{method} ({bits})")


def kv_shape(config: dict, size: ModelSize, kv_cache_dtype: str | None,
             fmt: WeightFormat) -> KvShape:
    heads = _int(config, "num_attention_heads", default=1)
    hidden = _int(config, "hidden_size")
    kv_dtype = (kv_cache_dtype or "auto").lower()
    dtype_bytes = 1.0 if kv_dtype.startswith("fp8") else fmt.dtype_bytes
    latent = 0
    if config.get("kv_lora_rank"):
        latent = _int(config, "kv_lora_rank") + _int(config, "qk_rope_head_dim")
    return KvShape(layers=size.layers, kv_heads=_int(config, "num_key_value_heads",
                                                     default=heads),
                   head_dim=_int(config, "head_dim", default=hidden // max(heads, 1)),
                   latent_dim=latent, dtype_bytes=dtype_bytes)


@dataclass(frozen=True)
class ModelMemory:
    """A model's memory needs, ready to be fitted to topologies."""

    size: ModelSize
    fmt: WeightFormat
    kv: KvShape
    max_model_len: int | None

    @property
    def weight_bytes(self) -> float:
        return self.fmt.weight_bytes(self.size)

    @property
    def expert_width(self) -> int:
        return self.size.expert_width

    def weights_per_gpu(self, tp: int, pp: int = 1, dp: int = 1, ep: bool = False) -> float:
        """Weight bytes on the fullest GPU of this topology."""
        size, fmt = self.size, self.fmt
        layer_linear = (size.attention + size.dense_mlp + size.shared) * fmt.linear_bytes
        experts = size.experts * fmt.linear_bytes
        # PP: the first stage holds the embeddings and the last the LM head; each holds a
        # share of the layers.
        edge = max(size.embedding, size.lm_head) if pp > 1 else size.embedding + size.lm_head
        per_gpu = edge * fmt.dtype_bytes / tp + layer_linear / (tp * pp)
        return per_gpu + experts / self.expert_shards(tp, pp, dp)

    @staticmethod
    def expert_shards(tp: int, pp: int = 1, dp: int = 1) -> int:
        """GPUs one layer's routed experts are split over. vLLM flattens TP across DP for the
        MoE layers, with or without expert parallelism: DP 2 x TP 1 splits them in two (EP
        partitions whole experts, TP slices each one)."""
        return tp * dp if pp == 1 else tp * pp


def model_memory(config: dict, name: str = "model", *, dtype: str | None = None,
                 quantization: str | None = None, kv_cache_dtype: str | None = None,
                 max_model_len: int | None = None) -> ModelMemory:
    size = model_size(config, name)
    fmt = weight_format(config, dtype, quantization)
    if max_model_len is None:
        max_model_len = _int(config, "max_position_embeddings") or None
    return ModelMemory(size=size, fmt=fmt, kv=kv_shape(config, size, kv_cache_dtype, fmt),
                       max_model_len=max_model_len)


@dataclass(frozen=True)
class Fit:
    """One topology's memory on one GPU."""

    gpu_bytes: float
    utilization: float
    weights: float
    overhead: float
    kv_bytes_per_token: float
    max_model_len: int | None

    @property
    def budget(self) -> float:
        return self.gpu_bytes * self.utilization

    @property
    def kv_bytes(self) -> float:
        return self.budget - self.weights - self.overhead

    @property
    def weights_fit(self) -> bool:
        return self.kv_bytes > 0

    @property
    def kv_tokens(self) -> int:
        """Tokens of KV cache each replica holds (every GPU of a replica holds the same)."""
        return max(0, int(self.kv_bytes / self.kv_bytes_per_token))

    @property
    def holds_one_sequence(self) -> bool:
        return self.max_model_len is None or self.kv_tokens >= self.max_model_len

    def describe(self) -> str:
        text = (f"weights {self.weights / GIB:.1f} GiB + runtime ~{self.overhead / GIB:.1f} GiB "
                f"of {self.budget / GIB:.1f} GiB per GPU ({self.utilization:g} x "
                f"{self.gpu_bytes / GIB:.1f} GiB)")
        if self.weights_fit:
            text += f"; KV cache {self.kv_bytes / GIB:.1f} GiB = {self.kv_tokens:,} tokens"
        return text


def fit(memory: ModelMemory, gpu_bytes: float, tp: int, pp: int = 1, dp: int = 1,
        ep: bool = False, utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION) -> Fit:
    return Fit(gpu_bytes=gpu_bytes, utilization=utilization,
               weights=memory.weights_per_gpu(tp, pp, dp, ep), overhead=RUNTIME_OVERHEAD_BYTES,
               kv_bytes_per_token=memory.kv.bytes_per_token(tp, pp),
               max_model_len=memory.max_model_len)
