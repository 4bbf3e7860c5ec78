"""The README's first command: `make demo` is `make setup` (the test environment has done it)
plus scripts/demo.sh, run here as the Makefile runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .engine import engine_leftovers, free_port, require_engine

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.engine


def test_demo_serves_the_embedded_model_checks_it_and_stops(tmp_path):
    require_engine()
    workspace = tmp_path / "ws"
    env = {**os.environ, "PYSERVE": str(Path(sys.executable).parent / "pyserve"),
           "WORKSPACE": str(workspace), "DEMO_PORT": str(free_port()),
           "VLLM_CACHE_ROOT": str(tmp_path / "cache")}
    demo = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "READY http://127.0.0.1:" in demo.stdout
    assert "health: 14 of 14 checks passed" in demo.stdout
    assert "stopping every rank" in demo.stderr
    assert engine_leftovers(workspace / "models" / "qwen3-tiny") == []
