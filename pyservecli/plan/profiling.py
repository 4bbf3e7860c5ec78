"""Profiler command lines and settings shared by ``launch``, ``offline`` and ``bench``. Pure: no
imports of the profilers themselves (``run.tools`` checks that they are installed)."""

from __future__ import annotations

import json
from pathlib import Path

# CUDA-profiler capture range: only what runs between cudaProfilerStart/Stop is recorded
# (vLLM's /start_profile and /stop_profile with the cuda profiler, or pyserve offline's
# measured run); "repeat" allows several ranges in one report.
NSYS_PROFILE = ["nsys", "profile", "--trace=cuda,nvtx,osrt,cudnn,cublas",
                "--trace-fork-before-exec=true", "--cuda-graph-trace=node",
                "--capture-range=cudaProfilerApi", "--capture-range-end=repeat",
                "--force-overwrite=true"]

# nsys writes its report after the profiled program exits; big captures take minutes.
NSYS_FINALIZE_GRACE_S = 600.0


def nsys_prefix(report: Path) -> list[str]:
    """``nsys profile ... -o REPORT`` to put in front of a command (REPORT gets .nsys-rep)."""
    return [*NSYS_PROFILE, f"--output={report}"]


def torch_profiler_settings(directory: Path | str) -> dict:
    """vLLM's profiler config for the torch profiler writing into ``directory``.

    vLLM's own end-of-capture table (``key_averages`` over every event, stacks included) is
    turned off: on an H100 it was still being computed more than a minute after a 32 MB trace
    of 32 requests had been written, and ``pyserve trace summarize`` gives the table from the
    trace file whenever it is wanted. Python stacks are off too (vLLM records them by
    default): on the CPU engine they made a 7 s capture a 39 MB trace that took minutes to
    write, and they are Python frames, which ``trace summarize`` leaves out. Whoever wants
    them passes vLLM's own ``--profiler-config`` instead of ``--profile``."""
    return {"profiler": "torch", "torch_profiler_dir": str(directory),
            "torch_profiler_dump_cuda_time_total": False, "torch_profiler_with_stack": False}


def torch_profiler_config(directory: Path) -> str:
    """The same as the value of ``vllm serve --profiler-config``."""
    return json.dumps(torch_profiler_settings(directory))
