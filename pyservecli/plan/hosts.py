"""The allocation as data (``Cluster``) and SLURM hostlist expansion. Pure: detecting the
allocation from the environment is ``run.cluster.detect``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyservecli.errors import PyserveError


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[str, ...]
    gpus_per_node: int | None  # None: no GPU found (the CPU engine)
    job_id: str
    in_slurm: bool
    gpu_source: str  # where gpus_per_node came from, for messages


def expand_hostlist(expr: str) -> list[str]:
    """Expand a SLURM hostlist such as ``gpu[01-03,7],login-a`` into host names.

    Zero padding is kept (``n[08-10]`` -> n08 n09 n10) and several bracket groups in one name
    expand as a product, as ``scontrol show hostnames`` does.
    """
    hosts: list[str] = []
    for item in _split_top_level(expr.strip()):
        if item:
            hosts.extend(_expand_one(item))
    return hosts


def _split_top_level(expr: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in expr:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise PyserveError(f"malformed hostlist {expr!r}: unbalanced ']'")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise PyserveError(f"malformed hostlist {expr!r}: unbalanced '['")
    parts.append("".join(current))
    return parts


def _expand_one(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if not match:
        return [item]
    prefix, suffix = item[: match.start()], item[match.end() :]
    names = []
    for piece in match.group(1).split(","):
        if re.fullmatch(r"\d+", piece):
            values = [piece]
        elif re.fullmatch(r"\d+-\d+", piece):
            lo, hi = piece.split("-")
            if int(hi) < int(lo):
                raise PyserveError(f"malformed hostlist range {piece!r} in {item!r}")
            width = len(lo)
            values = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
        else:
            raise PyserveError(f"malformed hostlist range {piece!r} in {item!r}")
        for value in values:
            names.extend(_expand_one(prefix + value + suffix))
    return names
