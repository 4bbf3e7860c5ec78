"""``pyserve sweep``: many benchmark points against one server, or against several servers.

Bench-parameter sweeps (rate, concurrency, input, output) reuse one running server: given by
``--host`` or started once through ``pyserve launch``. Serve-parameter sweeps give several
``--serve`` lines; each is launched through ``pyserve launch`` (any number of nodes, inside the
same allocation), benchmarked, and stopped before the next. Result paths depend only on the
server label, suite and point, so ``--resume`` skips what is done.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .benchsuites import BenchPoint, _random, pick_points
from .errors import PyserveError
from .procs import stop_launcher

SWEEPS: dict[str, tuple[BenchPoint, ...]] = {
    "rate": tuple(_random("rate", 512, 256, r) for r in (1, 2, 4, 8, 16, 32, "inf")),
    "concurrency": tuple(_random("concurrency", 512, 256, "inf", conc=c)
                         for c in (1, 2, 4, 8, 16, 32, 64, 128)),
    "input": tuple(_random("input", i, 128, "inf")
                   for i in (128, 256, 512, 1024, 2048, 4096, 8192, 16384)),
    "output": tuple(_random("output", 512, o, "inf") for o in (64, 128, 256, 512, 1024, 2048)),
}


def sweep_points(suites: list[str], num_prompts: int | None = None) -> list[BenchPoint]:
    return pick_points(SWEEPS, suites, num_prompts, what="sweep suite")


def serve_label(serve_args: list[str]) -> str:
    """A stable directory name for one server configuration."""
    text = " ".join(serve_args[1:]) or "default"
    label = re.sub(r"[^A-Za-z0-9.=_-]+", "_", text.replace("--", "")).strip("_")
    return label[:120] or "default"


def _launch_error(log_path: Path) -> str | None:
    """The launcher's own account of why it stopped: its one-line error (a taken port, a bad
    plan), else the cause it found in a failed rank's log, else which rank exited."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for prefix in ("pyserve: error: ", "pyserve: cause on ", "pyserve: node "):
        found = [line.removeprefix("pyserve: ").removeprefix("error: ") for line in lines
                 if line.startswith(prefix)]
        if found:
            return found[-1]
    return None


@contextmanager
def launched_server(serve_args: list[str], workspace: Path, port: int, log_path: Path,
                    ready_timeout: float = 1800) -> Iterator[str]:
    """``pyserve launch SERVE_ARGS`` as a context: yields the base URL once READY, stops the
    server (every rank) on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pyservecli.cli", "launch", *serve_args,
            "--workspace", str(workspace), "--port", str(port),
            "--ready-timeout", str(ready_timeout)]
    with open(log_path, "a") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True, env=os.environ.copy())
    try:
        base = None
        for line in proc.stdout:
            if line.startswith("READY "):
                base = line.split()[1].removesuffix("/v1")
                break
        if base is None:
            proc.wait()
            reason = _launch_error(log_path)
            raise PyserveError(f"pyserve launch {shlex.join(serve_args)} exited "
                               f"{proc.returncode} before READY"
                               + (f" ({reason})" if reason else "") + f"; see {log_path}")
        yield base
    finally:
        stop_launcher(proc, grace=180)


def overhead(wall_s: float, results) -> dict:
    """How much of the sweep's wall time was not spent inside benchmark runs (every point that
    ran counts, valid or not: its time was spent either way)."""
    bench_s = sum(r.result.get("duration", 0) or 0 for r in results
                  if r.status in ("ok", "invalid"))
    return {"wall_s": round(wall_s, 2), "bench_s": round(bench_s, 2),
            "overhead_pct": round(100 * (wall_s - bench_s) / bench_s, 2) if bench_s else None}
