"""GPU power, utilisation and memory sampled once a second while a benchmark point runs.

On the server's nodes when they are reachable: inside the server's SLURM allocation one
``srun --overlap`` step streams ``nvidia-smi -lms`` from every server node; otherwise
``nvidia-smi`` runs on the benchmark host (right when it is the server's node). Where no GPU is
visible the report says unavailable, never zero.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

from pyservecli.run.procs import srun_per_node

QUERY = "--query-gpu=index,power.draw,utilization.gpu,memory.used"


def parse_row(line: str, node: str = "") -> dict | None:
    """One nvidia-smi CSV row (index, power.draw, utilization.gpu, memory.used)."""
    parts = [p.strip() for p in line.split(",")]
    try:
        gpu = int(parts[0])
        return {"gpu": f"{node}:{gpu}" if node else gpu, "watts": float(parts[1]),
                "util": float(parts[2]), "mem_mib": float(parts[3])}
    except (IndexError, ValueError):
        return None


def local_argv(gpu_ids: str | None = None) -> list[str]:
    """nvidia-smi on this host; ``gpu_ids`` (CUDA_VISIBLE_DEVICES syntax: indices or UUIDs)
    limits it to the server's GPUs, so idle neighbours do not dilute the per-GPU figures."""
    ids = [g.strip() for g in (gpu_ids or "").split(",") if g.strip()]
    return ["nvidia-smi", QUERY, "--format=csv,noheader,nounits",
            *([f"--id={','.join(ids)}"] if ids else [])]


def read_sample(run=subprocess.run, gpu_ids: str | None = None) -> list[dict] | None:
    try:
        out = run(local_argv(gpu_ids), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    rows = [row for row in map(parse_row, out.stdout.strip().splitlines()) if row]
    return rows or None


def summarize(samples: list[list[dict]], output_tok_s: float | None) -> dict:
    if not samples:
        return {"available": False, "reason": "no GPU power samples (no nvidia-smi or no GPU)"}
    gpus = sorted({row["gpu"] for sample in samples for row in sample})
    watts = [row["watts"] for sample in samples for row in sample]
    avg_w = sum(watts) / len(watts)
    total_kw = avg_w * len(gpus) / 1000
    return {
        "available": True,
        "samples": len(samples),
        "gpus": len(gpus),
        "avg_watts_per_gpu": round(avg_w, 1),
        "avg_util_pct": round(sum(r["util"] for s in samples for r in s) / len(watts), 1),
        "max_mem_mib": max(r["mem_mib"] for s in samples for r in s),
        "output_tok_s_per_kw": round(output_tok_s / total_kw, 1) if output_tok_s and total_kw
        else None,
    }


def remote_argv(job_id: str, nodes: list[str], interval: float = 1.0) -> list[str]:
    """One srun step that streams nvidia-smi from every server node, lines labelled by node."""
    return [*srun_per_node(nodes, f"--jobid={job_id}", "--label"), "nvidia-smi", QUERY,
            "--format=csv,noheader,nounits", f"-lms={int(interval * 1000)}"]


def window_summary(samples: list[list[dict]], stamps: list[float], start: float, end: float,
                   output_tok_s: float | None) -> dict:
    """``summarize`` of the samples taken while requests were measured, [start, end] in wall
    time: the client's start-up and teardown around them are idle GPU time that would dilute
    W and tok/s per kW (seen on 2x H200: 35-50 % of a point's samples were outside it)."""
    inside = [s for s, t in zip(samples, stamps, strict=True) if start <= t <= end]
    report = summarize(inside, output_tok_s)
    window = {"window_s": round(end - start, 3), "samples_in_window": len(inside),
              "samples_total": len(samples)}
    if not inside and samples:
        return {"available": False, "reason": f"no power sample inside the measured window of "
                f"{end - start:.1f} s ({len(samples)} outside it)", **window}
    return {**report, **window} if report.get("available") else report


class PowerSampler:
    """Context manager: samples in a thread; ``samples`` holds lists of rows (one list per
    local tick, or one row per streamed line from the server nodes)."""

    def __init__(self, interval: float = 1.0, remote: list[str] | None = None,
                 gpu_ids: str | None = None):
        self.interval = interval
        self.gpu_ids = gpu_ids
        self.samples: list[list[dict]] = []
        self.stamps: list[float] = []  # wall-clock time of each sample (time.time())
        self.remote = remote
        self.enabled = remote is not None or shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._stream if remote else self._loop,
                                        daemon=True)

    def _stream(self):
        try:
            self._proc = subprocess.Popen(self.remote, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True,
                                          start_new_session=True)
        except OSError:
            return
        if self._stop.is_set():  # the point ended before the step started
            self._proc.terminate()
        for line in self._proc.stdout:
            node, _, rest = line.partition(": ")
            row = parse_row(rest, node.strip()) if rest else None
            if row:
                self.stamps.append(time.time())
                self.samples.append([row])

    def _loop(self):
        while not self._stop.is_set():
            start = time.monotonic()
            sample = read_sample(gpu_ids=self.gpu_ids)
            if sample:
                self.stamps.append(time.time())
                self.samples.append(sample)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - start)))

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # srun forwards it; the step ends on every node
        if self.enabled:
            self._thread.join(timeout=15)
