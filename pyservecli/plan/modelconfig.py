"""Read a local model directory's config.json and check it against a topology, before launch."""

from __future__ import annotations

import json
from pathlib import Path

from pyservecli.errors import PyserveError
from pyservecli.plan.topology import Topology

_EXPERT_KEYS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")


def looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model in (".", "..")


def resolve_model_dir(model: str) -> Path | None:
    """The local directory MODEL names, or None for a hub id (checked by vLLM at start)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PyserveError(f"model directory {model} has no config.json")
        return path.resolve()
    if looks_like_path(model) or path.exists():
        raise PyserveError(f"model directory {model} does not exist")
    return None


# The fields the checks read: each must be a whole number when present.
_COUNT_KEYS = ("num_attention_heads", "num_key_value_heads", "num_hidden_layers", *_EXPERT_KEYS)


def load_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise PyserveError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    except json.JSONDecodeError as exc:
        raise PyserveError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise PyserveError(f"{path} is not a model config (a JSON object)")
    # Multimodal models keep the language model's shape in text_config.
    text = config.get("text_config")
    if isinstance(text, dict):
        config = {**config, **text}
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
    layers = config.get("num_hidden_layers")
    if layers is not None and layers < pp:
        raise PyserveError(f"{name} has {layers} layers, fewer than PP {pp}")
    if ep:
        experts = next((config[k] for k in _EXPERT_KEYS if config.get(k)), None)
        if experts is None:
            raise PyserveError(f"--ep needs a mixture-of-experts model; {name} has no experts")
        if experts % ep:
            raise PyserveError(
                f"{name} has {experts} routed experts, which EP {ep} (DP x TP) does not divide"
            )
