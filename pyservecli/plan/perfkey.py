"""What identifies a measured point in the performance store: the model's *shape* (not its name
or where it was loaded from), the vLLM flags that change speed, and the topology. Pure.

Two checkpoints of the same architecture and dimensions run at the same speed, whether served
from a local directory, a hub id or a config-only directory with dummy weights: the fingerprint
is a hash of the config keys the memory model and the estimator read (and the architecture,
which picks vLLM's kernels), plus the weight and KV-cache formats.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pyservecli.plan.layers import MODEL_TYPE_LAYOUTS
from pyservecli.plan.memory import EXPERT_KEYS, ModelMemory, model_memory

# Config keys that change a model's speed (read by plan.memory's sizing and the estimator).
SHAPE_CONFIG_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "vocab_size", "intermediate_size", "moe_intermediate_size",
    *EXPERT_KEYS, "num_experts_per_tok", "experts_per_token", "moe_topk", "num_selected_experts",
    "n_shared_experts", "shared_expert_intermediate_size", "kv_lora_rank", "q_lora_rank",
    "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "first_k_dense_replace",
    "moe_layer_freq", "mlp_only_layers", "decoder_sparse_step", "tie_word_embeddings",
    "torch_dtype", "dtype", "quantization_config",
)
# Config keys of layer layouts past plain transformers (``plan.layers``): windows, linear
# attention, Mamba, interleaved experts. Kept only when set, so that the fingerprints of
# models without them stay what they were.
LAYOUT_CONFIG_KEYS = (
    "layer_types", "sliding_window", "sliding_window_pattern", "attention_chunk_size",
    "no_rope_layers", "no_rope_layer_interval", "interleave_moe_layer_step", "moe_layers",
    "intermediate_size_mlp", "full_attention_interval", "linear_num_key_heads",
    "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
    "linear_conv_kernel_dim", "hybrid_override_pattern", "mamba_num_heads", "mamba_head_dim",
    "ssm_state_size", "n_groups", "conv_kernel", "mamba_expand", "mamba_d_state",
    "mamba_d_conv", "mamba_dt_rank", "attn_layer_period", "attn_layer_offset",
    "expert_layer_period", "expert_layer_offset", "moe_shared_expert_intermediate_size",
    "mlp_hidden_act", "attn_output_gate", "global_head_dim", "num_global_key_value_heads",
    "mamba_ssm_dtype", "mamba_ssm_cache_dtype", "mamba_n_heads", "mamba_d_head",
    "mamba_n_groups",
)

# vLLM flags that change speed (not only memory or naming). Their values go into a point's key;
# everything else (ports, names, --load-format, --max-model-len within the point's length) does
# not. --load-format is left out on purpose: dummy and real weights run the same kernels (MoE
# routing of real weights can be less even; the store records which was served).
SPEED_FLAGS = (
    "--quantization", "-q", "--dtype", "--kv-cache-dtype", "--max-num-seqs",
    "--max-num-batched-tokens", "--enable-chunked-prefill", "--no-enable-chunked-prefill",
    "--enforce-eager", "--compilation-config", "-O", "--speculative-config",
    "--enable-prefix-caching", "--no-enable-prefix-caching", "--async-scheduling",
    "--no-async-scheduling", "--block-size", "--cuda-graph-sizes", "--all2all-backend",
    "--enable-eplb", "--enable-dbo", "--attention-backend", "--api-server-count",
    "--gpu-memory-utilization",
)
_SPEED_SWITCHES = {"--enable-chunked-prefill", "--no-enable-chunked-prefill", "--enforce-eager",
                   "--enable-prefix-caching", "--no-enable-prefix-caching",
                   "--async-scheduling", "--no-async-scheduling", "--enable-eplb",
                   "--enable-dbo"}
_ALIASES = {"-q": "--quantization"}


@dataclass(frozen=True)
class ModelShape:
    """A model's speed-relevant description: ``fields`` (JSON-safe) and their fingerprint."""

    fields: dict
    fingerprint: str
    family: str  # "dense", "moe" or "moe-mla": the class the store's corrections pool over

    def memory(self) -> ModelMemory:
        """The memory model of the shape (the estimator's input), from the stored fields."""
        config = dict(self.fields["config"])
        return model_memory(config, self.fields.get("architecture") or "model",
                            quantization=self.fields.get("quantization"),
                            kv_cache_dtype=self.fields.get("kv_cache_dtype"),
                            dtype=self.fields.get("dtype"))

    def describe(self) -> str:
        size = self.memory().size
        kind = (f"MoE {size.num_experts}x top-{size.experts_per_token}"
                if size.is_moe else "dense")
        return (f"{self.fields.get('architecture') or '?'} {size.total / 1e9:.1f}B {kind}, "
                f"{self.fields.get('weights') or '?'}")


def model_shape(config: dict, *, dtype: str | None = None, quantization: str | None = None,
                kv_cache_dtype: str | None = None) -> ModelShape:
    """The shape of a model from its config.json and the vLLM settings that change its
    format. The same config gives the same fingerprint wherever it was read from."""
    kept = {key: config[key] for key in SHAPE_CONFIG_KEYS if key in config}
    kept |= {key: config[key] for key in LAYOUT_CONFIG_KEYS if config.get(key) is not None}
    if "sliding_window" in kept and "use_sliding_window" in config:
        kept["use_sliding_window"] = config["use_sliding_window"]
    if str(config.get("model_type", "")).startswith(MODEL_TYPE_LAYOUTS):
        kept["model_type"] = config["model_type"]
    architectures = config.get("architectures")
    arch = architectures[0] if isinstance(architectures, list) and architectures else \
        config.get("model_type")
    memory = model_memory(config, "model", dtype=dtype, quantization=quantization,
                          kv_cache_dtype=kv_cache_dtype)
    fields = {"architecture": arch, "config": kept, "weights": memory.fmt.name,
              "kv_bytes": memory.kv.dtype_bytes,
              "dtype": dtype, "quantization": quantization, "kv_cache_dtype": kv_cache_dtype}
    hashed = {k: v for k, v in fields.items() if k not in ("dtype", "quantization",
                                                            "kv_cache_dtype")}
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]
    size = memory.size
    family = "dense" if not size.is_moe else ("moe-mla" if memory.kv.latent_dim else "moe")
    return ModelShape(fields, digest, family)


def shape_from_json(text: str) -> ModelShape:
    fields = json.loads(text)
    base = model_shape(fields["config"] | ({"architectures": [fields["architecture"]]}
                                           if fields.get("architecture") else {}),
                       dtype=fields.get("dtype"), quantization=fields.get("quantization"),
                       kv_cache_dtype=fields.get("kv_cache_dtype"))
    return base


def speed_flags(argv: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The speed-changing vLLM flags of a server's argv (or pass-through args), canonical:
    ``{"--max-num-seqs": "128", "--enforce-eager": ""}``."""
    found: dict[str, str] = {}
    args = list(argv)
    index = 0
    while index < len(args):
        arg = str(args[index])
        flag, value = (arg.split("=", 1) + [None])[:2] if arg.startswith("--") else (arg, None)
        flag = _ALIASES.get(flag.replace("_", "-") if flag.startswith("--") else flag, flag)
        if flag in SPEED_FLAGS:
            if flag in _SPEED_SWITCHES:
                found[flag] = ""
            elif value is not None:
                found[flag] = value
            elif index + 1 < len(args):
                found[flag] = str(args[index + 1])
                index += 1
        index += 1
    return dict(sorted(found.items()))


def flags_key(flags: dict[str, str]) -> str:
    return json.dumps(flags, sort_keys=True, separators=(",", ":"))
