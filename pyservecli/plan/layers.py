"""What each decoder layer of a config.json holds: its token mixer (full, sliding-window or
chunked attention, linear attention, a Mamba mixer, or none) and its MLP (dense, routed experts,
or none). Pure.

Models past plain transformers mix layer kinds, and the kinds cost memory differently: a
full-attention layer keeps every token's keys and values, a sliding-window (Gemma, gpt-oss) or
chunked (Llama 4) one only its window's, a linear-attention (Qwen3-Next, Qwen3.5: Gated
DeltaNet) or Mamba (Nemotron-H, Jamba) layer a fixed state per sequence; and only some layers
hold experts (Llama 4 Maverick: every other one). The layouts are read the way Hugging Face's
config classes derive them: ``layer_types`` when the config lists it, else the fields each
family uses (``hybrid_override_pattern``, ``full_attention_interval``, ``attn_layer_period``,
``no_rope_layers`` with ``attention_chunk_size``, ``sliding_window_pattern``), else every layer
is full attention with a dense MLP or experts.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL, SLIDING, CHUNKED, LINEAR, MAMBA, NO_MIXER = (
    "full", "sliding", "chunked", "linear", "mamba", "none")
ATTENTION = (FULL, SLIDING, CHUNKED)
DENSE, MOE, NO_MLP = "dense", "moe", "none"

# The families whose layout follows from their model_type alone: without layer_types, Gemma 2
# and gpt-oss alternate sliding and global layers; Llama 4 has a shared expert in every MoE
# layer. The fingerprint keeps the model_type of these (plan.perfkey).
ALTERNATING_TYPES = ("gemma2", "gpt_oss")
SHARED_EXPERT_TYPES = ("llama4",)
MODEL_TYPE_LAYOUTS = ALTERNATING_TYPES + SHARED_EXPERT_TYPES
# Nemotron-H's pattern: one letter per layer, each layer one block.
_PATTERN = {"M": (MAMBA, NO_MLP), "*": (FULL, NO_MLP), "-": (NO_MIXER, DENSE),
            "E": (NO_MIXER, MOE)}
# Hugging Face's layer_types names, by what their cache keeps.
_TYPE_WORDS = (("linear", LINEAR), ("mamba", MAMBA), ("sliding", SLIDING),
               ("chunk", CHUNKED), ("local", SLIDING))


@dataclass(frozen=True)
class Layer:
    mixer: str  # FULL | SLIDING | CHUNKED | LINEAR | MAMBA | NO_MIXER
    window: int  # tokens a SLIDING / CHUNKED layer attends to (0: the whole context)
    mlp: str  # DENSE | MOE | NO_MLP


def config_int(config: dict, *keys: str, default: int = 0) -> int:
    """The first of ``keys`` the config gives as a whole number (not a bool), else
    ``default``: configs spell one field several ways, and hostile ones give it any type."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default



def _mixers(config: dict, layers: int) -> list[tuple[str, int]] | None:
    """(mixer, window) per layer, or None where the config says every layer is full
    attention."""
    sliding = config_int(config, "sliding_window")
    chunk = config_int(config, "attention_chunk_size")
    types = config.get("layer_types")
    if types is not None:
        if not (isinstance(types, list) and len(types) == layers
                and all(isinstance(t, str) for t in types)):
            return None  # not the list its config class would accept: every layer full
        out = []
        for name in types:
            kind = next((k for word, k in _TYPE_WORDS if word in name.lower()), FULL)
            window = sliding if kind == SLIDING else chunk if kind == CHUNKED else 0
            # A window the config does not give is the whole context, as in vLLM.
            out.append((kind if kind not in (SLIDING, CHUNKED) or window else FULL, window))
        return out
    interval = config_int(config, "full_attention_interval")
    if interval > 0 and config.get("linear_num_value_heads"):  # Qwen3-Next, Qwen3.5
        return [(FULL, 0) if (i + 1) % interval == 0 else (LINEAR, 0) for i in range(layers)]
    period = config_int(config, "attn_layer_period")
    if period > 0:  # Jamba: attention every PERIOD layers, Mamba between
        offset = config_int(config, "attn_layer_offset")
        return [(FULL, 0) if i % period == offset else (MAMBA, 0) for i in range(layers)]
    if chunk > 0:  # Llama 4: chunked attention with RoPE, full attention on the NoPE layers
        rope = config.get("no_rope_layers")
        if not (isinstance(rope, list) and len(rope) == layers):
            every = config_int(config, "no_rope_layer_interval", default=4) or 4
            rope = [int((i + 1) % every != 0) for i in range(layers)]
        return [(CHUNKED, chunk) if flag else (FULL, 0) for flag in rope]
    if sliding > 0 and config.get("use_sliding_window") is not False:
        pattern = config_int(config, "sliding_window_pattern")
        if not pattern and str(config.get("model_type", "")).startswith(ALTERNATING_TYPES):
            pattern = 2
        if pattern > 0:  # Gemma 2 / 3, Cohere 2: every PATTERN-th layer is global
            return [(SLIDING, sliding) if (i + 1) % pattern else (FULL, 0)
                    for i in range(layers)]
        return [(SLIDING, sliding)] * layers  # Mistral 7B v0.1, Phi-3: every layer
    return None


def _moe_layers(config: dict, layers: int) -> set[int]:
    """Which layers hold routed experts (a model with experts)."""
    listed = config.get("moe_layers")
    if isinstance(listed, list) and listed and all(isinstance(i, int) for i in listed):
        return {i for i in listed if 0 <= i < layers}
    step = config_int(config, "interleave_moe_layer_step")
    if step > 0:  # Llama 4
        return set(range(step - 1, layers, step))
    if "first_k_dense_replace" in config or "moe_layer_freq" in config:  # DeepSeek, GLM
        first = config_int(config, "first_k_dense_replace")
        freq = max(1, config_int(config, "moe_layer_freq", default=1))
        return {i for i in range(layers) if i >= first and i % freq == 0}
    period = config_int(config, "expert_layer_period")
    if period > 0:  # Jamba
        offset = config_int(config, "expert_layer_offset")
        return {i for i in range(layers) if i % period == offset}
    only_dense = config.get("mlp_only_layers")
    only_dense = set(only_dense) if isinstance(only_dense, list) and all(
        isinstance(i, int) for i in only_dense) else set()
    step = max(1, config_int(config, "decoder_sparse_step", default=1))  # Qwen MoE
    return {i for i in range(layers) if i not in only_dense and (i + 1) % step == 0}


def layer_plan(config: dict, layers: int, has_experts: bool) -> tuple[Layer, ...]:
    """Every decoder layer's mixer and MLP."""
    pattern = config.get("hybrid_override_pattern")
    if isinstance(pattern, str) and len(pattern) == layers and set(pattern) <= set(_PATTERN):
        return tuple(Layer(_PATTERN[c][0], 0, _PATTERN[c][1] if has_experts or
                           _PATTERN[c][1] != MOE else DENSE) for c in pattern)
    mixers = _mixers(config, layers) or [(FULL, 0)] * layers
    moe = _moe_layers(config, layers) if has_experts else set()
    return tuple(Layer(mixer, window, MOE if i in moe else DENSE)
                 for i, (mixer, window) in enumerate(mixers))
