"""The allocation as data (``Cluster``) and SLURM hostlist expansion. Pure: detecting the
allocation from the environment is ``run.cluster.detect``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyservecli.errors import PyserveError
from pyservecli.plan.gpus import GpuInfo


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[str, ...]
    gpus_per_node: int | None  # None: no GPU found (the CPU engine)
    job_id: str
    in_slurm: bool
    gpu_source: str  # where gpus_per_node came from, for messages
    gpu: GpuInfo | None = None  # memory per GPU and its spec (None: not looked at)


# More hosts than any allocation has: a typo such as gpu[0-99999999] is refused, not expanded.
MAX_HOSTS = 65536
# A host name pyserve will put into scripts, srun and DNS look-ups: letters, digits, '-', '_'
# and dots between non-empty labels. Anything else (quotes, $, spaces, newlines) is refused.
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
# A job id: SLURM's are digits (array tasks: 123_4); pyserve's local ids are local-DATE-PID.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_host_name(name: str) -> str:
    if len(name) > 253 or not _HOST_NAME.fullmatch(name):
        raise PyserveError(f"host name {name!r} is not valid (letters, digits, '-', '_', and "
                           "dots between labels)")
    return name


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise PyserveError(f"job id {job_id!r} is not valid (letters, digits, '.', '_', '-')")
    return job_id


def expand_hostlist(expr: str) -> list[str]:
    """Expand a SLURM hostlist such as ``gpu[01-03,7],login-a`` into host names.

    Zero padding is kept (``n[08-10]`` -> n08 n09 n10) and several bracket groups in one name
    expand as a product, as ``scontrol show hostnames`` does. Every name is checked
    (``check_host_name``); an empty list and more than MAX_HOSTS names are refused.
    """
    hosts: list[str] = []
    for item in _split_top_level(expr.strip()):
        if item:
            hosts.extend(_expand_one(item, MAX_HOSTS - len(hosts)))
    if not hosts:
        raise PyserveError(f"the node list {expr!r} names no host")
    return [check_host_name(host) for host in hosts]


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


def _expand_one(item: str, room: int) -> list[str]:
    """The names ``item`` expands to; refused when they would be more than ``room``."""
    match = re.search(r"\[([^\]]*)\]", item)
    if not match:
        if room < 1:
            raise PyserveError(f"the node list expands to more than {MAX_HOSTS} hosts")
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
            if int(hi) - int(lo) + 1 > room:
                raise PyserveError(f"the node list expands to more than {MAX_HOSTS} hosts "
                                   f"({piece!r} in {item!r})")
            width = len(lo)
            values = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
        else:
            raise PyserveError(f"malformed hostlist range {piece!r} in {item!r}")
        for value in values:
            names.extend(_expand_one(prefix + value + suffix, room - len(names)))
    return names
