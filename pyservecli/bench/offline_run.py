"""Run an offline plan: every node's torchrun (one srun step inside SLURM), progress while it
runs, a clean stop on Ctrl+C, then the merged result with provenance. A measurement, so in
bench/ (which starts its processes through run/, never the other way round)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from pyservecli.bench.offline import merge_samples, read_rank_files
from pyservecli.errors import PyserveError
from pyservecli.plan.offline import OfflinePlan


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "starting"
    return lines[-1][-150:] if lines else "starting"


def srun_argv(plan: OfflinePlan, plan_path: Path) -> list[str]:
    """One srun step, one task per node; each task execs its node's torchrun."""
    from pyservecli.run.procs import srun_per_node

    return [*srun_per_node(plan.nodes, "--kill-on-bad-exit=1"), sys.executable, "-m",
            "pyservecli.workers.offline_node", str(plan_path)]


def execute(plan: OfflinePlan, say: Callable[[str], None]) -> dict:
    """Run every rank, wait, merge; returns the result (also written to result.json)."""
    import os
    import signal
    import time

    from pyservecli.bench.provenance import offline_provenance
    from pyservecli.plan.profiling import NSYS_FINALIZE_GRACE_S
    from pyservecli.run.procs import start_command

    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("samples-dp*.json"):
        stale.unlink()
    (out / "config.json").write_text(json.dumps(plan.config, indent=2) + "\n")
    plan_path = out / "plan.json"
    plan_path.write_text(json.dumps(plan.as_dict(), indent=2) + "\n")
    env = dict(os.environ, PYSERVE_JOB_ID=plan.job_id, PYTHONUNBUFFERED="1")
    argv = srun_argv(plan, plan_path) if plan.in_slurm else plan.node_argv[0]
    log = out / "offline.log"
    say(f"pyserve offline: {plan.topology.world_size} rank(s) on {len(plan.nodes)} node(s), "
        f"{plan.procs_per_node} per node; log {log}")
    proc = start_command("offline", argv, log, env)
    grace = NSYS_FINALIZE_GRACE_S if plan.nsys else 60.0
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)
        say("pyserve offline: stopping every rank")
        proc.stop(grace=grace)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    next_report = started + 30
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            if time.monotonic() >= next_report:
                next_report += 30
                say(f"[{time.monotonic() - started:7.1f}s] {_last_line(log)}")
        code = proc.poll()
        if proc.leftovers():
            proc.stop(grace=grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        raise PyserveError("stopped before the ranks finished; partial results not merged")
    if code != 0:
        from pyservecli.run.readiness import last_error

        tail = last_error(log.read_text(errors="replace").splitlines()) or "(see the log)"
        raise PyserveError(f"the ranks exited with status {code}: {tail}; log {log}")
    result = merge_samples(read_rank_files(out, plan.topology.dp))
    result["config"] = {k: v for k, v in plan.config.items() if k != "out_dir"}
    result["provenance"] = offline_provenance(plan.node_argv, plan.topology.as_dict(),
                                              plan.job_id)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
