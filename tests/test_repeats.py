"""--repeats: a point's median and spread from its repeats, comparisons inside the spread, the
store taking each repeat once, and plots that draw one line per series with the spread."""

import json
import statistics
from pathlib import Path

import pytest

from pyservecli.bench.perfstore import import_dir
from pyservecli.bench.plot import draw_panels, draw_pareto, load_results
from pyservecli.bench.results import (
    PointRecord,
    combine_repeats,
    is_repeat_file,
    repeat_stem,
    repeats_of,
)
from pyservecli.models.dummy import builtin_config

REPO = Path(__file__).resolve().parent.parent
MIXTRAL_TP2 = (REPO / "docs/results/2026-11-30-2xh200-out-of-sample/measured-mixtral-8x7b/"
               "tp2-dp1/plan/i1024-o256-rinf-c128.json")


def run(tput, ttft, seed, status="ok", note="", cache=(1000, 0), watts=300.0):
    return (status, note, {
        "output_throughput": tput, "median_ttft_ms": ttft, "p99_ttft_ms": 2 * ttft,
        "median_tpot_ms": 10.0, "p99_tpot_ms": 12.0, "completed": 100, "failed": 0,
        "max_concurrency": 16, "request_rate": "inf", "model_id": "m",
        "pyserve": {"status": status, "note": note, "seed": seed, "suite": "s", "point": "p",
                    "wall_s": 10.0, "provenance": {"gpus": {"count": 2}},
                    "prefix_cache": {"available": True, "queried_tokens": cache[0],
                                     "hit_tokens": cache[1]},
                    "power": {"avg_watts_per_gpu": watts, "output_tok_s_per_kw": tput / 0.6}}},
        f"p.repeat-{seed}.json")


def test_median_and_spread_of_repeats():
    combined = combine_repeats([run(900.0, 50.0, 1), run(1000.0, 40.0, 2),
                                run(1300.0, 45.0, 3, watts=310.0)], run_seed=7)
    info = combined["pyserve"]
    assert info["status"] == "ok" and info["note"] == ""
    assert combined["output_throughput"] == 1000.0
    assert combined["median_ttft_ms"] == 45.0  # each figure its own median, not one run's
    spread = info["repeats"]["output_tok_s"]
    assert (spread["min"], spread["median"], spread["max"]) == (900.0, 1000.0, 1300.0)
    assert info["repeats"]["n"] == 3 and info["seeds"] == [1, 2, 3]
    assert info["repeats"]["files"] == ["p.repeat-1.json", "p.repeat-2.json", "p.repeat-3.json"]
    assert info["power"]["avg_watts_per_gpu"] == 300.0
    assert info["prefix_cache"]["queried_tokens"] == 3000
    record = PointRecord.from_result(combined)
    assert (record.repeats, record.output_tok_s_min, record.output_tok_s_max) == (3, 900, 1300)
    row = record.summary_row()
    assert (row["repeats"], row["output_tok_s_min"], row["output_tok_s_max"]) == (3, 900, 1300)
    assert repeats_of(combined) == 3 and repeats_of(run(1.0, 1.0, 1)[2]) == 1


def test_a_failed_repeat_is_not_averaged_away():
    combined = combine_repeats([run(900.0, 50.0, 1), run(0.0, 0.0, 2, status="failed"),
                                run(1100.0, 45.0, 3)], run_seed=7)
    assert combined["pyserve"]["status"] == "invalid"
    assert "1 of 3 repeats failed" in combined["pyserve"]["note"]
    assert combined["output_throughput"] == statistics.median([900.0, 1100.0])
    none = combine_repeats([run(0.0, 0.0, 1, status="failed")] * 2, run_seed=7)
    assert none["pyserve"]["status"] == "failed" and "output_throughput" not in none


def test_cached_prompts_in_a_repeat_stay_flagged():
    flagged = "prefix cache hit rate 40 %: prompts were cached"
    combined = combine_repeats([run(900.0, 50.0, 1), run(1000.0, 40.0, 2, note=flagged,
                                                        cache=(1000, 400))], run_seed=7)
    assert flagged in combined["pyserve"]["note"]
    assert combined["pyserve"]["prefix_cache"]["hit_rate"] == pytest.approx(0.2)


def test_overlap_decides_whether_a_difference_is_shown():
    a = PointRecord.from_result(combine_repeats([run(v, 1.0, i) for i, v in
                                                 enumerate((950.0, 1000.0, 1050.0))], 1))
    b = PointRecord.from_result(combine_repeats([run(v, 1.0, i) for i, v in
                                                 enumerate((1020.0, 1100.0, 1150.0))], 1))
    c = PointRecord.from_result(combine_repeats([run(v, 1.0, i) for i, v in
                                                 enumerate((1200.0, 1250.0, 1300.0))], 1))
    assert a.overlaps(b) and b.overlaps(a)
    assert not a.overlaps(c) and not b.overlaps(c)
    single = PointRecord.from_result(run(1000.0, 1.0, 1)[2])
    assert not single.overlaps(a)  # one run has no spread: nothing can be said either way


def test_plan_report_says_when_ranks_lie_inside_the_spread():
    from pyservecli.api import plan_topologies
    from pyservecli.bench.planreport import MeasuredRow, report, table

    plan = plan_topologies(str(REPO / "pyservecli/models/qwen3-8b"), nodelist="n1",
                           gpus_per_node=2, gpu_type="H200", perf_db=":memory:")
    valid = [c for c in plan.ranked if c.valid][:2]
    close = [combine_repeats([run(v, 1.0, i) for i, v in enumerate(values)], 1)
             for values in ((8000.0, 8100.0, 8300.0), (7900.0, 8050.0, 8150.0))]
    rows = [MeasuredRow(cand, plan.ranked.index(cand) + 1, PointRecord.from_result(result))
            for cand, result in zip(valid, close, strict=True)]
    data = report({"allocation": {"nodes": 1, "gpus_per_node": 2}}, plan.ranked, rows)
    assert len(data["within_spread"]) == 1
    assert "their order is not shown" in data["within_spread"][0]
    first = next(c for c in data["candidates"] if c["label"] == valid[0].shape.label)
    assert first["measured"]["repeats"] == 3
    assert first["measured"]["output_tok_s_min"] == 8000.0
    text = table(data)
    assert "8,100 (8,000-8,300)" in text and "median of 3 repeats" in text


def write_repeated(folder: Path, template: dict, values: list[float]) -> Path:
    """A point measured ``len(values)`` times, laid out as `pyserve bench --repeats` does."""
    suite = folder / "plan"
    suite.mkdir(parents=True, exist_ok=True)
    parts = []
    for k, value in enumerate(values, 1):
        result = json.loads(json.dumps(template))
        result["output_throughput"] = value
        result["pyserve"]["seed"] = k
        name = f"{repeat_stem('i1024-o256-rinf-c128', k)}.json"
        (suite / name).write_text(json.dumps(result))
        parts.append(("ok", "", result, name))
    combined = combine_repeats(parts, 1)
    (suite / "i1024-o256-rinf-c128.json").write_text(json.dumps(combined))
    return suite


def test_the_store_takes_each_repeat_once_never_their_median(tmp_path):
    template = json.loads(MIXTRAL_TP2.read_text())
    write_repeated(tmp_path / "tp2", template, [4000.0, 4200.0, 4100.0])
    assert is_repeat_file(tmp_path / "tp2/plan/i1024-o256-rinf-c128.repeat-2.json")
    assert not is_repeat_file(tmp_path / "tp2/plan/i1024-o256-rinf-c128.json")
    points, skipped = import_dir(tmp_path, find_config=lambda _m: builtin_config("mixtral-8x7b"))
    assert skipped == []
    assert sorted(p.output_tok_s for p in points) == [4000.0, 4100.0, 4200.0]


def test_plot_draws_one_line_per_series_with_the_spread(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    template = json.loads(MIXTRAL_TP2.read_text())
    write_repeated(tmp_path / "tp2", template, [4000.0, 4200.0, 4100.0])
    # A folder that mixes two models and concurrency with request-rate points (#26).
    mixed = tmp_path / "mixed"
    for model in ("a", "b"):
        for suite, conc, rate in (("concurrency", 4, "inf"), ("concurrency", 16, "inf"),
                                  ("rate", None, 2.0), ("rate", None, 8.0)):
            path = mixed / model / suite / f"{conc or rate}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            result = {**template, "model_id": model, "max_concurrency": conc,
                      "request_rate": rate}
            path.write_text(json.dumps(result))
    warmup = json.loads(json.dumps(template))
    warmup["pyserve"]["suite"] = "warmup"
    (tmp_path / "tp2" / "warmup").mkdir()
    (tmp_path / "tp2" / "warmup" / "i1024-o16-rinf-c64.json").write_text(json.dumps(warmup))
    loaded = load_results([tmp_path / "tp2", mixed])
    # Neither the repeats nor plan --measure's throw-away warm-up point is drawn.
    assert len([s for s in loaded.samples if s.config == "tp2"]) == 1
    series = sorted({s.series for s in loaded.samples})
    assert series == ["mixed / a", "mixed / a / by request rate", "mixed / b",
                      "mixed / b / by request rate", "tp2"]
    assert any("holds 2 models" in note for note in loaded.notes)
    panels = draw_panels(loaded.samples)
    tput = panels.axes[0]
    labelled = [line.get_label() for line in tput.get_lines()
                if not line.get_label().startswith("_")]
    assert sorted(labelled) == series
    assert [line.get_linestyle() for line in tput.get_lines()
            if line.get_label().endswith("by request rate")] == ["--", "--"]
    assert tput.containers, "the repeats' spread is drawn as an error bar"
    legend = panels.legends[0]  # below the panels, not inside an axes
    assert sorted(t.get_text() for t in legend.get_texts()) == series
    assert all(ax.get_legend() is None for ax in panels.axes)
    pareto = draw_pareto(loaded.samples)
    assert sorted(t.get_text() for t in pareto.axes[0].get_legend().get_texts()) == series
