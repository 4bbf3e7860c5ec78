"""Config-only model directories: a real architecture's config.json plus a generated tokenizer.

Served with ``--load-format dummy`` they give a real engine and a real HTTP server with random
weights, without downloading anything. The tokenizer is byte-level BPE (every byte is a token, so
any text, JSON or regex output can be spelled), filled with word tokens up to the config's full
``vocab_size`` so that every id the model samples decodes, and carrying Qwen's special tokens at
the ids the config names.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from pyservecli.errors import PyserveError

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def builtin_models() -> list[str]:
    root = resources.files("pyservecli") / "models"
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


def builtin_config(name: str) -> dict:
    if name not in builtin_models():
        raise PyserveError(f"unknown model {name!r}; built in: {', '.join(builtin_models())}")
    path = resources.files("pyservecli") / "models" / name / "config.json"
    return json.loads(path.read_text())


def build_tokenizer_json(vocab_size: int, bos_id: int) -> str:
    """tokenizer.json text for a byte-level BPE with ``vocab_size`` tokens."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    except ImportError:
        raise PyserveError(
            "creating a model directory needs the 'tokenizers' package (it comes with vLLM)"
        ) from None
    if bos_id + len(SPECIAL_TOKENS) > vocab_size or bos_id < 256:
        raise PyserveError(f"special tokens at {bos_id} do not fit a vocabulary of {vocab_size}")
    vocab: dict[str, int] = {}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    filler = 0
    while len(vocab) < bos_id:
        vocab[f"\u0120w{filler}"] = len(vocab)  # \u0120 is byte-level for a leading space
        filler += 1
    special_ids = {}
    for token in SPECIAL_TOKENS:
        special_ids[token] = len(vocab)
        vocab[token] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"\u0120w{filler}"] = len(vocab)
        filler += 1
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in SPECIAL_TOKENS])
    return tokenizer.to_str()


# Written into every directory pyserve creates: --force replaces only such a directory.
MARKER = ".pyserve-model"


def create_model_dir(name: str, out_dir: str | Path, force: bool = False) -> Path:
    """Write a servable config-only directory for built-in model ``name`` into ``out_dir``.
    ``force`` replaces an existing directory only if pyserve made it (it holds MARKER)."""
    config = builtin_config(name)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PyserveError(f"{out} exists and is not a directory")
    # The tokenizer first: a missing dependency must not cost the old directory.
    vocab_size, bos = config["vocab_size"], config["bos_token_id"]
    tokenizer_json = build_tokenizer_json(vocab_size, bos)
    if out.exists() and any(out.iterdir()):
        if not force:
            if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
                try:
                    existing = json.loads((out / "config.json").read_text())
                except ValueError:
                    existing = None
                if existing == config:
                    return out
            raise PyserveError(f"{out} exists and is not empty (use --force to replace it)")
        if not (out / MARKER).is_file():
            raise PyserveError(f"{out} was not made by pyserve model create (no {MARKER}); "
                               "--force replaces only pyserve's own model directories")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(f"{name}\n")
    eos = config["eos_token_id"]
    if eos != bos + 2:
        raise PyserveError(f"{name}: expected eos_token_id = bos_token_id + 2 (Qwen layout)")
    (out / "tokenizer.json").write_text(tokenizer_json)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": config.get("max_position_embeddings", 4096),
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    generation = {"bos_token_id": bos, "eos_token_id": [eos, bos]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
