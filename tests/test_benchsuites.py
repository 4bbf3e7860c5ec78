"""Benchmark suites: the reference values, the vllm bench command, judging results."""

import pytest

from pyservecli.bench.runner import PointResult, judge, summary_row
from pyservecli.bench.suites import SUITES, bench_argv, custom_point, point_seed, points_for
from pyservecli.errors import PyserveError


def test_reference_suite_values():
    assert [(p.input_len, p.output_len, p.request_rate) for p in SUITES["throughput"]] == [
        (512, 256, "inf")]
    assert [p.input_len for p in SUITES["prefill"]] == [128, 512, 2048, 4096, 16384]
    assert {p.output_len for p in SUITES["prefill"]} == {1}
    assert [p.output_len for p in SUITES["decode"]] == [128, 256, 512, 1024]
    assert [(p.input_len, p.output_len) for p in SUITES["latency"]] == [
        (128, 128), (512, 256), (4096, 512)]
    assert [p.max_concurrency for p in SUITES["concurrency"]] == [1, 4, 16, 64, 256]
    assert {p.num_prompts for p in SUITES["longctx"]} == {50}
    assert [p.request_rate for p in SUITES["sharegpt"]] == ["inf", "4"]
    assert all(p.num_prompts == 100 for s in ("throughput", "prefill", "decode", "latency",
                                              "concurrency") for p in SUITES[s])


def test_point_names_are_unique_result_paths():
    names = [(p.suite, p.name) for points in SUITES.values() for p in points]
    assert len(names) == len(set(names))


def test_bench_argv_uses_the_chat_endpoint_seed_and_lengths():
    point = SUITES["concurrency"][2]
    argv = bench_argv(point, "http://h:8000", "m", "tok", "/out/concurrency")
    assert argv[:3] == ["vllm", "bench", "serve"]
    pairs = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("--")}
    assert pairs["--backend"] == "openai-chat"
    assert pairs["--endpoint"] == "/v1/chat/completions"
    assert pairs["--seed"] == "42"  # the default when no seed is given
    seeded = bench_argv(point, "http://h:8000", "m", "tok", "/out", seed=7)
    assert seeded[seeded.index("--seed") + 1] == "7"
    assert pairs["--random-input-len"] == "512" and pairs["--random-output-len"] == "256"
    assert pairs["--max-concurrency"] == "16" and pairs["--request-rate"] == "inf"
    assert pairs["--result-filename"] == f"{point.name}.json"
    assert "--ignore-eos" in argv


def test_selection_custom_point_and_errors():
    assert len(points_for(["throughput", "decode"])) == 5
    assert {p.num_prompts for p in points_for(["prefill"], num_prompts=7)} == {7}
    point = custom_point(1024, 1024, 64, None)
    assert (point.input_len, point.output_len, point.max_concurrency, point.num_prompts) == (
        1024, 1024, 64, 256)
    with pytest.raises(PyserveError, match="unknown benchmark type"):
        points_for(["speed"])
    with pytest.raises(PyserveError, match="--isl must be at least 1"):
        custom_point(0, 10, None, None)
    # A suite's points were once run with --num-prompts 0 or a --concurrency they ignore.
    with pytest.raises(PyserveError, match="--num-prompts must be at least 1, got 0"):
        points_for(["throughput"], num_prompts=0)
    with pytest.raises(PyserveError, match="give it with --isl/--osl"):
        points_for(["throughput"], concurrency=8)
    with pytest.raises(PyserveError, match="--concurrency must be at least 1, got -3"):
        points_for([], isl=8, osl=8, concurrency=-3)


def test_validity_gate():
    assert judge({"completed": 100, "failed": 0, "total_output_tokens": 25600})[0] == "ok"
    assert judge({"completed": 95, "failed": 5, "total_output_tokens": 100}) == (
        "invalid", "5 of 100 requests failed")
    assert judge({"completed": 10, "failed": 0, "total_output_tokens": 0}) == (
        "invalid", "zero output tokens")


def test_summary_row_derives_per_gpu_and_interactivity():
    result = {"completed": 10, "failed": 0, "output_throughput": 800.0,
              "median_tpot_ms": 20.0, "pyserve": {"power": {"avg_watts_per_gpu": 400.0}}}
    row = summary_row(PointResult(SUITES["throughput"][0], "ok", "", result), gpus=2)
    assert row["output_tok_s_per_gpu"] == 400.0
    assert row["interactivity_tok_s_user"] == 50.0
    assert row["watts_per_gpu"] == 400.0


def test_sweep_suites_reference_values():
    from pyservecli.bench.sweep import SWEEPS, serve_label

    assert [p.request_rate for p in SWEEPS["rate"]] == ["1", "2", "4", "8", "16", "32", "inf"]
    assert [p.max_concurrency for p in SWEEPS["concurrency"]] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert [p.input_len for p in SWEEPS["input"]] == [128, 256, 512, 1024, 2048, 4096, 8192,
                                                      16384]
    assert {p.output_len for p in SWEEPS["input"]} == {128}
    assert [p.output_len for p in SWEEPS["output"]] == [64, 128, 256, 512, 1024, 2048]
    assert {p.input_len for p in SWEEPS["output"]} == {512}
    assert len(points_for(["rate", "output"], table=SWEEPS, num_prompts=3)) == 13
    with pytest.raises(PyserveError, match="unknown sweep suite"):
        points_for(["speed"], table=SWEEPS, what="sweep suite")
    assert serve_label(["M", "--max-num-seqs", "64"]) == "M_max-num-seqs_64"
    assert serve_label(["M"]) == "M"


def test_sweep_serve_labels_keep_the_model_apart():
    """Two --serve lines of different models with the same flags wrote into one folder."""
    from pyservecli.bench.sweep import serve_label

    pairs = [(["Qwen/Qwen3-8B", "--max-model-len", "4096"],
              ["Qwen/Qwen3-32B", "--max-model-len", "4096"]),
             (["./a"], ["./b"]),
             (["m", "--x", "a" * 200], ["m", "--x", "a" * 199 + "b"])]
    for one, other in pairs:
        assert serve_label(one) != serve_label(other), (one, other)
    for args in (["../../etc"], ["/abs/../x"], ["..", "--y"]):
        label = serve_label(args)
        assert "/" not in label and ".." not in label and label not in (".", ""), label
    assert len(serve_label(["m", "--x", "a" * 500])) <= 120


def test_sweep_overhead_counts_every_point_that_ran():
    from pyservecli.bench.sweep import SWEEPS, overhead

    point = SWEEPS["rate"][0]
    results = [PointResult(point, "ok", "", {"duration": 90.0}),
               PointResult(point, "invalid", "3 of 100 requests failed", {"duration": 10.0}),
               PointResult(point, "skipped", "too long")]
    assert overhead(105.0, results) == {"wall_s": 105.0, "bench_s": 100.0, "overhead_pct": 5.0}


def test_every_point_and_every_run_draws_other_prompts():
    """A server caches the prompts it has seen (prefix caching): the same seed for every point
    resent one point's prompts in the next (a GPU run measured TTFT 127 ms at 64 in flight after
    538 ms at 32). Seeds differ per point and per run, and repeat for the same run seed."""
    points = [p for suite in SUITES.values() for p in suite]
    for run in (0, 42, 2**31 - 1):
        seeds = [point_seed(p, run) for p in points]
        assert len(set(seeds)) == len(points)
        assert all(0 <= s < 2**31 for s in seeds)
    point = SUITES["concurrency"][0]
    assert point_seed(point, 1) != point_seed(point, 2)
    assert point_seed(point, 1) == point_seed(point, 1)
