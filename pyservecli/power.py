"""GPU power, utilisation and memory sampled once a second while a benchmark point runs.

Uses ``nvidia-smi`` on the benchmark host (the server's GPUs when both run on one node). Where
no GPU is visible the report says unavailable, never zero.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

QUERY = "--query-gpu=index,power.draw,utilization.gpu,memory.used"


def read_sample(run=subprocess.run) -> list[dict] | None:
    try:
        out = run(["nvidia-smi", QUERY, "--format=csv,noheader,nounits"], capture_output=True,
                  text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    rows = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            rows.append({"gpu": int(parts[0]), "watts": float(parts[1]),
                         "util": float(parts[2]), "mem_mib": float(parts[3])})
        except (IndexError, ValueError):
            continue
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


class PowerSampler:
    """Context manager: samples in a thread; ``samples`` holds one list of rows per second."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.samples: list[list[dict]] = []
        self.enabled = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            start = time.monotonic()
            sample = read_sample()
            if sample:
                self.samples.append(sample)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - start)))

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=15)
