"""Read the latest launch record of a workspace, and ask the endpoint whether it answers.

For SLURM jobs the scheduler's view is added: ``squeue`` while the job is queued or running,
``sacct`` once it has left the queue (where accounting is enabled).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import requests

from pyservecli.errors import PyserveError
from pyservecli.run.jobfiles import heartbeat_timeout
from pyservecli.run.procs import pid_runs, tool_output


def slurm_state(job_id: str) -> str | None:
    """RUNNING, PENDING, ... from squeue; COMPLETED, CANCELLED, ... from sacct; else None."""
    if not job_id.isdigit():
        return None
    state = tool_output(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if state:
        return state.splitlines()[0]
    state = tool_output(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"])
    if state:
        return state.splitlines()[0].split()[0]
    # Gone from the queue and no accounting to ask: say so rather than guess how it ended.
    return "NOT_IN_QUEUE" if shutil.which("squeue") else None


# A launch (or fleet) in these states has a launcher to answer for it: the one notion of "live"
# of status, stop, bench's provenance. ("serving": what fleets wrote after a
# replica's death or restart before they kept "ready".)
LIVE_STATES = ("starting", "ready", "serving")


def read_record(path: Path) -> dict:
    """A launch record, or a clear error for a missing, corrupt or foreign file."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PyserveError(f"no launch recorded at {path}") from None
    except (OSError, ValueError) as exc:
        raise PyserveError(f"{path} is not a launch record ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("endpoint"), str):
        raise PyserveError(f"{path} is not a launch record (no endpoint)")
    for field_, types in _RECORD_FIELDS.items():
        if field_ in record and record[field_] is not None and \
                not isinstance(record[field_], types):
            raise PyserveError(f"{path} is not a launch record ({field_} is "
                               f"{type(record[field_]).__name__})")
    roles = record.get("roles")
    if roles is not None and (not isinstance(roles.get("router", {}), dict)
                              or not isinstance(roles.get("replicas", []), list)
                              or not all(isinstance(r, dict) for r in roles.get("replicas", []))):
        raise PyserveError(f"{path} is not a launch record (its roles are malformed)")
    if isinstance(record.get("startup"), dict) and not all(
            isinstance(e, dict) and isinstance(e.get("phases_s", {}), dict)
            for e in record["startup"].values()):
        raise PyserveError(f"{path} is not a launch record (its startup ledger is malformed)")
    if not all(isinstance(h, str) for h in record.get("heartbeats") or []):
        raise PyserveError(f"{path} is not a launch record (heartbeats are not paths)")
    return record


# A record's fields and their types, checked on reading (a hand-edited record is one clear
# error, not a traceback).
_RECORD_FIELDS = {"state": str, "launch_id": (str, int), "job_id": (str, int),
                  "launcher_pid": int, "launcher_host": str, "heartbeat": str,
                  "heartbeats": list, "record": str, "log_dir": str, "roles": dict,
                  "startup": dict, "served_model_name": str, "models": list}


def find_record(workspace: Path, launch: str | None = None) -> Path:
    """latest.json, or the record of the launch (or SLURM job) ``launch`` in the workspace."""
    workspace = Path(workspace)
    if launch is None:
        path = workspace / "latest.json"
        if not path.exists():
            raise PyserveError(f"no launch recorded in {workspace} (no latest.json)")
        return path
    if not launch or "/" in launch or launch.startswith("."):
        raise PyserveError(f"{launch!r} is not a launch or job id")
    for exact in (workspace / "logs" / launch / "launch.json",
                  workspace / f"fleet-{launch}.json"):
        if exact.is_file():
            return exact
    # A job id: its newest launch or fleet.
    found = record_files(workspace, f"{glob_escape(launch)}-*")
    if not found:
        raise PyserveError(f"no launch {launch!r} recorded in {workspace}")
    return found[-1]


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


def record_files(workspace: Path, ids: str = "*") -> list[Path]:
    """The records of the workspace's launches and fleets whose ids match the glob ``ids``,
    oldest first. A fleet's servers have records of their own under logs/ (``fleet_server``);
    they are the fleet's, and its record stands for them."""
    workspace = Path(workspace)
    fleets = list(workspace.glob(f"fleet-{ids}.json"))
    launches = [f for f in (workspace / "logs").glob(f"{ids}/launch.json")
                if not _is_fleet_server(f)]
    return sorted(fleets + launches, key=lambda f: f.stat().st_mtime)


def _is_fleet_server(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("fleet_server") is True
    except (OSError, ValueError, AttributeError):
        return False


def live_launches(workspace: Path) -> list[dict]:
    """Every launch and fleet of the workspace that is live (``is_live``), newest last."""
    live = []
    for path in record_files(workspace):
        try:
            record = read_record(path)
        except PyserveError:
            continue
        if is_live(record):
            live.append(record)
    return live


def launcher_alive(record: dict) -> bool | None:
    """Whether the launch's launcher still runs: its heartbeat file fresh (the launcher touches
    it every few seconds from any host), and on this host its PID too; None when the record
    says neither (older records)."""
    heartbeat = record.get("heartbeat")
    fresh = None
    if isinstance(heartbeat, str):
        try:
            fresh = time.time() - Path(heartbeat).stat().st_mtime < heartbeat_timeout()
        except OSError:
            fresh = False
    pid = record.get("launcher_pid")
    if record.get("launcher_host") == socket.gethostname() and isinstance(pid, int) and \
            not pid_runs(pid):
        return False  # exited (or a zombie waiting for its parent): its heartbeat is no word
    return fresh


def is_live(record: dict) -> bool:
    """The launch is starting or serving and its launcher is still there."""
    return record.get("state") in LIVE_STATES and launcher_alive(record) is not False


def latest_status(workspace: Path, launch: str | None = None) -> dict:
    record = read_record(find_record(workspace, launch))
    base = record["endpoint"].removesuffix("/v1")
    try:
        answering = requests.get(f"{base}/health", timeout=3).status_code == 200
    except requests.RequestException:
        answering = False
    info = {**record, "answering": answering}
    alive = launcher_alive(record)
    if alive is not None:
        info["launcher_alive"] = alive
    if record.get("state") in LIVE_STATES and alive is False:
        # Killed without stopping: its nodes stop themselves once the heartbeat is stale.
        info["state"] = f"launcher gone (was {record.get('state')})"
    state = slurm_state(str(record.get("job_id", "")))
    if state is not None:
        info["slurm_state"] = state
    return info


def stop_launch(workspace: Path, launch: str | None = None, grace: float = 120.0,
                say=print) -> dict:
    """``pyserve stop``: SIGTERM the launch's launcher (it stops every rank) and wait for its
    record to say it ended; a launcher that is gone or elsewhere gets its heartbeat expired,
    so its nodes stop their servers themselves within seconds."""
    record = read_record(find_record(workspace, launch))
    # Follow this launch's own record: latest.json may be another launch's by the time it ends.
    path = Path(record["record"]) if isinstance(record.get("record"), str) \
        else Path(record.get("log_dir", "")) / "launch.json"
    if record.get("state") not in LIVE_STATES:
        ended = f"launch {record.get('launch_id', record.get('job_id'))} already ended " \
                f"({record.get('state')})"
        others = [r for r in live_launches(workspace)
                  if r.get("launch_id") != record.get("launch_id")] if launch is None else []
        if others:
            # latest.json is the newest launch's; an older one side by side still runs.
            names = ", ".join(str(r.get("launch_id")) for r in others)
            raise PyserveError(f"the latest {ended}; still live in {workspace}: {names} "
                               "(pyserve stop LAUNCH_ID)")
        say(f"pyserve: {ended}")
        return record
    pid = record.get("launcher_pid")
    here = record.get("launcher_host") == socket.gethostname()
    if here and isinstance(pid, int) and launcher_alive(record):
        os.kill(pid, signal.SIGTERM)
        say(f"pyserve: asked launcher {pid} to stop every rank")
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            record = read_record(path)
            if record.get("state") not in LIVE_STATES:
                # The record says it ended a moment before the launcher exits: wait for that,
                # so a `pyserve status` right after shows the launcher gone (#26).
                while time.monotonic() < deadline and pid_runs(pid):
                    time.sleep(0.1)
                state = record.get("state")
                say("pyserve: stopped" if state == "stopped" else f"pyserve: ended ({state})")
                return record
            time.sleep(0.5)
        raise PyserveError(f"launcher {pid} did not stop within {grace:.0f}s; see "
                           f"{record.get('log_dir')}")
    heartbeats = record.get("heartbeats") or [record.get("heartbeat")]
    if not all(isinstance(h, str) for h in heartbeats):
        raise PyserveError("the launch's launcher is not on this host and its record has no "
                           "heartbeat to expire; stop it with scancel or on its host")
    for heartbeat in heartbeats:  # a fleet's: one per replica
        try:
            os.utime(heartbeat, (0, 0))
        except FileNotFoundError:
            pass  # that replica's launch never got as far as its files
    # The nodes' watchers look at the heartbeat every few seconds (node.sh.j2).
    say(f"pyserve: the launcher is {'gone' if here else 'on another host'}; expired its "
        "heartbeat, the nodes stop their servers within seconds")
    return record
