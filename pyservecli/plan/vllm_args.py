"""Recognise vLLM's own spellings of the settings pyserve owns, in the pass-through arguments.

Users copy commands from vLLM's docs, so ``-tp 8``, ``--tensor-parallel-size=8`` and
``--enable-expert-parallel`` must mean the same as pyserve's ``--tp 8`` and ``--ep``. Flags whose
values pyserve computes from the topology (ranks, addresses, ports) are refused, because a second
value would silently contradict the plan. Pure functions; no vLLM import.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyservecli.errors import PyserveError

# canonical setting -> spellings vLLM accepts for it
_VALUE_FLAGS = {
    "tp": ("--tensor-parallel-size", "-tp"),
    "pp": ("--pipeline-parallel-size", "-pp"),
    "dp": ("--data-parallel-size", "-dp"),
}
_EP_ON = ("--enable-expert-parallel", "-ep")
_EP_OFF = ("--no-enable-expert-parallel",)

# Flags pyserve derives from the plan; a user value would fight the computed one.
COMPUTED_FLAGS = {
    "--data-parallel-size-local": "DP ranks per node come from the topology",
    "-dpl": "DP ranks per node come from the topology",
    "--data-parallel-start-rank": "each node's first DP rank comes from the topology",
    "-dpr": "each node's first DP rank comes from the topology",
    "--data-parallel-address": "the head address comes from the allocation",
    "-dpa": "the head address comes from the allocation",
    "--data-parallel-rpc-port": "ports are derived from the job id",
    "-dpp": "ports are derived from the job id",
    "--data-parallel-backend": "use pyserve's --backend",
    "-dpb": "use pyserve's --backend",
    "--headless": "pyserve makes every node but the head headless",
    "--nnodes": "the node count comes from the allocation",
    "--node-rank": "node ranks come from the allocation",
    "--master-addr": "the head address comes from the allocation",
    "--master-port": "ports are derived from the job id",
    "-n": "the node count comes from the allocation",
    "-r": "node ranks come from the allocation",
    "--port": "use pyserve's --port",
}

# Secrets must not travel on a command line (visible in ps, sacct, logs).
SECRET_FLAGS = {
    "--api-key": "use --api-key-file FILE; the key then reaches vLLM through VLLM_API_KEY",
}


@dataclass(frozen=True)
class ParallelFlags:
    """Parallel settings found among vLLM's own flags (None: not given there)."""

    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: bool | None = None


def _split_eq(arg: str) -> tuple[str, str | None]:
    if arg.startswith("-") and "=" in arg:
        flag, value = arg.split("=", 1)
        return flag, value
    return arg, None


def _normalise(flag: str) -> str:
    """vLLM's parser reads ``--api_key`` as ``--api-key``."""
    return "--" + flag[2:].replace("_", "-") if flag.startswith("--") else flag


# Long flags pyserve owns or refuses: vLLM's parser also accepts any unambiguous prefix of them
# (``--api-ke``, ``--tensor-parallel``), which must not slip past the checks below.
def _owned_long_flags() -> list[str]:
    spellings = [s for names in _VALUE_FLAGS.values() for s in names] + list(COMPUTED_FLAGS) \
        + list(SECRET_FLAGS)
    return [s for s in spellings if s.startswith("--")]


def canonical_flag(flag: str) -> str:
    """The flag vLLM would read ``flag`` as, among those pyserve owns or refuses: underscores
    as dashes, an abbreviation expanded. Other flags come back normalised only; an abbreviation
    of several owned flags is refused."""
    flag = _normalise(flag)
    if not flag.startswith("--") or len(flag) < 3:
        return flag
    owned = _owned_long_flags()
    if flag in owned or flag in _EP_ON or flag in _EP_OFF:
        return flag
    matches = sorted({o for o in owned if o.startswith(flag)})
    if len(matches) > 1:
        raise PyserveError(f"{flag} is an abbreviation of {', '.join(matches)}; spell it out")
    return matches[0] if matches else flag


def _positive_int(flag: str, value: str | None) -> int:
    if value is None:
        raise PyserveError(f"{flag} needs a value")
    try:
        number = int(value)
    except ValueError:
        raise PyserveError(f"{flag} expects a whole number, got {value!r}") from None
    if number < 1:
        raise PyserveError(f"{flag} must be at least 1, got {number}")
    return number


def split_parallel_flags(args: list[str] | tuple[str, ...]) -> tuple[ParallelFlags, list[str]]:
    """Take vLLM's parallel flags out of ``args``; return them and the remaining arguments.

    Raises PyserveError for computed or secret flags, and for a setting given twice with
    different values.
    """
    found: dict[str, int | bool] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        written, inline = _split_eq(args[i])
        flag = canonical_flag(written)
        matched = None
        for name, spellings in _VALUE_FLAGS.items():
            if flag in spellings:
                matched = name
        if matched is not None:
            if inline is None:
                value = args[i + 1] if i + 1 < len(args) else None
                i += 2
            else:
                value = inline
                i += 1
            number = _positive_int(written, value)
            if matched in found and found[matched] != number:
                raise PyserveError(
                    f"{written} given twice with different values ({found[matched]} and {number})"
                )
            found[matched] = number
            continue
        if flag in _EP_ON or flag in _EP_OFF:
            if inline is not None:
                raise PyserveError(f"{written} takes no value, got {written}={inline}")
            found["ep"] = flag in _EP_ON
            i += 1
            continue
        if flag in SECRET_FLAGS:
            raise PyserveError(
                f"{written} would put a secret on the command line: {SECRET_FLAGS[flag]}"
            )
        if flag in COMPUTED_FLAGS:
            raise PyserveError(f"{written} is set by pyserve ({COMPUTED_FLAGS[flag]})")
        rest.append(args[i])
        i += 1
    return ParallelFlags(**found), rest


def merge_setting(name: str, pyserve_value, vllm_value):
    """One value for a setting given as a pyserve option and/or a vLLM flag."""
    if pyserve_value is not None and vllm_value is not None and pyserve_value != vllm_value:
        raise PyserveError(
            f"--{name} {pyserve_value} contradicts the vLLM flag for the same setting "
            f"({vllm_value}); give it once"
        )
    return pyserve_value if pyserve_value is not None else vllm_value


def option_value(args: list[str] | tuple[str, ...], *spellings: str) -> str | None:
    """The value of the last occurrence of a pass-through option, e.g. --served-model-name."""
    value = None
    for i, arg in enumerate(args):
        flag, inline = _split_eq(arg)
        if _normalise(flag) in spellings:
            if inline is not None:
                value = inline
            elif i + 1 < len(args):
                value = args[i + 1]
    return value


def option_given(args: list[str] | tuple[str, ...], flag: str, shortest: int = 0) -> bool:
    """Whether ``flag`` is among ``args`` in any spelling vLLM's parser reads as it: underscores,
    ``=VALUE``, or a prefix of at least ``shortest`` characters (argparse's abbreviations)."""
    for arg in args:
        given = _normalise(_split_eq(arg)[0])
        if given == flag or (shortest and len(given) >= shortest and given.startswith("--")
                             and flag.startswith(given)):
            return True
    return False


def engine_kwargs(args: list[str] | tuple[str, ...]) -> dict:
    """vLLM CLI flags (``--max-model-len 512 --enforce-eager``) as ``LLM(...)`` keyword
    arguments for ``pyserve offline``: dashes to underscores, numbers and JSON values parsed,
    a flag without a value is True and ``--no-x`` is ``x=False``."""
    import json

    kwargs: dict = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            raise PyserveError(f"unexpected argument {arg!r}; engine options look like "
                               "--name VALUE")
        name, value = _split_eq(arg)
        if value is None and index + 1 < len(args) and not args[index + 1].startswith("--"):
            value = args[index + 1]
            index += 1
        index += 1
        key = name[2:].replace("-", "_")
        if value is None:
            if key.startswith("no_"):
                kwargs[key[3:]] = False
            else:
                kwargs[key] = True
            continue
        try:
            kwargs[key] = json.loads(value)
        except ValueError:
            kwargs[key] = value
    return kwargs


@dataclass(frozen=True)
class MemorySettings:
    """The pass-through flags that change how much memory a server needs."""

    dtype: str | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    revision: str | None = None


def _human_int(flag: str, text: str) -> int | None:
    """vLLM's ``--max-model-len``: 8192, 32k (x1000), 32K (x1024), 1m / 1M; -1 or auto: None."""
    text = text.strip()
    if text in ("-1", "auto"):
        return None
    scale = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2}.get(text[-1:], 1)
    digits = text[:-1] if scale != 1 else text
    try:
        value = float(digits) * scale
    except ValueError:
        raise PyserveError(f"{flag} {text!r} is not a token count") from None
    if value < 1:
        raise PyserveError(f"{flag} {text!r} must be at least 1")
    return int(value)


def memory_settings(args: list[str] | tuple[str, ...]) -> MemorySettings:
    max_len = option_value(args, "--max-model-len")
    utilization = option_value(args, "--gpu-memory-utilization")
    util = None
    if utilization is not None:
        try:
            util = float(utilization)
        except ValueError:
            util = -1.0
        if not 0 < util <= 1:
            raise PyserveError(f"--gpu-memory-utilization {utilization!r} must be a number in "
                               "(0, 1]")
    return MemorySettings(
        dtype=option_value(args, "--dtype"),
        quantization=option_value(args, "--quantization", "-q"),
        kv_cache_dtype=option_value(args, "--kv-cache-dtype"),
        max_model_len=None if max_len is None else _human_int("--max-model-len", max_len),
        gpu_memory_utilization=util,
        revision=option_value(args, "--revision"),
    )
