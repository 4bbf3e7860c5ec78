"""What ``pyserve offline`` measures, outside the engine: the prompts every rank builds (the same
list on each DP rank, each taking its share), and the merge of the ranks' per-request samples
into one result with a report in `vllm bench serve`'s layout."""

from __future__ import annotations

import json
import random
from pathlib import Path

from pyservecli.errors import PyserveError


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "get_added_vocab", None)
    if added:
        ids.update(added().values())
    return ids


def random_token_prompts(tokenizer, count: int, input_len: int, output_len: int,
                         seed: int = 0) -> list[dict]:
    """``count`` distinct prompts of exactly ``input_len`` tokens, drawn from the ordinary
    (non-special) vocabulary. The reference's "random" prompts were one sequence repeated;
    each prompt here starts from its own offset into the vocabulary and its own random stream."""
    vocab = len(tokenizer)
    special = _special_ids(tokenizer)
    allowed = [i for i in range(vocab) if i not in special]
    rng = random.Random(seed)
    prompts, seen = [], set()
    while len(prompts) < count:
        ids = [allowed[rng.randrange(len(allowed))] for _ in range(input_len)]
        key = tuple(ids)
        if key in seen:  # only possible for tiny vocabularies or lengths
            if len(seen) >= len(allowed) ** input_len:
                raise PyserveError(f"cannot make {count} distinct prompts of {input_len} tokens")
            continue
        seen.add(key)
        prompts.append({"prompt_token_ids": ids, "output_len": output_len})
    return prompts


def sharegpt_prompts(path: str, tokenizer, count: int, max_model_len: int,
                     output_len: int | None, seed: int = 0) -> list[dict]:
    """The first human turn of each conversation; output length from the reply that follows
    (or ``output_len``); pairs that do not fit ``max_model_len`` are dropped."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PyserveError(f"cannot read dataset {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PyserveError(f"dataset {path} is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise PyserveError(f"dataset {path}: expected a list of conversations (ShareGPT)")
    random.Random(seed).shuffle(data)
    prompts = []
    for entry in data:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not turns:
            continue
        human = next((i for i, t in enumerate(turns) if t.get("from") == "human"), None)
        if human is None:
            continue
        prompt_ids = tokenizer.encode(turns[human].get("value", ""))
        reply = turns[human + 1].get("value", "") if human + 1 < len(turns) else ""
        out_len = output_len or len(tokenizer.encode(reply))
        if len(prompt_ids) < 4 or out_len < 4 or len(prompt_ids) + out_len > max_model_len:
            continue
        prompts.append({"prompt_token_ids": prompt_ids, "output_len": out_len})
        if len(prompts) == count:
            break
    if not prompts:
        raise PyserveError(f"dataset {path}: no conversation fits max-model-len {max_model_len}")
    return prompts


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _stats(values: list[float], scale: float = 1000.0) -> dict:
    if not values:
        return {}
    return {"mean": sum(values) / len(values) * scale,
            **{f"p{q}": percentile(values, q) * scale for q in (50, 90, 99)}}


def merge_samples(rank_files: list[dict]) -> dict:
    """One result from every DP rank's per-request samples: each request once, percentiles of
    the merged samples (never means of per-rank means), TPOT and ITL kept apart."""
    requests: dict[str, dict] = {}
    for rank_file in rank_files:
        for sample in rank_file["samples"]:
            requests.setdefault(sample["id"], sample)
    samples = list(requests.values())
    if not samples:
        raise PyserveError("no rank reported any finished request")
    start = min(f["wall_start"] for f in rank_files)
    end = max(f["wall_start"] + f["duration_s"] for f in rank_files)
    duration = end - start
    output_tokens = sum(s["output_len"] for s in samples)
    input_tokens = sum(s["input_len"] for s in samples)
    tpots = [(s["e2e_s"] - s["ttft_s"]) / (s["output_len"] - 1)
             for s in samples if s["output_len"] > 1]
    itls = [gap for s in samples for gap in s["itl_s"]]
    return {
        "completed": len(samples),
        "dp_ranks": len(rank_files),
        "duration_s": duration,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(samples) / duration,
        "output_throughput": output_tokens / duration,
        "total_token_throughput": (input_tokens + output_tokens) / duration,
        "ttft_ms": _stats([s["ttft_s"] for s in samples]),
        "tpot_ms": _stats(tpots),
        "itl_ms": _stats(itls),
        "e2el_ms": _stats([s["e2e_s"] for s in samples]),
        "input_lens": sorted({s["input_len"] for s in samples}),
        "output_lens": sorted({s["output_len"] for s in samples}),
        "distinct_prompts": len({s["prompt_sha1"] for s in samples}),
    }


def format_report(result: dict) -> str:
    """A table in the layout of `vllm bench serve`'s."""
    def row(label, value, fmt="{:.2f}"):
        return f"{label:<40}{fmt.format(value) if value is not None else 'n/a':>10}"

    lines = ["{s:{c}^{n}}".format(s=" Offline Benchmark Result ", n=50, c="="),
             row("Successful requests:", result["completed"], "{}"),
             row("DP ranks:", result["dp_ranks"], "{}"),
             row("Benchmark duration (s):", result["duration_s"]),
             row("Total input tokens:", result["total_input_tokens"], "{}"),
             row("Total generated tokens:", result["total_output_tokens"], "{}"),
             row("Request throughput (req/s):", result["request_throughput"]),
             row("Output token throughput (tok/s):", result["output_throughput"]),
             row("Total Token throughput (tok/s):", result["total_token_throughput"])]
    for key, title in (("ttft_ms", "Time to First Token"),
                       ("tpot_ms", "Time per Output Token (excl. 1st token)"),
                       ("itl_ms", "Inter-token Latency"), ("e2el_ms", "End-to-end Latency")):
        lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        short = key.split("_")[0].upper()
        for stat in ("mean", "p50", "p90", "p99"):
            name = "Median" if stat == "p50" else stat.capitalize() if stat == "mean" \
                else stat.upper()
            lines.append(row(f"{name} {short} (ms):", result[key].get(stat)))
    lines.append("=" * 50)
    return "\n".join(lines)


def read_rank_files(out_dir: Path, dp: int) -> list[dict]:
    files = [out_dir / f"samples-dp{k}.json" for k in range(dp)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise PyserveError(f"ranks did not report: {', '.join(missing)} missing in {out_dir}")
    return [json.loads(f.read_text()) for f in files]
