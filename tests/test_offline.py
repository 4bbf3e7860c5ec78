"""pyserve offline without the engine: planning, prompts, merging, profiler command lines,
and the errors that must come before anything starts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pyservecli.bench.offline import (
    format_report,
    merge_samples,
    percentile,
    random_token_prompts,
    sharegpt_prompts,
)
from pyservecli.bench.trace import load_events, summarize_events
from pyservecli.errors import PyserveError
from pyservecli.models.dummy import create_model_dir as create_model
from pyservecli.plan.offline import OfflineRequest, plan_offline, viztracer_template
from pyservecli.plan.profiling import NSYS_PROFILE
from pyservecli.plan.vllm_args import engine_kwargs
from pyservecli.run.cluster import detect

from .conftest import run_pyserve

SLURM_2x4 = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[1-2]",
             "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "4"}


def fake_ip(host: str) -> str:
    return {"gpu1": "10.1.0.1", "gpu2": "10.1.0.2"}.get(host, host)


def plan(tmp_path, env=None, **kw):
    request = OfflineRequest(model="Qwen/Qwen3-8B", input_len=128, output_len=32, **kw)
    return plan_offline(request, detect(env or SLURM_2x4), tmp_path / "out", tmp_path,
                        resolve=fake_ip,
                        python="python3")


def test_one_process_per_gpu_pp_included(tmp_path):
    # The reference counted processes as TP x DP and forgot PP.
    p = plan(tmp_path, env={"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "gpu1",
                            "SLURM_GPUS_ON_NODE": "4"}, tp=2, pp=2)
    assert (p.topology.tp, p.topology.pp, p.topology.dp) == (2, 2, 1)
    assert p.procs_per_node == 4
    assert "--nproc-per-node=4" in p.node_argv[0]


def test_dp_across_two_nodes_rendezvous_on_the_head(tmp_path):
    p = plan(tmp_path, tp=4, dp=2, ep=True)
    assert p.procs_per_node == 4 and p.topology.ep == 8
    for rank, argv in enumerate(p.node_argv):
        assert argv[:3] == ["python3", "-m", "torch.distributed.run"]
        assert "--nnodes=2" in argv and f"--node-rank={rank}" in argv
        assert "--master-addr=10.1.0.1" in argv
        assert argv[-3:] == ["-m", "pyservecli.workers.offline_worker",
                             str(tmp_path / "out/config.json")]
    port = int(next(a for a in p.node_argv[0] if a.startswith("--master-port=")).split("=")[1])
    assert 20000 <= port < 52000
    assert p.config["dp"] == 2 and p.config["ep"] is True


def test_nsys_prefix_is_really_on_the_command(tmp_path):
    # The reference built its nsys prefix and never used it.
    p = plan(tmp_path, tp=4, dp=2, nsys=True)
    for rank, argv in enumerate(p.node_argv):
        assert argv[:len(NSYS_PROFILE)] == NSYS_PROFILE
        assert argv[len(NSYS_PROFILE)] == f"--output={tmp_path / 'out'}/nsys-node{rank}"
        assert "torch.distributed.run" in argv


def test_viztracer_one_file_per_rank():
    assert viztracer_template("/r/trace.json") == "/r/trace-rank{rank}.json"
    assert viztracer_template("/r/trace") == "/r/trace-rank{rank}.json"
    names = {viztracer_template("t.json").format(rank=r) for r in range(4)}
    assert len(names) == 4


def test_the_same_topology_rules_as_launch(tmp_path):
    with pytest.raises(PyserveError, match="does not fit"):
        plan(tmp_path, tp=4, dp=4)
    with pytest.raises(PyserveError, match="--isl and --osl"):
        plan_offline(OfflineRequest(model="m"), detect(SLURM_2x4), tmp_path, tmp_path,
                     resolve=fake_ip)
    with pytest.raises(PyserveError, match="does not exist"):
        plan_offline(OfflineRequest(model="m", dataset_path=str(tmp_path / "none.json")),
                     detect(SLURM_2x4), tmp_path, tmp_path, resolve=fake_ip)


def test_model_checks_apply(tmp_path):
    model = create_model("qwen3-8b", tmp_path / "qwen3-8b")  # 8 KV heads, 32 query heads
    request = OfflineRequest(model=str(model), tp=3, dp=1, input_len=8, output_len=8)
    with pytest.raises(PyserveError, match="3"):
        plan_offline(request, detect({"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "gpu1",
                                      "SLURM_GPUS_ON_NODE": "3"}), tmp_path / "o", tmp_path,
                     resolve=fake_ip)


def test_engine_kwargs_from_vllm_spellings():
    assert engine_kwargs(["--max-model-len", "4096", "--load-format=dummy", "--enforce-eager",
                          "--gpu-memory-utilization", "0.85", "--no-enable-prefix-caching",
                          "--compilation-config", '{"level": 0}']) == {
        "max_model_len": 4096, "load_format": "dummy", "enforce_eager": True,
        "gpu_memory_utilization": 0.85, "enable_prefix_caching": False,
        "compilation_config": {"level": 0}}


# ---- prompts, with the real generated tokenizer -------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    model = create_model("qwen3-tiny", tmp_path_factory.mktemp("m") / "tiny")
    return AutoTokenizer.from_pretrained(model)


def test_random_prompts_are_distinct_and_exact(tokenizer):
    # The reference's "random" prompts were all the same token sequence.
    prompts = random_token_prompts(tokenizer, 64, 100, 20, seed=3)
    ids = [tuple(p["prompt_token_ids"]) for p in prompts]
    assert len(set(ids)) == 64
    assert {len(i) for i in ids} == {100}
    special = set(tokenizer.all_special_ids)
    assert not special & {t for i in ids for t in i}
    assert {p["output_len"] for p in prompts} == {20}
    # Same seed, same prompts on every DP rank (each then takes its share).
    assert prompts == random_token_prompts(tokenizer, 64, 100, 20, seed=3)


def test_sharegpt_first_human_turn_filtered_to_max_len(tmp_path, tokenizer):
    long_text = " ".join(["word"] * 400)
    data = [
        {"conversations": [{"from": "human", "value": "tell me about the sea please now"},
                           {"from": "gpt", "value": "the sea is wide and deep and blue"}]},
        {"conversations": [{"from": "system", "value": "be brief"},
                           {"from": "human", "value": "name three colours for me now"},
                           {"from": "gpt", "value": "red green and blue are colours"},
                           {"from": "human", "value": "second turn is never used here"}]},
        {"conversations": [{"from": "human", "value": long_text},
                           {"from": "gpt", "value": "too long to fit"}]},
        {"conversations": [{"from": "gpt", "value": "no human turn at all"}]},
        {"id": "broken"},
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data))
    prompts = sharegpt_prompts(str(path), tokenizer, 10, max_model_len=128, output_len=None)
    texts = sorted(tokenizer.decode(p["prompt_token_ids"]) for p in prompts)
    assert len(prompts) == 2
    assert any("three colours" in t for t in texts) and any("the sea" in t for t in texts)
    assert not any("second turn" in t for t in texts)
    fixed = sharegpt_prompts(str(path), tokenizer, 10, max_model_len=128, output_len=7)
    assert {p["output_len"] for p in fixed} == {7}
    with pytest.raises(PyserveError, match="no conversation fits"):
        sharegpt_prompts(str(path), tokenizer, 10, max_model_len=8, output_len=None)


# ---- merging ------------------------------------------------------------------------------

def sample(rid, ttft, e2e, out_len, itl, input_len=10):
    return {"id": rid, "input_len": input_len, "output_len": out_len, "prompt_sha1": rid,
            "ttft_s": ttft, "e2e_s": e2e, "itl_s": itl}


def test_merge_counts_each_request_once_and_pools_samples():
    # DP rank 0: one slow request; DP rank 1: three fast ones. Means of per-rank means would
    # give TTFT 0.55 s; the merged samples give 0.325 s.
    rank0 = {"wall_start": 100.0, "duration_s": 2.0,
             "samples": [sample("a", 1.0, 2.0, 3, [0.5, 0.5])]}
    rank1 = {"wall_start": 100.5, "duration_s": 1.0,
             "samples": [sample(r, 0.1, 0.3, 3, [0.1, 0.1]) for r in "bcd"]}
    duplicate_from_tp_rank = {"wall_start": 100.5, "duration_s": 1.0,
                              "samples": [sample("b", 0.1, 0.3, 3, [0.1, 0.1])]}
    result = merge_samples([rank0, rank1, duplicate_from_tp_rank])
    assert result["completed"] == 4
    assert result["total_output_tokens"] == 12
    assert result["duration_s"] == pytest.approx(2.0)  # first start to last end
    assert result["output_throughput"] == pytest.approx(6.0)
    assert result["ttft_ms"]["mean"] == pytest.approx(325.0)
    assert result["ttft_ms"]["p50"] == pytest.approx(100.0)
    # TPOT per request = (e2e - ttft) / (out - 1); ITL = every gap. Different things.
    assert result["tpot_ms"]["mean"] == pytest.approx((500 + 3 * 100) / 4)
    assert result["itl_ms"]["mean"] == pytest.approx((2 * 500 + 6 * 100) / 8)
    report = format_report(result)
    assert "Successful requests:" in report and "Median ITL (ms):" in report
    assert "Mean TPOT (ms):" in report


def test_percentile_matches_numpy_linear():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile([], 50) is None
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)


# ---- trace summarize ------------------------------------------------------------------------

def test_summarize_torch_style_gz_trace(tmp_path):
    events = [{"ph": "X", "cat": "kernel", "name": "gemm", "dur": 300.0},
              {"ph": "X", "cat": "kernel", "name": "gemm", "dur": 100.0},
              {"ph": "X", "cat": "kernel", "name": "softmax", "dur": 50.0},
              {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "dur": 1000.0},
              {"ph": "i", "cat": "cpu_op", "name": "instant", "ts": 1}]
    path = tmp_path / "rank0.pt.trace.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump({"schemaVersion": 1, "traceEvents": events}, handle)
    loaded, kind = load_events(path)
    assert kind == "torch profiler"
    ops = summarize_events(loaded, category="kernel")
    assert [(o.name, o.count, o.total_us) for o in ops] == [("gemm", 2, 400.0),
                                                            ("softmax", 1, 50.0)]
    assert summarize_events(loaded)[0].name == "aten::mm"


def test_summarize_refuses_what_is_not_a_trace(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(PyserveError, match="no traceEvents"):
        load_events(bad)
    (tmp_path / "y.json").write_text("not json")
    with pytest.raises(PyserveError, match="not a JSON trace"):
        load_events(tmp_path / "y.json")


def test_cli_summarize_directory_and_missing(tmp_path):
    trace_dir = tmp_path / "traces"
    trace_dir.mkdir()
    for rank in range(2):
        (trace_dir / f"t-rank{rank}.json").write_text(json.dumps(
            {"viztracer_metadata": {}, "traceEvents": [
                {"ph": "X", "name": f"step (engine.py:{rank})", "dur": 10.0 + rank}]}))
    out = run_pyserve("trace", "summarize", str(trace_dir), "--format", "json")
    assert out.returncode == 0, out.stderr
    reports = json.loads(out.stdout)
    assert [Path(r["file"]).name for r in reports] == ["t-rank0.json", "t-rank1.json"]
    assert reports[1]["kind"] == "VizTracer" and reports[1]["top"][0]["calls"] == 1
    # An offline result directory: the rank traces sit beside config/plan/result JSON, which
    # are skipped with a note (this failed on an H200: "config.json has no traceEvents").
    (trace_dir / "config.json").write_text('{"model": "x"}')
    (trace_dir / "result.json").write_text("[1, 2")
    mixed = run_pyserve("trace", "summarize", str(trace_dir), "--format", "json")
    assert mixed.returncode == 0, mixed.stderr
    assert len(json.loads(mixed.stdout)) == 2
    assert "skipped 2 file(s) without traceEvents: config.json, result.json" in mixed.stderr
    # Named directly, a non-trace is still an error; a directory of no trace is too.
    direct = run_pyserve("trace", "summarize", str(trace_dir / "config.json"))
    assert direct.returncode == 2 and "no traceEvents" in direct.stderr
    only_config = tmp_path / "no-traces"
    only_config.mkdir()
    (only_config / "config.json").write_text("{}")
    none = run_pyserve("trace", "summarize", str(only_config))
    assert none.returncode == 2 and "no trace in" in none.stderr
    missing = run_pyserve("trace", "summarize", str(tmp_path / "nope.json.gz"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


# ---- the CLI refuses before starting anything ---------------------------------------------

def test_nsys_missing_is_a_clear_error_and_launches_nothing(tmp_path, config_dir):
    model = config_dir("qwen3-tiny")
    env = {"PATH": "/usr/bin:/bin"}  # no nsys there
    ws = tmp_path / "ws"
    launch = run_pyserve("launch", str(model), "--nsys", "--gpus-per-node", "1",
                         "--workspace", str(ws), env=env)
    assert launch.returncode == 2
    assert "pyserve: error: --nsys needs Nsight Systems' `nsys`" in launch.stderr
    offline = run_pyserve("offline", str(model), "--nsys", "--isl", "8",
                          "--osl", "8", "--workspace", str(ws), env=env)
    assert offline.returncode == 2 and "`nsys`" in offline.stderr
    assert not ws.exists()


def test_launch_nsys_dry_run_wraps_every_node(tmp_path, config_dir):
    model = config_dir("qwen3-tiny")
    out = run_pyserve("launch", str(model), "--nsys", "--dp", "2", "--nodelist",
                      "n[1-2]", "--gpus-per-node", "1", "--dry-run", "--format", "json",
                      "--workspace", str(tmp_path / "ws"))
    assert out.returncode == 0, out.stderr
    nodes = json.loads(out.stdout)["nodes"]
    for node in nodes:
        argv = node["argv"]
        assert argv[:len(NSYS_PROFILE)] == NSYS_PROFILE
        report = argv[len(NSYS_PROFILE)]
        assert report.startswith(f"--output={(tmp_path / 'ws' / 'nsys').resolve()}/")
        assert report.endswith(f"-node{node['rank']}")
        assert argv[len(NSYS_PROFILE) + 1:len(NSYS_PROFILE) + 3] == ["vllm", "serve"]


def test_launch_profile_sets_vllms_profiler_config(tmp_path, config_dir):
    model = config_dir("qwen3-tiny")
    out = run_pyserve("launch", str(model), "--profile", str(tmp_path / "tr"),
                      "--gpus-per-node", "1", "--dry-run", "--format", "json")
    assert out.returncode == 0, out.stderr
    argv = json.loads(out.stdout)["nodes"][0]["argv"]
    config = json.loads(argv[argv.index("--profiler-config") + 1])
    assert config == {"profiler": "torch", "torch_profiler_dir": str(tmp_path / "tr"),
                      "torch_profiler_dump_cuda_time_total": False,
                      "torch_profiler_with_stack": False}
    both = run_pyserve("launch", str(model), "--profile", "--gpus-per-node", "1",
                       "--dry-run", "--profiler-config", "{}")
    assert both.returncode == 2 and "not both" in both.stderr
