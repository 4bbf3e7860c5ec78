"""Port allocation: derived from the job id so two jobs on one node do not collide."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from pyservecli.errors import PyserveError

_BASE, _WINDOWS, _WINDOW = 20000, 2000, 16  # ports 20000..51999, 16 per job


@dataclass(frozen=True)
class Ports:
    api: int  # the OpenAI-compatible HTTP server (--port)
    dp_rpc: int  # --data-parallel-rpc-port (rpc backend)
    master: int  # --master-port (mp backend across nodes)
    ray: int  # Ray GCS port (ray backend)


def job_window(job_id: str) -> range:
    """The 16 ports that belong to this job id."""
    number = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    start = _BASE + (number % _WINDOWS) * _WINDOW
    return range(start, start + _WINDOW)


def allocate(job_id: str, api_port: int, is_free: Callable[[int], bool]) -> Ports:
    """Pick the job's internal ports (skipping taken ones in its window) and check the API port.
    ``is_free`` asks the node (``run.portprobe.is_port_free`` here; always True for a plan made
    for elsewhere, whose head checks its own ports at launch)."""
    if not 1 <= api_port <= 65535:
        raise PyserveError(f"--port must be between 1 and 65535, got {api_port}")
    if not is_free(api_port):
        raise PyserveError(f"port {api_port} is already in use on this host; choose another --port")
    chosen: list[int] = []
    for port in job_window(job_id):
        if port != api_port and is_free(port):
            chosen.append(port)
        if len(chosen) == 3:
            return Ports(api=api_port, dp_rpc=chosen[0], master=chosen[1], ray=chosen[2])
    window = job_window(job_id)
    raise PyserveError(f"no free ports left in this job's range {window.start}-{window.stop - 1}")


# pyserve offline's torchrun rendezvous port: the fifth of the job's window, which a launch's
# allocation (the first three free ports after the API port) leaves alone.
OFFLINE_RENDEZVOUS_INDEX = 4


def offline_rendezvous_port(job_id: str) -> int:
    return job_window(job_id)[OFFLINE_RENDEZVOUS_INDEX]
