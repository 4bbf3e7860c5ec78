"""Process control on real processes: the reaper stops exactly one job rank's processes."""

import os
import subprocess
import sys
import time
from pathlib import Path

from pyservecli.run.procs import job_processes, reap
from pyservecli.run.readiness import last_error


def spawn_detached(job: str, rank: str) -> int:
    """A process that detaches into its own session (as Ray's daemons do); returns its pid."""
    env = {**os.environ, "PYSERVE_JOB_ID": job, "PYSERVE_NODE_RANK": rank}
    out = subprocess.run(
        ["bash", "-c", "setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $!"],
        env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_reap_stops_the_job_ranks_detached_processes_and_nothing_else():
    job = f"test-{os.getpid()}-{time.time_ns()}"
    ours = spawn_detached(job, "1")
    other_rank = spawn_detached(job, "0")
    other_job = spawn_detached(job + "-other", "1")
    try:
        assert job_processes(job, "1") == [ours]
        assert reap(job, "1", grace=5) == [ours]
        deadline = time.monotonic() + 5
        while alive(ours) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(ours)
        assert alive(other_rank) and alive(other_job)
    finally:
        for pid in (ours, other_rank, other_job):
            subprocess.run(["kill", "-9", str(pid)], capture_output=True)


def test_reap_command_line():
    result = subprocess.run([sys.executable, "-m", "pyservecli.workers.reap", "no-such-job", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == ""
    result = subprocess.run([sys.executable, "-m", "pyservecli.workers.reap"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "usage" in result.stderr


def test_last_error_finds_the_cause_in_a_log():
    log = [
        "INFO starting",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
        "  Value error, User-specified max_model_len (999999) is greater than the derived",
        "RuntimeError: Engine core initialization failed. See root cause above.",
        "INFO shutting down",
    ]
    # The cause, not vLLM's wrapper that points back at it; a validation error with its detail.
    assert last_error(log) == (
        "ValidationError: 1 validation error for ModelConfig: "
        "Value error, User-specified max_model_len (999999) is greater than the derived")
    assert last_error(["all fine"]) is None
    # As vLLM 0.32 (CPU) logs a model directory without weights: the worker's error, then two
    # wrappers.
    worker = ("(Worker pid=351) ERROR 11-23 16:12:43 [multiproc_executor.py:953] RuntimeError: "
              "Cannot find any model weights with `/tmp/tiny`")
    assert last_error([
        worker,
        "(EngineCore pid=335) ERROR 11-23 16:12:45 [core.py:1510] Exception: WorkerProc "
        "initialization failed due to an exception in a background process. See stack trace "
        "for root cause.",
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core "
        "proc(s): {'EngineCore': 1}",
    ]) == "RuntimeError: Cannot find any model weights with `/tmp/tiny`"
    # Only a wrapper: better than nothing.
    assert last_error(["RuntimeError: Engine core initialization failed. See root cause "
                       "above."]).startswith("RuntimeError: Engine core")


def test_entrypoint_reaper_stops_renamed_processes_of_its_own_session(tmp_path):
    """vLLM's engine processes rename themselves (setproctitle wipes /proc/PID/environ): the
    reaper run at the end of a node entrypoint finds them by the entrypoint's session."""
    pid_file = tmp_path / "orphan.pid"
    script = tmp_path / "node.sh"
    script.write_text(
        "set -u\n"
        # an orphan in our session whose environment holds nothing of ours
        f"(env -i bash -c 'exec -a VLLM::EngineCore sleep 300' & echo $! > {pid_file})\n"
        "sleep 0.5\n"
        f"{sys.executable} -m pyservecli.workers.reap no-env-match 0\n")
    result = subprocess.run(["setsid", "--wait", "bash", str(script)], capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).parent.parent)
    orphan = int(pid_file.read_text())
    try:
        assert "stopped 1 leftover process(es)" in result.stdout, result.stdout + result.stderr
        deadline = time.monotonic() + 5
        while alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(orphan)
    finally:
        subprocess.run(["kill", "-9", str(orphan)], capture_output=True)


def test_the_leftover_check_ignores_a_foreign_engine_and_catches_its_own(tmp_path):
    """#28: engine_leftovers counted every VLLM:: process on the machine, so another user's
    server failed the test and a real leftover could not be told from it. Foreign: one running
    before the test began, and one another suite starts during the test (seen when a CI run
    and a developer's run shared the machine); own: one started with this run's environment."""
    import os
    import subprocess

    from . import engine as engine_mod
    from .engine import FOREIGN_ENGINES, cpu_engine_env, engine_leftovers, renamed_engines

    def engine(name, env=None):  # a process that renamed itself as vLLM's engine processes do
        return subprocess.Popen(["bash", "-c", f"exec -a VLLM::{name} sleep 60"], env=env)

    def seen(process):
        deadline = time.monotonic() + 10
        while process.pid not in renamed_engines() and time.monotonic() < deadline:
            time.sleep(0.05)

    assert engine_mod.OWN_MARK and str(tmp_path).startswith(engine_mod.OWN_MARK)
    foreign = engine("ForeignCore")
    other_suite = None
    own = None
    try:
        seen(foreign)
        FOREIGN_ENGINES.update(renamed_engines())  # as when a test begins
        assert engine_leftovers(tmp_path / "m") == []
        other_env = {**os.environ, "TMPDIR": "/tmp/pytest-of-someone/pytest-9/x"}
        other_suite = engine("OtherSuiteCore", other_env)
        own = engine("EngineCore", cpu_engine_env(tmp_path / "work"))
        seen(other_suite)
        seen(own)
        assert [pid for pid, _ in engine_leftovers(tmp_path / "m")] == [own.pid]
    finally:
        for process in (own, other_suite, foreign):
            if process is not None:
                process.kill()
                process.wait()
