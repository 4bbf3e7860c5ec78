"""`pyserve plan --measure` end to end on the CPU engine: two candidate topologies of a tiny
model launched one after another, benchmarked, ranked beside the prediction; --resume measures
nothing twice; `pyserve plot` draws the results."""

import json

import pytest

from .conftest import run_pyserve
from .engine import cpu_engine_env, free_port, require_engine

pytestmark = pytest.mark.engine


def test_plan_measure_two_candidates(tmp_path):
    require_engine()
    model = tmp_path / "tiny"
    made = run_pyserve("model", "create", "qwen3-tiny", str(model))
    assert made.returncode == 0, made.stderr
    out = tmp_path / "plan"
    env = cpu_engine_env(tmp_path)
    args = ["plan", str(model), "--gpus-per-node", "2", "--measure", "--top", "2",
            "--isl", "32", "--osl", "8", "--concurrency", "4", "--num-prompts", "8",
            "--out", str(out), "--workspace", str(tmp_path / "ws"), "--port", str(free_port()),
            # Two CPU workers of one TP group cannot both be pinned to this machine's one
            # NUMA node; leave thread placement to the OS.
            "--env", "VLLM_CPU_OMP_THREADS_BIND=nobind", "--format", "json",
            "--load-format", "dummy", "--enforce-eager", "--max-model-len", "256"]
    result = run_pyserve(*args, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data == json.loads((out / "plan.json").read_text())
    measured = [c for c in data["candidates"] if "measured" in c]
    assert sorted(c["label"] for c in measured) == ["tp1-dp2", "tp2-dp1"]
    for cand in measured:
        got = cand["measured"]
        assert got["output_tok_s"] > 0 and got["failed"] == 0
        assert got["rank"] in (1, 2) and isinstance(got["prediction_error_pct"], float)
        assert (out / cand["label"] / "plan" / "i32-o8-rinf-c4.json").is_file()
    assert 0 < data["pick_vs_best"] <= 1
    # The candidates really ran with their topologies (each launch's log says so).
    assert "TP 2 PP 1 DP 1" in (out / "tp2-dp1" / "launch.log").read_text()
    assert "TP 1 PP 1 DP 2" in (out / "tp1-dp2" / "launch.log").read_text()

    again = run_pyserve(*args, "--resume", env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("measured already") == 2 and "launch " not in again.stderr
    assert json.loads(again.stdout)["candidates"] == data["candidates"]

    plot = run_pyserve("plot", str(out), "--out", str(tmp_path / "plots"))
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "plots" / "panels.png").stat().st_size > 10_000
