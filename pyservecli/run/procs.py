"""Process control, in one place: start node entrypoints, watch them, stop what we started.

Locally each entrypoint runs in a new session, so every process it spawns (vLLM's API server,
engine cores, workers) carries that session id; stopping signals exactly those processes and
nothing else on the machine. Inside SLURM the entrypoints run as one ``srun`` step and SLURM's
process tracking does the same job on every node.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after the parenthesised command name: state ppid pgrp session ..."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 3 else None


def pid_runs(pid: int) -> bool:
    """Whether process ``pid`` runs: a zombie (ended, its parent not told yet) counts as gone;
    one of another user's that cannot be read counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"


def session_members(sid: int) -> list[int]:
    """PIDs whose session id is ``sid`` (Linux /proc); the leader included while alive."""
    members = []
    for entry in os.listdir("/proc"):
        fields = _stat_fields(entry) if entry.isdigit() else None
        if fields and int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


@dataclass
class NodeProcess:
    """One started entrypoint: a local session, or the srun step that runs all nodes."""

    name: str
    popen: subprocess.Popen
    log_path: Path | None = None
    local_session: bool = True
    # Signal only the entrypoint first and let it stop its server its own way (under nsys it
    # sends SIGINT so the report is written); the rest of the session only after the grace.
    leader_first: bool = False
    # The srun step's name (``srun --job-name``), by which its stop finds the step.
    step_name: str | None = None

    def poll(self) -> int | None:
        return self.popen.poll()

    def leftovers(self) -> list[int]:
        return session_members(self.popen.pid) if self.local_session else []

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds for the process and its session, then SIGKILL."""
        if self.local_session and self.leader_first:
            _signal_all([self.popen.pid], signal.SIGTERM)
        elif self.local_session:
            _signal_all(session_members(self.popen.pid) or [self.popen.pid], signal.SIGTERM)
        elif self.popen.poll() is None:
            sent = self._signal_step("TERM")
            # scancel reports an error when part of the step has ended already (a node whose
            # task exited: "Invalid job id specified"), yet the live nodes get the signal: give
            # them a while to stop and clean up before the last resort.
            if sent is None or (not sent and not self._ends_within(min(grace, STEP_SIGNAL_WAIT_S))):
                # srun itself answers SIGTERM by killing the step (SIGKILL): the last resort.
                self.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.popen.poll()
            if self.popen.returncode is not None and not self.leftovers():
                return
            time.sleep(0.2)
        if self.local_session:
            _signal_all(session_members(self.popen.pid), signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _signal_step(self, signame: str) -> bool | None:
        """``scancel --signal`` to every process of this srun step (its dispatch tasks wait for
        their node scripts, which stop their servers gracefully and clean up): True when sent,
        False when scancel failed, None when the step cannot be found."""
        job = os.environ.get("SLURM_JOB_ID", "")
        if not self.step_name or not job.isdigit():
            return None
        listed = tool_output(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"]) or ""
        step = next((fields[0] for fields in map(str.split, listed.splitlines())
                     if fields[1:] == [self.step_name]), None)
        if step is None:
            return None
        return tool_output(["scancel", f"--signal={signame}", step]) is not None

    def _ends_within(self, seconds: float) -> bool:
        try:
            self.popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True


# How long a stop waits for an srun step that scancel could signal only in part (some of its
# tasks had ended) before it falls back to srun's own SIGTERM.
STEP_SIGNAL_WAIT_S = 15.0


def tool_output(argv: list[str]) -> str | None:
    """The output of a scheduler tool (squeue, sacct, scancel), stripped; None when it is not
    installed, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def stop_launcher(popen: subprocess.Popen, grace: float) -> None:
    """Stop a `pyserve launch` started in its own session: SIGTERM lets it stop every rank (its
    srun step included); SIGKILL only after ``grace`` seconds, since that would orphan them."""
    if popen.poll() is not None:
        return
    os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()


def start_local(name: str, script: Path, log_path: Path) -> NodeProcess:
    """Run ``bash script`` here in a new session, stdout and stderr appended to ``log_path``."""
    return start_command(name, ["bash", str(script)], log_path)


def start_command(name: str, argv: list[str], log_path: Path,
                  env: dict[str, str] | None = None) -> NodeProcess:
    """Run ``argv`` here in a new session (stopped as a whole), output appended to ``log_path``;
    an argv starting with ``srun`` is one step on the allocation, stopped through srun."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return NodeProcess(name=name, popen=popen, log_path=log_path,
                       local_session=argv[0] != "srun")


def srun_per_node(nodes: list[str] | tuple[str, ...], *options: str) -> list[str]:
    """The start of an ``srun`` step with one task on each of ``nodes``, sharing the
    allocation with the steps already running (``--overlap``); the command follows."""
    return ["srun", f"--nodes={len(nodes)}", "--ntasks-per-node=1",
            f"--nodelist={','.join(nodes)}", "--overlap", *options]


def start_srun(dispatch: Path, nodes: list[str] | tuple[str, ...], log_dir: Path,
               step_options: list[str] | tuple[str, ...] = ()) -> NodeProcess:
    """One srun step over the allocation's nodes, one task each, a log per host;
    ``step_options`` are a container runtime's (pyxis) for the step."""
    log_dir.mkdir(parents=True, exist_ok=True)
    # Each node script writes its own <host>.log; srun.log catches srun's own complaints.
    step_name = f"pyserve-{log_dir.name}"  # the launch id: one step per launch
    argv = [*srun_per_node(nodes, "--kill-on-bad-exit=0", f"--output={log_dir}/srun.log",
                           "--open-mode=append", f"--job-name={step_name}", *step_options),
            "bash", str(dispatch)]
    srun_log = log_dir / "srun.log"
    with open(srun_log, "ab") as log:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
    return NodeProcess(name="srun", popen=popen, log_path=srun_log, local_session=False,
                       step_name=step_name)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _ancestors(pid: int) -> set[int]:
    found = set()
    while pid > 1:
        found.add(pid)
        fields = _stat_fields(pid)
        if fields is None:
            break
        pid = int(fields[1])
    return found


def _session(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[3]) if fields else None


def job_processes(job_id: str, rank: str, session: int | None = None) -> list[int]:
    """Processes on this node started for (job, node rank), found two ways:

    * the session of the node entrypoint that calls this (vLLM's engine cores and workers stay
      in it, but rename themselves with setproctitle, which also wipes /proc/PID/environ);
    * the job id and rank in the environment, for daemons that left the session (Ray's).
    Nothing else on the node matches. ``session`` is given only by a caller that knows the
    session is the entrypoint's own (see ``main``).
    """
    spared = _ancestors(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spared:
            continue
        pid = int(entry)
        if session is not None and _session(pid) == session:
            found.append(pid)
            continue
        env = _environ(pid)
        if env.get("PYSERVE_JOB_ID") == job_id and env.get("PYSERVE_NODE_RANK") == rank:
            found.append(pid)
    return found


def reap(job_id: str, rank: str, session: int | None = None, grace: float = 10.0) -> list[int]:
    """SIGTERM then, after ``grace`` seconds, SIGKILL this node's leftovers of the job."""
    pids = job_processes(job_id, rank, session)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and job_processes(job_id, rank, session):
        time.sleep(0.2)
    _signal_all(job_processes(job_id, rank, session), signal.SIGKILL)
    return pids
