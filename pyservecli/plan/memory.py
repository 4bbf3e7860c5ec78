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
import re
from collections import Counter
from dataclasses import dataclass

from pyservecli.errors import PyserveError
from pyservecli.plan.layers import (
    ATTENTION,
    DENSE,
    LINEAR,
    MAMBA,
    MOE,
    SHARED_EXPERT_TYPES,
    layer_plan,
)
from pyservecli.plan.layers import config_int as _int

GIB = 1024**3
# Per-GPU memory vLLM needs besides weights and KV cache: activations at the profiling batch,
# CUDA graphs, NCCL buffers and the CUDA context. An estimate (vLLM 0.2x on H100/H200 logs
# 1.5-3 GiB for 8B-30B models at default settings); the plan says it is one.
RUNTIME_OVERHEAD_BYTES = 2.5 * GIB
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
# Sizing reads every layer; the deepest published models have a few hundred.
MAX_LAYERS = 4096
# The KV tokens reported for a model none of whose layers keeps tokens.
NO_TOKEN_LIMIT = 10**12

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
    # One entry per softmax-attention layer: the tokens it attends to (0: the whole context).
    # Linear-attention and Mamba layers attend to none.
    attention_windows: tuple[int, ...] = ()
    linear_layers: int = 0  # linear-attention (Gated DeltaNet) layers
    mamba_layers: int = 0

    def attending_layers(self, context: float) -> float:
        """Layers' worth of attention over ``context`` tokens: a windowed layer counts for
        its window's share of the context."""
        if not self.attention_windows:
            return float(self.layers)
        return sum(1.0 if not w or context <= w else w / context
                   for w in self.attention_windows)

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
    # The token mixers stay in the model's dtype (gpt-oss: MXFP4 experts, 16-bit attention).
    attention_unquantized: bool = False

    @property
    def attention_bytes(self) -> float:
        return self.dtype_bytes if self.attention_unquantized else self.linear_bytes

    def weight_bytes(self, size: ModelSize) -> float:
        return (size.embedding + size.lm_head) * self.dtype_bytes \
            + size.attention * self.attention_bytes \
            + (size.linear - size.attention) * self.linear_bytes


@dataclass(frozen=True)
class KvShape:
    layers: int  # attention layers that keep every token of the context
    kv_heads: int  # 0 for MLA
    head_dim: int
    latent_dim: int  # MLA: kv_lora_rank + qk_rope_head_dim (one latent per token, not sharded)
    dtype_bytes: float
    # Attention layers that keep only their window's tokens: (window, layers), with their own
    # KV heads and head size (sliding-window and chunked attention).
    windowed: tuple[tuple[int, int], ...] = ()
    window_kv_heads: int = 0
    window_head_dim: int = 0
    # Linear-attention and Mamba layers: their state per sequence (bytes, every such layer, one
    # GPU of TP 1) and how many layers hold it.
    state_bytes: float = 0.0
    state_layers: int = 0

    def _token_bytes(self, layers: int, kv_heads: int, head_dim: int, tp: int,
                     pp: int) -> float:
        layers = math.ceil(layers / pp)
        if self.latent_dim:
            return layers * self.latent_dim * self.dtype_bytes
        # vLLM shards KV heads over TP; past the head count each GPU keeps one (replicated).
        heads = max(1, kv_heads // tp)
        return 2 * layers * heads * head_dim * self.dtype_bytes

    def bytes_per_token(self, tp: int = 1, pp: int = 1) -> float:
        """KV cache bytes one token takes on one GPU of a TP x PP replica while every layer
        keeps it (windowed layers: while it is inside their window)."""
        return self._token_bytes(self.layers, self.kv_heads, self.head_dim, tp, pp) + sum(
            self._token_bytes(n, self.window_kv_heads, self.window_head_dim, tp, pp)
            for _, n in self.windowed)

    def bytes_per_sequence(self, length: float, tp: int = 1, pp: int = 1) -> float:
        """Cache bytes one sequence of ``length`` tokens takes on one GPU of a TP x PP
        replica: every token in full-attention layers, at most a window's in windowed ones,
        and the fixed state of linear-attention and Mamba layers (their heads split over
        TP)."""
        total = length * self._token_bytes(self.layers, self.kv_heads, self.head_dim, tp, pp)
        for window, n in self.windowed:
            total += min(length, window) * self._token_bytes(
                n, self.window_kv_heads, self.window_head_dim, tp, pp)
        if self.state_layers:
            total += self.state_bytes / tp * math.ceil(self.state_layers / pp) \
                / self.state_layers
        return total

    @property
    def hybrid(self) -> bool:
        """Whether some layers keep less than every token (windows, fixed state)."""
        return bool(self.windowed or self.state_layers)

    def describe(self) -> str:
        """The cache per token, and per sequence where some layers keep less."""
        full = self._token_bytes(self.layers, self.kv_heads, self.head_dim, 1, 1)
        if not self.hybrid:
            return f"{full / 1024:.0f} KiB per token"
        parts = [f"{full / 1024:.0f} KiB per token in {self.layers} full-attention layers"]
        parts += [f"{n} layers keep a {window:,}-token window" for window, n in self.windowed]
        if self.state_layers:
            parts.append(f"{self.state_layers} linear-attention/Mamba layers hold "
                         f"{self.state_bytes / 2**20:.1f} MiB of state per sequence")
        return "; ".join(parts)


def _require(config: dict, key: str, name: str) -> int:
    value = _int(config, key)
    if value <= 0:
        said = "has no" if config.get(key) is None else f"has {config[key]!r} as"
        raise PyserveError(f"{name}: config.json {said} {key} (a positive whole number); "
                           "cannot size the model")
    return value


def _attention_params(hidden: int, heads: int, kv_heads: int, head_dim: int,
                      gated: bool) -> int:
    """q, k, v and o projections of one attention layer (a gated output doubles q)."""
    return (2 + gated) * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim


def _linear_attention(config: dict, hidden: int, name: str) -> tuple[int, int, int]:
    """A Gated DeltaNet layer (Qwen3-Next, Qwen3.5): (parameters, recurrent-state values,
    convolution-state values per sequence)."""
    k_heads = _require(config, "linear_num_key_heads", name)
    v_heads = _require(config, "linear_num_value_heads", name)
    k_dim = k_heads * _require(config, "linear_key_head_dim", name)
    v_dim = v_heads * _require(config, "linear_value_head_dim", name)
    kernel = _int(config, "linear_conv_kernel_dim", default=4)
    conv = 2 * k_dim + v_dim
    params = hidden * (2 * k_dim + 2 * v_dim) + hidden * 2 * v_heads + conv * kernel \
        + v_dim * hidden
    return params, v_heads * (k_dim // k_heads) * (v_dim // v_heads), conv * (kernel - 1)


def _mamba(config: dict, hidden: int, name: str) -> tuple[int, int, int]:
    """A Mamba layer: Mamba-2 (Nemotron-H) or Mamba-1 (Jamba): (parameters, SSM-state values,
    convolution-state values per sequence)."""
    if config.get("mamba_num_heads") or config.get("mamba_n_heads"):
        # Nemotron-H spells them mamba_num_heads / mamba_head_dim, Granite 4 mamba_n_heads /
        # mamba_d_head.
        heads = _int(config, "mamba_num_heads", "mamba_n_heads")
        head_dim = _int(config, "mamba_head_dim", "mamba_d_head")
        if heads <= 0 or head_dim <= 0:
            raise PyserveError(f"{name}: config.json gives Mamba heads without a positive "
                               "count and head size; cannot size the model")
        inner = heads * head_dim
        state = _int(config, "ssm_state_size", "mamba_d_state", default=128)
        groups = _int(config, "n_groups", "mamba_n_groups", default=1)
        kernel = _int(config, "conv_kernel", "mamba_d_conv", default=4)
        conv = inner + 2 * groups * state
        params = hidden * (2 * inner + 2 * groups * state + heads) + conv * kernel \
            + inner * hidden
        return params, heads * (inner // heads) * state, conv * (kernel - 1)
    if not config.get("mamba_expand") and not config.get("mamba_d_state"):
        raise PyserveError(f"{name}: config.json has Mamba layers but no mamba_num_heads or "
                           "mamba_expand / mamba_d_state; cannot size the model")
    inner = _int(config, "mamba_expand", default=2) * hidden
    state = _int(config, "mamba_d_state", default=16)
    kernel = _int(config, "mamba_d_conv", default=4)
    rank = _int(config, "mamba_dt_rank", default=-(-hidden // 16))
    params = hidden * 2 * inner + inner * kernel + inner * (rank + 2 * state) \
        + rank * inner + inner * state + inner * hidden
    return params, inner * state, inner * (kernel - 1)


def _gated_mlp(config: dict) -> bool:
    """Whether MLPs have a gate projection (SwiGLU, GeGLU): all but squared-ReLU ones."""
    act = config.get("mlp_hidden_act") or config.get("hidden_act") or ""
    return str(act).lower() not in ("relu2", "squared_relu")


def model_size(config: dict, name: str = "model") -> ModelSize:
    """Parameter counts from a config.json (a multimodal model's text_config already merged),
    layer by layer (``plan.layers``)."""
    hidden = _require(config, "hidden_size", name)
    layers = _require(config, "num_hidden_layers", name)
    if layers > MAX_LAYERS:
        raise PyserveError(f"{name}: config.json has {layers:,} layers (num_hidden_layers); "
                           f"pyserve sizes models of up to {MAX_LAYERS:,}")
    heads = _require(config, "num_attention_heads", name)
    vocab = _require(config, "vocab_size", name)
    kv_heads = _int(config, "num_key_value_heads", default=heads)
    head_dim = _int(config, "head_dim", default=hidden // heads)
    if head_dim <= 0:
        raise PyserveError(f"{name}: config.json has head_dim {head_dim}; cannot size the model")
    gated_attention = bool(config.get("attn_output_gate"))
    if config.get("kv_lora_rank"):  # DeepSeek's multi-head latent attention
        rope = _int(config, "qk_rope_head_dim")
        nope = _int(config, "qk_nope_head_dim", default=head_dim)
        v_dim = _int(config, "v_head_dim", default=head_dim)
        q_lora = _int(config, "q_lora_rank")
        qk = nope + rope
        query_dim = heads * qk
        query = hidden * q_lora + q_lora * heads * qk if q_lora else hidden * heads * qk
        kv_lora = _int(config, "kv_lora_rank")
        windowed = global_ = query + hidden * (kv_lora + rope) \
            + kv_lora * heads * (nope + v_dim) + heads * v_dim * hidden
    else:
        query_dim = heads * head_dim
        windowed = _attention_params(hidden, heads, kv_heads, head_dim, gated_attention)
        # Gemma 4 style: the global layers' own head size and KV heads.
        global_ = _attention_params(
            hidden, heads, _int(config, "num_global_key_value_heads", default=kv_heads),
            _int(config, "global_head_dim", default=head_dim), gated_attention)
    experts = _int(config, *EXPERT_KEYS)
    per_token = _int(config, *_EXPERTS_PER_TOKEN_KEYS, default=1 if experts else 0)
    if experts and not 1 <= per_token <= experts:
        raise PyserveError(f"{name}: config.json routes each token to {per_token} of its "
                           f"{experts} experts; cannot size the model")
    plan = layer_plan(config, layers, bool(experts))
    intermediate = _int(config, "intermediate_size")
    # Llama 4 sizes its dense layers apart from its experts.
    dense_inter = _int(config, "intermediate_size_mlp", default=intermediate)
    # Mixtral-style configs size their experts with intermediate_size.
    expert_inter = _int(config, "moe_intermediate_size", default=intermediate)
    mats = 3 if _gated_mlp(config) else 2  # gate, up and down projections
    one_expert = mats * hidden * expert_inter
    shared_per_layer = 0
    if experts:
        shared_per_layer = hidden * experts  # the router
        shared_per_layer += _int(config, "n_shared_experts") * one_expert
        shared_inter = _int(config, "shared_expert_intermediate_size",
                            "moe_shared_expert_intermediate_size")
        if shared_inter:  # Qwen2-MoE and Nemotron-H: one shared expert of its own width
            shared_per_layer += mats * hidden * shared_inter + hidden
        elif "interleave_moe_layer_step" in config or \
                str(config.get("model_type", "")).startswith(SHARED_EXPERT_TYPES):
            shared_per_layer += one_expert  # Llama 4: one shared expert in every MoE layer
    windows = [layer.window for layer in plan if layer.mixer in ATTENTION]
    linear_layers = sum(1 for layer in plan if layer.mixer == LINEAR)
    mamba_layers = sum(1 for layer in plan if layer.mixer == MAMBA)
    attention = sum(windowed if w else global_ for w in windows)
    if linear_layers:
        attention += linear_layers * _linear_attention(config, hidden, name)[0]
    if mamba_layers:
        attention += mamba_layers * _mamba(config, hidden, name)[0]
    moe_layers = sum(1 for layer in plan if layer.mlp == MOE)
    dense_layers = sum(1 for layer in plan if layer.mlp == DENSE)
    embedding = vocab * hidden
    tied = bool(config.get("tie_word_embeddings", False))
    return ModelSize(
        embedding=embedding,
        lm_head=0 if tied else embedding,
        attention=attention,
        dense_mlp=mats * hidden * dense_inter * dense_layers,
        experts=experts * one_expert * moe_layers,
        shared=shared_per_layer * moe_layers,
        num_experts=experts,
        experts_per_token=per_token,
        layers=layers,
        moe_layers=moe_layers,
        hidden=hidden,
        query_dim=query_dim,
        expert_width=expert_inter if experts else 0,
        attention_windows=tuple(windows),
        linear_layers=linear_layers,
        mamba_layers=mamba_layers,
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
    return WeightFormat(dtype_bytes, linear, f"{method} ({bits})",
                        attention_unquantized=_attention_left_out(qconfig))


# Where quantization configs list the modules they leave in the model's dtype.
_LEFT_OUT_KEYS = ("modules_to_not_convert", "ignore", "ignored_layers", "exclude_modules")


def _attention_left_out(qconfig: dict) -> bool:
    """Whether the quantization config leaves every layer's attention unquantized (gpt-oss:
    ``model.layers.*.self_attn``), not just some numbered layers'."""
    for key in _LEFT_OUT_KEYS:
        names = qconfig.get(key)
        if isinstance(names, list) and any(
                re.search(r"attn|attention", str(n), re.I) and not re.search(r"\.\d+\.", str(n))
                for n in names):
            return True
    return False


def kv_shape(config: dict, size: ModelSize, kv_cache_dtype: str | None,
             fmt: WeightFormat) -> KvShape:
    heads = _int(config, "num_attention_heads", default=1)
    hidden = _int(config, "hidden_size")
    kv_dtype = (kv_cache_dtype or "auto").lower()
    dtype_bytes = 1.0 if kv_dtype.startswith("fp8") else fmt.dtype_bytes
    latent = 0
    if config.get("kv_lora_rank"):
        latent = _int(config, "kv_lora_rank") + _int(config, "qk_rope_head_dim")
    kv_heads = _int(config, "num_key_value_heads", default=heads)
    head_dim = _int(config, "head_dim", default=hidden // max(heads, 1))
    # The layer layout as model_size read it: one entry per softmax-attention layer.
    windows = Counter(w for w in size.attention_windows if w)
    full = sum(1 for w in size.attention_windows if not w)
    # The recurrent / SSM state in the dtype the config asks for (Qwen3.5, Nemotron-H:
    # float32), the convolution state in the model's.
    ssm_dtype = str(config.get("mamba_ssm_dtype") or config.get("mamba_ssm_cache_dtype")
                    or "auto").lower()
    ssm_bytes = _DTYPE_BYTES.get(ssm_dtype, fmt.dtype_bytes)
    state = 0.0
    for count, layer_state in ((size.linear_layers, _linear_attention),
                               (size.mamba_layers, _mamba)):
        if count:
            _, ssm, conv = layer_state(config, hidden, "model")
            state += count * (ssm * ssm_bytes + conv * fmt.dtype_bytes)
    state_layers = size.linear_layers + size.mamba_layers
    return KvShape(layers=full,
                   kv_heads=_int(config, "num_global_key_value_heads", default=kv_heads),
                   head_dim=_int(config, "global_head_dim", default=head_dim),
                   latent_dim=latent, dtype_bytes=dtype_bytes,
                   windowed=tuple(sorted(windows.items())), window_kv_heads=kv_heads,
                   window_head_dim=head_dim, state_bytes=state, state_layers=state_layers)


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
        layer_linear = size.attention * fmt.attention_bytes \
            + (size.dense_mlp + size.shared) * fmt.linear_bytes
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
        if self.kv_bytes_per_token <= 0:  # no layer keeps tokens: bounded by nothing here
            return NO_TOKEN_LIMIT if self.kv_bytes > 0 else 0
        return max(0, min(NO_TOKEN_LIMIT, int(self.kv_bytes / self.kv_bytes_per_token)))

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
    length = memory.max_model_len
    # Tokens of KV cache count at the max length's rate: windowed layers and fixed state
    # spread over a max-length sequence (the same as bytes_per_token for plain models).
    per_token = memory.kv.bytes_per_sequence(length, tp, pp) / length \
        if length and memory.kv.hybrid else memory.kv.bytes_per_token(tp, pp)
    return Fit(gpu_bytes=gpu_bytes, utilization=utilization,
               weights=memory.weights_per_gpu(tp, pp, dp, ep), overhead=RUNTIME_OVERHEAD_BYTES,
               kv_bytes_per_token=per_token, max_model_len=length)
