"""Read the latest launch record of a workspace, and ask the endpoint whether it answers.

For SLURM jobs the scheduler's view is added: ``squeue`` while the job is queued or running,
``sacct`` once it has left the queue (where accounting is enabled).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import requests

from pyservecli.errors import PyserveError


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def slurm_state(job_id: str) -> str | None:
    """RUNNING, PENDING, ... from squeue; COMPLETED, CANCELLED, ... from sacct; else None."""
    if not job_id.isdigit():
        return None
    state = _run(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if state:
        return state.splitlines()[0]
    state = _run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
    if state:
        return state.splitlines()[0].split()[0]
    # Gone from the queue and no accounting to ask: say so rather than guess how it ended.
    return "NOT_IN_QUEUE" if shutil.which("squeue") else None


def latest_status(workspace: Path) -> dict:
    record_path = Path(workspace) / "latest.json"
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        raise PyserveError(f"no launch recorded in {workspace} (no latest.json)") from None
    base = record["endpoint"].removesuffix("/v1")
    try:
        answering = requests.get(f"{base}/health", timeout=3).status_code == 200
    except requests.RequestException:
        answering = False
    info = {**record, "answering": answering}
    state = slurm_state(str(record.get("job_id", "")))
    if state is not None:
        info["slurm_state"] = state
    return info
