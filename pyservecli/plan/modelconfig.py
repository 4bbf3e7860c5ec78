"""Read a local model directory's config.json and check it against a topology, before launch."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pyservecli.errors import PyserveError
from pyservecli.plan.memory import EXPERT_KEYS, ModelMemory, model_memory
from pyservecli.plan.topology import Topology
from pyservecli.plan.vllm_args import MemorySettings

# org/name or name, as the hub spells repository ids.
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def is_repo_id(name: str) -> bool:
    """Whether ``name`` is spelled as a hub repository id (and cannot climb out of a cache)."""
    return bool(_REPO_ID.fullmatch(name)) and ".." not in name


def looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model in (".", "..")


def resolve_model_dir(model: str) -> Path | None:
    """The local directory MODEL names, or None for a hub id (checked by vLLM at start).
    Anything else is refused here, before a node starts a server that could only fail."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PyserveError(f"model directory {model} has no config.json")
        return path.resolve()
    if looks_like_path(model) or path.exists():
        raise PyserveError(f"model directory {model} does not exist")
    if not is_repo_id(model):
        raise PyserveError(f"model {model!r} is neither a model directory nor a Hugging Face "
                           "hub id (ORG/NAME or NAME: letters, digits, '.', '_', '-')")
    return None


# The fields the checks read: each must be a whole number when present.
_COUNT_KEYS = ("num_attention_heads", "num_key_value_heads", "num_hidden_layers", *EXPERT_KEYS,
               "linear_num_key_heads", "linear_num_value_heads", "mamba_num_heads",
               "full_attention_interval", "interleave_moe_layer_step")


def load_config(model_dir: Path) -> dict:
    return load_config_file(model_dir / "config.json")


def load_config_file(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise PyserveError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    except json.JSONDecodeError as exc:
        raise PyserveError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise PyserveError(f"{path} is not a model config (a JSON object)")
    # Multimodal models keep the language model's shape in text_config (InternVL: llm_config,
    # DeepSeek-VL2: language_config).
    text = next((config[key] for key in ("text_config", "llm_config", "language_config")
                 if isinstance(config.get(key), dict)), None)
    if text is not None:
        # The whole model's architecture names what vLLM loads, not its language model's.
        top = {"architectures": config["architectures"]} if "architectures" in config else {}
        config = {**config, **text, **top}
    for key in _COUNT_KEYS:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise PyserveError(f"{path}: {key} must be a whole number, got {value!r}")
    return config


def check_model_fits(config: dict, topology: Topology, name: str = "model") -> None:
    """Raise PyserveError naming the numbers when the model cannot be split this way."""
    tp, pp, ep = topology.tp, topology.pp, topology.ep
    heads = config.get("num_attention_heads")
    if heads is not None and heads % tp:
        raise PyserveError(f"{name} has {heads} attention heads, which TP {tp} does not divide")
    kv_heads = config.get("num_key_value_heads", heads)
    if kv_heads:
        # vLLM shards KV heads when TP divides them and replicates them when TP is a multiple.
        if (tp <= kv_heads and kv_heads % tp) or (tp > kv_heads and tp % kv_heads):
            raise PyserveError(
                f"{name} has {kv_heads} KV heads; TP {tp} must divide them or be a multiple "
                "of them"
            )
    # Linear-attention (Gated DeltaNet) and Mamba-2 layers split their heads over TP too.
    for key, what in (("linear_num_key_heads", "linear-attention key heads"),
                      ("linear_num_value_heads", "linear-attention value heads"),
                      ("mamba_num_heads", "Mamba heads"), ("mamba_n_heads", "Mamba heads")):
        count = config.get(key)
        if isinstance(count, int) and count > 0 and count % tp:
            raise PyserveError(f"{name} has {count} {what}, which TP {tp} does not divide")
    groups = (config.get("n_groups") if config.get("mamba_num_heads") else
              config.get("mamba_n_groups") if config.get("mamba_n_heads") else None)
    if isinstance(groups, int) and groups > 1 and groups % tp:
        raise PyserveError(f"{name} has {groups} Mamba groups, which TP {tp} does not divide")
    layers = config.get("num_hidden_layers")
    if layers is not None and layers < pp:
        raise PyserveError(f"{name} has {layers} layers, fewer than PP {pp}")
    if ep:
        experts = next((config[k] for k in EXPERT_KEYS if config.get(k)), None)
        if experts is None:
            raise PyserveError(f"--ep needs a mixture-of-experts model; {name} has no experts")
        if experts % ep:
            raise PyserveError(
                f"{name} has {experts} routed experts, which EP {ep} (DP x TP) does not divide"
            )


def _count(params: int) -> str:
    return f"{params / 1e9:.1f} B" if params >= 1e9 else f"{params / 1e6:.1f} M"


@dataclass(frozen=True)
class ModelFacts:
    """What is known about the model: its config (None: not found) and its memory needs."""

    name: str
    config: dict | None
    memory: ModelMemory | None
    source: str  # where the config came from, or why it was not read

    def summary(self) -> str:
        if self.memory is None:
            return f"model {self.name}: {self.source}"
        size, mem = self.memory.size, self.memory
        kind = (f"MoE, {size.num_experts} experts, {size.experts_per_token} per token, "
                f"{_count(size.active)} active" if size.is_moe else "dense")
        return (f"model {self.name}: {_count(size.total)} parameters ({kind}), "
                f"{mem.fmt.name}: {mem.weight_bytes / 1e9:.3g} GB of weights; KV cache "
                f"{mem.kv.describe()}; {self.source}")



def read_facts(name: str, config_path: Path | None, source: str,
               settings: MemorySettings | None = None) -> ModelFacts:
    """The model's config and memory needs; ``config_path`` None: not found (``source`` says
    why). A config pyserve cannot size (no hidden_size, an unknown quantization) is still
    checked for its splits; its memory is not."""
    if config_path is None:
        return ModelFacts(name, None, None, source)
    config = load_config_file(config_path)
    settings = settings or MemorySettings()
    try:
        memory = model_memory(config, name, dtype=settings.dtype,
                              quantization=settings.quantization,
                              kv_cache_dtype=settings.kv_cache_dtype,
                              max_model_len=settings.max_model_len)
    except PyserveError as exc:  # checked for splits, not sized: say so, plan on
        return ModelFacts(name, config, None, f"{source}; memory not checked: {exc}")
    return ModelFacts(name, config, memory, source)
