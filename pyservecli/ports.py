"""Port allocation: derived from the job id so two jobs on one node do not collide."""

from __future__ import annotations

import socket
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from .errors import PyserveError

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


def is_port_free(port: int, host: str = "") -> bool:
    """True when nothing listens on ``port`` on this host.

    SO_REUSEADDR as the servers themselves bind (uvicorn, ZMQ): connections of a server that
    just stopped linger in TIME_WAIT and must not count as "in use"; a listener still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def allocate(
    job_id: str, api_port: int, is_free: Callable[[int], bool] | None = None
) -> Ports:
    """Pick the job's internal ports (skipping taken ones in its window) and check the API port."""
    is_free = is_port_free if is_free is None else is_free
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


def main(argv: list[str] | None = None) -> int:
    """``python -m pyservecli.ports PORT...``: exit 3 naming the ports in use on this node.

    Run by the launcher on the head node (through srun) before any rank starts, because only
    the node itself can tell whether its ports are free.
    """
    import sys

    ports = [int(p) for p in (sys.argv[1:] if argv is None else argv)]
    busy = [p for p in ports if not is_port_free(p)]
    if busy:
        print(" ".join(map(str, busy)))
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
