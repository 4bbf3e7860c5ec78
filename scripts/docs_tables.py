"""The benchmark tables of docs/benchmarks.rst that are generated from their raw results (#29):
each figure is read from docs/results and rounded once, here, so a table cannot drift from
the files it cites.

    python scripts/docs_tables.py           # rewrite the generated tables in place
    python scripts/docs_tables.py --check   # exit 1, with a diff, where a table differs

A generated table sits between ``.. generated-table: NAME`` and ``.. end-generated-table`` in
the document; NAME is one of ``TABLES``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.rst"
RESULTS = ROOT / "docs" / "results"

TOPOLOGIES = {"tp1-dp2": "TP 1 x DP 2", "tp1-dp2-ep": "TP 1 x DP 2 + EP", "tp2-dp1": "TP 2",
              "tp2-dp1-ep": "TP 2 + EP"}
MODELS = {"mixtral-8x7b": "Mixtral-8x7B", "deepseek-v2-lite": "DeepSeek-V2-Lite"}
DENSE = {"qwen3-14b": "Qwen3-14B", "qwen3-32b": "Qwen3-32B"}


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _head(caption: list[str], columns: list[str]) -> list[str]:
    """A list-table's directive, caption lines and header row."""
    return ([f".. list-table:: {caption[0]}", *(f"   {line}" for line in caption[1:]),
             "   :header-rows: 1", "", f"   * - {columns[0]}"]
            + [f"     - {column}" for column in columns[1:]])


def _first_per_model(rows: list[tuple]) -> dict:
    """Model -> the topology of its first row (rows come best first: it is set in bold)."""
    best: dict = {}
    for row in rows:
        best.setdefault(row[0], row[1])
    return best


def repeats_2026_11_30() -> list[str]:
    """2x H200, warm, three repeats per topology: median, spread, latency, cache, power."""
    base = RESULTS / "2026-11-30-2xh200-repeats"
    rows = []
    for path in sorted(base.glob("*/measured/*/plan/i1024-o256-rinf-c128.json")):
        result = json.loads(path.read_text())
        info = result["pyserve"]
        model = path.parts[-5].removesuffix("-ep")
        if model not in MODELS:
            continue  # the dense shapes have their own table (dense_2026_11_30)
        spread = info["repeats"]["output_tok_s"]
        rows.append((MODELS[model], TOPOLOGIES[path.parts[-3]], spread,
                     result["median_ttft_ms"], result["median_tpot_ms"],
                     info["prefix_cache"]["hit_rate"], info["power"]["avg_watts_per_gpu"]))
    rows.sort(key=lambda r: (r[0], -r[2]["median"]))
    lines = _head(["output tok/s at 128 x 1024/256, median of 3 repeats (min - max);",
                   "p50 TTFT / TPOT, each the median over the repeats; prompt tokens found in the",
                   "prefix cache; GPU power in the measured windows"],
                  ["model", "topology", "output tok/s", "min - max", "TTFT ms / TPOT ms",
                   "cached", "W per GPU"])
    best = _first_per_model(rows)
    for model, topology, spread, ttft, tpot, cached, watts in rows:
        bold = "**" if best[model] == topology else ""
        lines += [f"   * - {model}", f"     - {bold}{topology}{bold}",
                  f"     - {bold}{_n(spread['median'])}{bold}",
                  f"     - {_n(spread['min'])} - {_n(spread['max'])}",
                  f"     - {_n(ttft)} / {_n(tpot, 2)}", f"     - {100 * cached:.1f} %",
                  f"     - {_n(watts)}"]
    return lines


def planner_2026_11_23() -> list[str]:
    """2x H200, plan --measure of Qwen3-8B and Qwen3-30B-A3B: the estimate each plan.json
    recorded beside the measured point (first after READY, one run each)."""
    base = RESULTS / "2026-11-23-2xh200-planner"
    rows = []
    for kind, model in (("dense", "Qwen3-8B"), ("moe", "Qwen3-30B-A3B")):
        plan = json.loads((base / f"measured-{kind}" / "plan.json").read_text())
        estimated = {c["label"]: c["estimate"]["output_tok_s"] for c in plan["candidates"]
                     if c.get("estimate")}
        mine = []
        for path in sorted((base / f"measured-{kind}").glob("*/plan/*.json")):
            result = json.loads(path.read_text())
            label = path.parts[-3]
            tok_s = result["output_throughput"]
            mine.append((model, label, estimated[label], tok_s, result["median_ttft_ms"],
                         result["median_tpot_ms"]))
        rows += sorted(mine, key=lambda r: -r[3])
    lines = _head(["output tok/s at 128 x 1024/256 (p50 TTFT / TPOT in ms), estimate and error"],
                  ["model", "topology", "estimated tok/s", "measured tok/s", "TTFT", "TPOT",
                   "error"])
    best = _first_per_model(rows)
    for model, label, estimate, tok_s, ttft, tpot in rows:
        bold = "**" if best[model] == label else ""
        lines += [f"   * - {model}", f"     - {bold}{TOPOLOGIES[label]}{bold}",
                  f"     - {_n(estimate)}", f"     - {bold}{_n(tok_s)}{bold}",
                  f"     - {_n(ttft)}", f"     - {_n(tpot, 2)}",
                  f"     - {100 * (estimate - tok_s) / tok_s:+.0f} %"]
    return lines


def dense_2026_11_30() -> list[str]:
    """2x H200, the dense out-of-sample shapes, warm: read from each repeat's file (the last
    point was cut by the device's time limit after two of its three repeats, so it has no
    median file), with the estimate pyserve plan recorded before measuring."""
    import statistics

    base = RESULTS / "2026-11-30-2xh200-repeats"
    rows = []
    for model, name in DENSE.items():
        plan = json.loads((base / model / "predicted.json").read_text())
        estimated = {c["label"]: c["estimate"]["output_tok_s"] for c in plan["candidates"]
                     if c.get("estimate")}
        mine = []
        for topology in sorted((base / model / "measured").iterdir()):
            repeats = [json.loads(f.read_text()) for f in
                       sorted(topology.glob("plan/i1024-o256-rinf-c128.repeat-*.json"))]
            if not repeats:
                continue
            tok_s = [r["output_throughput"] for r in repeats]
            mine.append((name, topology.name, statistics.median(tok_s), min(tok_s),
                         max(tok_s), len(repeats), estimated[topology.name],
                         statistics.median(r["median_ttft_ms"] for r in repeats),
                         statistics.median(r["median_tpot_ms"] for r in repeats)))
        rows += sorted(mine, key=lambda r: -r[2])
    lines = _head(["output tok/s at 128 x 1024/256, median of the repeats (min - max); p50",
                   "TTFT / TPOT, medians over the repeats; pyserve plan's bare estimate"],
                  ["model", "topology", "output tok/s", "min - max", "repeats",
                   "TTFT ms / TPOT ms", "estimated", "error"])
    best = _first_per_model(rows)
    for model, label, median, low, high, count, estimate, ttft, tpot in rows:
        bold = "**" if best[model] == label else ""
        lines += [f"   * - {model}", f"     - {bold}{TOPOLOGIES[label]}{bold}",
                  f"     - {bold}{_n(median)}{bold}", f"     - {_n(low)} - {_n(high)}",
                  f"     - {count}", f"     - {_n(ttft)} / {_n(tpot, 2)}",
                  f"     - {_n(estimate)}", f"     - {100 * (estimate - median) / median:+.1f} %"]
    return lines


def calibrate_2026_11_23() -> list[str]:
    """One H200, TP 1: the two cached-prompt runs, the fresh-prompt run and pyserve plan's
    estimate (the same in every run's predicted file) at each load."""
    base = RESULTS / "2026-11-23-h200-calibrate"

    def point(run: str, kind: str, load: int) -> str:
        path = base / run / f"{kind}-c{load}" / "custom" / f"i1024-o256-rinf-c{load}.json"
        if not path.is_file():
            return "n/a"
        result = json.loads(path.read_text())
        return f"{_n(result['output_throughput'])} ({_n(result['median_ttft_ms'])})"

    lines = _head(["output tok/s (p50 TTFT ms) at 1024/256, TP 1 on one H200"],
                  ["model, in flight", "cached prompts, run 1", "run 2", "fresh prompts",
                   "estimate", "estimate vs fresh"])
    for kind, model in (("dense", "Qwen3-8B"), ("moe", "Qwen3-30B-A3B")):
        for load in (32, 64, 128, 256):
            plan = json.loads((base / "cached-run1" / f"predicted-{kind}-c{load}.json")
                              .read_text())
            estimate = plan["candidates"][0]["estimate"]
            fresh = base / "fresh" / f"{kind}-c{load}" / "custom" / \
                f"i1024-o256-rinf-c{load}.json"
            error = ""
            if fresh.is_file():
                measured = json.loads(fresh.read_text())["output_throughput"]
                error = f" {100 * (estimate['output_tok_s'] / measured - 1):+.0f} %"
            lines += [f"   * - {model}, {load}", f"     - {point('cached-run1', kind, load)}",
                      f"     - {point('cached-run2', kind, load)}",
                      f"     - {point('fresh', kind, load)}",
                      f"     - {_n(estimate['output_tok_s'])} ({_n(estimate['ttft_ms'])})",
                      f"     -{error}"]
    return lines


def pd_2026_11_23() -> list[str]:
    """2x H200, Qwen3-8B at 128 x 1024/256: 1P1D, two replicas, one DP 2 server. The 1P1D run
    kept only its summary.csv (its JSON was never committed); the others' JSON."""
    import csv

    pd = next(csv.DictReader((RESULTS / "2026-11-23-2xh200-pd" / "bench-pd" / "summary.csv")
                             .open()))
    rows = [("1 prefill + 1 decode (NIXL)", float(pd["output_tok_s"]), float(pd["ttft_p50_ms"]),
             float(pd["ttft_p99_ms"]), float(pd["tpot_p50_ms"]))]
    for label, path in (
            ("2 replicas behind the router",
             "2026-11-23-2xh200-pd/bench-replicas/custom/i1024-o256-rinf-c128.json"),
            ("``--dp 2`` (one server)",
             "2026-11-23-2xh200-planner/measured-dense/tp1-dp2/plan/i1024-o256-rinf-c128.json")):
        result = json.loads((RESULTS / path).read_text())
        rows.append((label, result["output_throughput"], result["median_ttft_ms"],
                     result["p99_ttft_ms"], result["median_tpot_ms"]))
    best_tok = max(r[1] for r in rows)
    best_ttft = min(r[2] for r in rows)
    best_tpot = min(r[4] for r in rows)

    def bold(text: str, on: bool) -> str:
        return f"**{text}**" if on else text

    lines = _head(["128 x 1024/256 on 2 GPUs (one per server), p50 unless noted"],
                  ["serving", "output tok/s", "per GPU", "TTFT ms (p99)", "TPOT ms"])
    for label, tok_s, ttft, ttft99, tpot in rows:
        lines += [f"   * - {label}", f"     - {bold(_n(tok_s), tok_s == best_tok)}",
                  f"     - {_n(tok_s / 2)}",
                  f"     - {bold(_n(ttft), ttft == best_ttft)} ({_n(ttft99)})",
                  f"     - {bold(_n(tpot, 2), tpot == best_tpot)}"]
    return lines


def _holds_slos(raw: dict) -> bool:
    """The SLOs of the P/D-by-SLO runs: p99 TTFT <= 2 s and p99 TPOT <= 20 ms."""
    return raw["p99_ttft_ms"] <= 2000 and raw["p99_tpot_ms"] <= 20


def _searched_rows(plan: dict, measured_dir: Path, isl: int, names: dict) -> list[str]:
    """Every load plan --measure's goodput search tried, per candidate; the goodput in bold."""
    lines = []
    for cand in plan["candidates"]:
        measured = cand.get("measured")
        if not measured:
            continue
        good = (measured.get("goodput") or {}).get("concurrency")
        folder = measured_dir / cand["label"] / "plan"
        for tried in sorted(measured["searched"], key=lambda t: t["concurrency"]):
            load = tried["concurrency"]
            raw = json.loads((folder / f"i{isl}-o256-rinf-c{load}.json").read_text())
            lines += _slo_row(names[cand["label"]], load, raw, _holds_slos(raw),
                              bold=load == good)
    return lines


def _slo_row(name: str, load: int, raw: dict, held: bool, bold: bool = False) -> list[str]:
    """One measured point of an SLO table: load, tok/s, p50 (p99) TTFT and TPOT, held or not."""
    mark = "**" if bold else ""
    return [f"   * - {name}", f"     - {load}",
            f"     - {mark}{_n(raw['output_throughput'])}{mark}",
            f"     - {_n(raw['median_ttft_ms'])} ({_n(raw['p99_ttft_ms'])})",
            f"     - {_n(raw['median_tpot_ms'], 1)} ({_n(raw['p99_tpot_ms'], 1)})",
            f"     - {'yes' if held else 'no'}"]


def pd_slo_2026_11_30() -> list[str]:
    """2x H200, Qwen3-8B at ISL 8192 / OSL 256 with TTFT <= 2 s and TPOT <= 20 ms (p99): every
    load plan --measure's goodput search tried per candidate, the goodput in bold, and what the
    planner predicted before measuring (the p50 TTFT estimate held against the p99 SLO) and
    with the p99 model (the same seed)."""
    base = RESULTS / "2026-11-30-2xh200-pd-slo"
    plan = json.loads((base / "measured-isl8192" / "plan.json").read_text())
    before = {c["label"]: c.get("goodput") for c in json.loads(
        (base / "predicted-isl8192-c128.json").read_text())["candidates"]}
    after = {c["label"]: c.get("goodput") for c in json.loads(
        (base / "predicted-isl8192-c128-p99-model.json").read_text())["candidates"]}
    names = {"tp1-dp2": "``--dp 2``", "1p-tp1-1d-tp1": "``--prefill 1 --decode 1``"}
    lines = _head(["Qwen3-8B, 2x H200, 8192 in / 256 out: each load the goodput search",
                   "measured (100 prompts, or 4 per slot), p50 (p99); the goodput in bold"],
                  ["serving", "in flight", "output tok/s", "TTFT ms", "TPOT ms", "SLOs held"])
    lines += _searched_rows(plan, base / "measured-isl8192", 8192, names)
    # --replicas 2 was measured later, at the loads around --dp 2's edge only (no search).
    replicas = {}
    for path in sorted((base / "replicas-isl8192").glob("c*/custom/i8192-o256-rinf-c*.json")):
        raw = json.loads(path.read_text())
        replicas[raw["max_concurrency"]] = raw
    for load, raw in sorted(replicas.items()):
        lines += _slo_row("``--replicas 2``", load, raw, _holds_slos(raw))
    lines += [""] + _head(["goodput (output tok/s at the highest load that holds both SLOs)",
                           "measured, and as pyserve plan predicted it before measuring"],
                          ["serving", "measured", "predicted: p50 TTFT against the SLO",
                           "predicted: p99 model"])
    for cand in plan["candidates"]:
        measured = cand.get("measured")
        if not measured:
            continue
        got = measured["goodput"]

        def cell(g: dict | None) -> str:
            return "none" if not g else f"{_n(g['output_tok_s'])} at {g['concurrency']}"

        lines += [f"   * - {names[cand['label']]}",
                  f"     - {_n(got['output_tok_s'])} at {got['concurrency']}",
                  f"     - {cell(before[cand['label']])}", f"     - {cell(after[cand['label']])}"]
    held = [load for load, raw in replicas.items() if _holds_slos(raw)]
    if held:
        top = replicas[max(held)]
        lines += ["   * - ``--replicas 2``",
                  f"     - at least {_n(top['output_throughput'])} at {max(held)} "
                  f"(not measured above {max(replicas)})",
                  "     - not a plan candidate", "     - not a plan candidate"]
    return lines


def pd_slo_isl1024_2026_12_01() -> list[str]:
    """2x H200, Qwen3-8B at ISL 1024 / OSL 256 under the same SLOs: every load the goodput search
    tried per candidate and ``--replicas 2`` around ``--dp 2``'s edge (one run each), then the
    edges again with three repeats on fresh prompts, and the goodput against the prediction."""
    base = RESULTS / "2026-12-01-2xh200-pd-slo-isl1024"
    plan = json.loads((base / "measured-isl1024" / "plan.json").read_text())
    predicted = {c["label"]: c.get("goodput") for c in json.loads(
        (base / "predicted-isl1024-c512.json").read_text())["candidates"]}
    names = {"tp1-dp2": "``--dp 2``", "1p-tp1-1d-tp1": "``--prefill 1 --decode 1``",
             "replicas": "``--replicas 2``", "dp2": "``--dp 2``",
             "pd": "``--prefill 1 --decode 1``"}
    lines = _head(["Qwen3-8B, 2x H200, 1024 in / 256 out: each load the goodput search",
                   "measured (4 prompts per slot, one run), p50 (p99); the goodput in bold"],
                  ["serving", "in flight", "output tok/s", "TTFT ms", "TPOT ms", "SLOs held"])
    lines += _searched_rows(plan, base / "measured-isl1024", 1024, names)
    for path in sorted((base / "replicas-isl1024").glob("c*/custom/i1024-o256-rinf-c*.json"),
                       key=lambda p: int(p.parent.parent.name[1:])):
        raw = json.loads(path.read_text())
        lines += _slo_row(names["replicas"], raw["max_concurrency"], raw, _holds_slos(raw))

    lines += [""] + _head(["The edges again: 3 repeats on fresh prompts each, one launch per",
                           "serving; median (min - max) over the repeats"],
                          ["serving", "in flight", "output tok/s", "TTFT p99 ms", "TPOT p99 ms",
                           "repeats holding both SLOs", "cached"])
    for folder in sorted((base / "repeats-isl1024").glob("*-c*")):
        name, load = folder.name.rsplit("-c", 1)
        point = json.loads((folder / "custom" / f"i1024-o256-rinf-c{load}.json").read_text())
        spread = point["pyserve"]["repeats"]
        runs = [json.loads((folder / "custom" / f).read_text()) for f in spread["files"]]
        hits = sum(r["pyserve"]["prefix_cache"]["hit_tokens"] for r in runs)
        queried = sum(r["pyserve"]["prefix_cache"]["queried_tokens"] for r in runs)

        def cell(key: str, digits: int = 0, spread: dict = spread) -> str:
            got = spread[key]
            return (f"{_n(got['median'], digits)} ({_n(got['min'], digits)} - "
                    f"{_n(got['max'], digits)})")

        lines += [f"   * - {names[name]}", f"     - {load}", f"     - {cell('output_tok_s')}",
                  f"     - {cell('ttft_p99_ms')}", f"     - {cell('tpot_p99_ms', 1)}",
                  f"     - {sum(_holds_slos(r) for r in runs)} of {len(runs)}",
                  f"     - {100 * hits / queried:.1f} %"]

    lines += [""] + _head(["goodput (output tok/s at the highest load that holds both SLOs),",
                           "measured by the search, and as pyserve plan predicted it before"],
                          ["serving", "measured", "predicted", "error"])
    for cand in plan["candidates"]:
        measured = cand.get("measured")
        if not measured:
            continue
        got, guess = measured["goodput"], predicted[cand["label"]]
        error = guess["output_tok_s"] / got["output_tok_s"] - 1
        lines += [f"   * - {names[cand['label']]}",
                  f"     - {_n(got['output_tok_s'])} at {got['concurrency']}",
                  f"     - {_n(guess['output_tok_s'])} at {guess['concurrency']}",
                  f"     - {100 * error:+.1f} %"]
    return lines


def dp_scaling_2026_11_30() -> list[str]:
    """2x H200, Qwen3-8B at ISL 1024 / OSL 256, fresh prompts, three repeats per point after a
    warm-up: one GPU, ``--dp 2`` (mp) and ``--dp 2 --backend ray``; the scaling ratios from the
    medians, with the ratio of the spreads' far ends beside them."""
    base = RESULTS / "2026-11-30-2xh200-dp-scaling"
    phases = [("one", 128, "one GPU (``--gpus-per-node 1``)"), ("dp", 128, "``--dp 2``"),
              ("dp", 256, "``--dp 2``"), ("ray", 256, "``--dp 2 --backend ray``")]
    lines = _head(["Qwen3-8B, 2x H200, 1024 in / 256 out, fresh prompts: output tok/s, median of",
                   "3 repeats (min - max); p50 (p99) TTFT and p50 TPOT, medians over the",
                   "repeats; prompt tokens found in the prefix cache; GPU power in the",
                   "measured windows"],
                  ["serving", "in flight", "output tok/s (per GPU)", "min - max",
                   "TTFT ms", "TPOT ms", "cached", "W per GPU"])
    spread = {}
    for phase, load, name in phases:
        raw = json.loads((base / phase / f"c{load}" / "custom" /
                          f"i1024-o256-rinf-c{load}.json").read_text())
        info = raw["pyserve"]
        tok = info["repeats"]["output_tok_s"]
        spread[phase, load] = tok
        gpus = info["power"]["gpus"]
        lines += [f"   * - {name}", f"     - {load}",
                  f"     - {_n(tok['median'])} ({_n(tok['median'] / gpus)})",
                  f"     - {_n(tok['min'])} - {_n(tok['max'])}",
                  f"     - {_n(raw['median_ttft_ms'])} ({_n(raw['p99_ttft_ms'])})",
                  f"     - {_n(raw['median_tpot_ms'], 1)}",
                  f"     - {100 * info['prefix_cache']['hit_rate']:.1f} %",
                  f"     - {_n(info['power']['avg_watts_per_gpu'])}"]

    def ratio(a: tuple, b: tuple) -> str:
        x, y = spread[a], spread[b]
        return (f"{x['median'] / y['median']:.2f}x ({x['min'] / y['max']:.2f}"
                f" - {x['max'] / y['min']:.2f})")

    lines += [""] + _head(["ratios of the medians (worst - best pairing of the repeats)"],
                          ["comparison", "ratio"])
    lines += ["   * - ``--dp 2`` at 256 / one GPU at 128 (128 in flight per GPU)",
              f"     - {ratio(('dp', 256), ('one', 128))}",
              "   * - ``--dp 2`` at 128 / one GPU at 128 (the same total load)",
              f"     - {ratio(('dp', 128), ('one', 128))}",
              "   * - ray / mp, ``--dp 2`` at 256", f"     - {ratio(('ray', 256), ('dp', 256))}"]
    return lines


def warm_start_2026_11_23() -> list[str]:
    """One H100, Qwen3-8B launched cold then warm in one workspace: the startup ledger of each
    launch record (seconds from launch at which each phase was first seen)."""
    base = RESULTS / "2026-11-23-h100-warm-start"
    phases = [("starting engine", "engine starts"), ("weights loaded", "weights loaded"),
              ("compiling", "compiling"), ("allocating KV cache", "KV cache"),
              ("engine initialised", "engine ready")]
    lines = _head(["seconds from launch at which each phase was first seen in the head log"],
                  ["launch", *(label for _, label in phases), "READY", "compile cache"])
    for name in ("cold", "warm"):
        record = json.loads((base / f"launch-{name}.json").read_text())
        ledger = next(iter(record["startup"].values()))
        lines += [f"   * - {name}"]
        lines += [f"     - {ledger['phases_s'][phase]:.1f}" for phase, _ in phases]
        lines += [f"     - **{record['ready_s']:.1f}**", f"     - {ledger['compile_cache']}"]
    return lines


def offline_2026_11_22() -> list[str]:
    """2x H200, pyserve offline: each phase's result.json, and its wall time from phases.txt."""
    base = RESULTS / "2026-11-22-2xh200-offline"
    wall = dict(re.findall(r"^offline (\S+): exit 0, ([0-9.]+) s in all$",
                           (base / "phases.txt").read_text(), re.M))
    phases = [("one", "Qwen3-8B, one GPU"), ("dp", "Qwen3-8B, ``--dp 2``"),
              ("tp", "Qwen3-8B, ``--tp 2``"), ("moe-tp", "Qwen3-30B-A3B, ``--tp 2 --ep``")]
    lines = _head(["``pyserve offline``, ISL 1024 / OSL 256, dummy weights, bf16"],
                  ["phase: model, topology", "prompts", "wall, start to result (s)",
                   "duration (s)", "output tok/s (per GPU)", "TTFT p50 / p99 (ms)",
                   "TPOT p50 (ms)"])
    for phase, label in phases:
        result = json.loads((base / f"offline-{phase}" / "result.json").read_text())
        config = json.loads((base / f"offline-{phase}" / "config.json").read_text())
        gpus = config["tp"] * config["pp"] * config["dp"]
        tok_s = result["output_throughput"]
        per_gpu = f" ({_n(tok_s / gpus)})" if gpus > 1 else ""
        lines += [f"   * - ``{phase}``: {label}", f"     - {_n(result['completed'])}",
                  f"     - {wall[phase]}", f"     - {result['duration_s']:.2f}",
                  f"     - {_n(tok_s)}{per_gpu}",
                  f"     - {_n(result['ttft_ms']['p50'])} / {_n(result['ttft_ms']['p99'])}",
                  f"     - {result['tpot_ms']['p50']:.1f}"]
    return lines


def h100_2026_11_22() -> list[str]:
    """One H100, Qwen3-8B: pyserve, plain vLLM and pyserve fp8 at c=128 and c=1. The power of
    these runs was sampled over the whole client process (#29), not the measured window: the
    table says which share of it was measured, and labels the power rows so."""
    base = RESULTS / "2026-11-22-h100"
    runs = {}
    for variant in ("pyserve", "plain", "fp8"):
        for load in ("c128", "c1"):
            runs[variant, load] = json.loads(
                (base / variant / load / "custom" / f"i1024-o256-rinf-{load}.json").read_text())

    def row(label: str, cell) -> list[str]:
        return [f"   * - {label}", *(f"     - {cell(runs[v, 'c128'], runs[v, 'c1'])}"
                                     for v in ("pyserve", "plain", "fp8"))]

    def power(r: dict) -> dict:
        return r["pyserve"].get("power") or {}

    lines = [".. list-table::", "   :header-rows: 1", "", "   * - ISL 1024 / OSL 256",
             "     - pyserve bf16", "     - plain vLLM bf16",
             "     - pyserve ``--quantization fp8``"]
    lines += row("c=128 output tok/s (per GPU)", lambda hi, lo: _n(hi["output_throughput"]))
    lines += row("c=128 TTFT p50 / p99 (ms)", lambda hi, lo: f"{_n(hi['median_ttft_ms'])} / "
                 f"{_n(hi['p99_ttft_ms'])}")
    lines += row("c=128 TPOT p50 (ms)", lambda hi, lo: f"{hi['median_tpot_ms']:.1f}")
    lines += row("c=128 interactivity (tok/s/user)",
                 lambda hi, lo: f"{1000 / hi['median_tpot_ms']:.1f}")
    lines += row("c=128 GPU power (W, 1 s samples over the whole client run)",
                 lambda hi, lo: _n(power(hi)["avg_watts_per_gpu"]))
    lines += row("c=128 share of those samples inside the measured window",
                 lambda hi, lo: f"{100 * hi['duration'] / hi['pyserve']['wall_s']:.0f} %")
    lines += row("c=128 output tok/s per kW (same samples)",
                 lambda hi, lo: _n(power(hi)["output_tok_s_per_kw"]))
    lines += row("c=1 TPOT p50 (ms)", lambda hi, lo: f"{lo['median_tpot_ms']:.2f}")
    lines += row("c=1 TTFT p50 (ms)", lambda hi, lo: f"{lo['median_ttft_ms']:.1f}")
    lines += row("c=1 output tok/s", lambda hi, lo: f"{lo['output_throughput']:.1f}")
    return lines


def multi_gpu_2026_11_22() -> list[str]:
    """2x H200, one launch per phase (scripts/gpu/multi-gpu.sh): READY from each launch record,
    each point's result file. Power then was sampled over the whole client run, on both GPUs
    even for the one-GPU phase (so that phase has no per-GPU figure)."""
    base = RESULTS / "2026-11-22-2xh200"
    phases = {"Qwen3-8B (dummy weights, bf16)": [
        ("one", "``--gpus-per-node 1`` (GPU 0)", 1), ("dp", "``--dp 2``", 2),
        ("tp", "``--tp 2``", 2), ("ray", "``--dp 2 --backend ray``", 2)],
        "Qwen3-30B-A3B (dummy weights, bf16, 128 experts)": [
        ("moe-tp", "``--tp 2 --ep``", 2), ("moe-dp", "``--dp 2 --ep``", 2)]}
    lines: list[str] = []
    for caption, rows in phases.items():
        lines += ([""] if lines else []) + _head(
            [caption], ["phase: topology", "READY (s)", "concurrency", "output tok/s (per GPU)",
                        "TTFT p50 / p99 (ms)", "TPOT p50 (ms)",
                        "W per GPU (whole client run)"])
        for phase, topology, gpus in rows:
            ready = json.loads((base / f"launch-{phase}.json").read_text())["ready_s"]
            points = sorted((json.loads(path.read_text()) for path in
                             (base / phase).glob("c*/custom/i1024-o256-rinf-c*.json")),
                            key=lambda r: r["max_concurrency"])
            loads = [r["max_concurrency"] for r in points]

            def tok(r: dict, gpus: int = gpus) -> str:
                per_gpu = r["max_concurrency"] > 1 and gpus > 1
                figure = _n(r["output_throughput"])
                return f"{figure} ({_n(r['output_throughput'] / gpus)})" if per_gpu else figure

            watts = ("see note" if gpus == 1 else " / ".join(
                _n(r["pyserve"]["power"]["avg_watts_per_gpu"]) for r in points))
            lines += [f"   * - ``{phase}``: {topology}", f"     - {ready:.1f}",
                      f"     - {' / '.join(str(c) for c in loads)}",
                      f"     - {' / '.join(tok(r) for r in points)}",
                      "     - " + "; ".join(f"{_n(r['median_ttft_ms'])} / {_n(r['p99_ttft_ms'])}"
                                           for r in points),
                      "     - " + " / ".join(f"{r['median_tpot_ms']:#.3g}" for r in points),
                      f"     - {watts}"]
    return lines


def out_of_sample_cold_2026_11_30() -> list[str]:
    """2x H200, the first out-of-sample run (superseded: every point the first after READY):
    measured figures from each point's file; the estimate and the corrected estimate from the
    planner-scores.txt committed with it (the estimator of that commit), or for a shape that
    file does not score, the bare estimate of the plan made before measuring."""
    base = RESULTS / "2026-11-30-2xh200-out-of-sample"
    scores = {}
    for line in (base / "planner-scores.txt").read_text().splitlines()[1:]:
        cells = line.split()
        if len(cells) > 6 and cells[1] in TOPOLOGIES:
            scores[cells[0], cells[1]] = (cells[3], cells[4], cells[5], cells[6])
    names = {**MODELS, "qwen3-14b": "Qwen3-14B"}
    rows = []
    for model in names:
        predicted = {c["label"]: c["estimate"]["output_tok_s"] for c in json.loads(
            (base / f"predicted-{model}.json").read_text())["candidates"] if c.get("estimate")}
        for path in (base / f"measured-{model}").glob("*/plan/i1024-o256-rinf-c128.json"):
            topology = path.parts[-3]
            raw = json.loads(path.read_text())
            measured = raw["output_throughput"]
            if (model, topology) in scores:
                estimate, error, corrected, corrected_error = scores[model, topology]
                estimated = f"{estimate} ({error.replace('%', ' %')})"
                fixed = (f"{corrected} ({corrected_error.replace('%', ' %')})"
                         if corrected_error != error else "(none: no point of its family)")
            else:
                estimate = predicted[topology]
                estimated = f"{_n(estimate)} ({100 * (estimate / measured - 1):+.0f} %)"
                fixed = "(not scored)"
            rows.append((names[model], TOPOLOGIES[topology], measured,
                         raw["median_ttft_ms"], raw["median_tpot_ms"], estimated, fixed))
    order = list(names.values())
    rows.sort(key=lambda r: (order.index(r[0]), -r[2]))
    lines = _head(["output tok/s at 128 x 1024/256 (p50 TTFT ms / TPOT ms); estimate and error; "
                   "after", "the store's correction (shapes of the same family) and error"],
                  ["model", "topology", "measured", "TTFT / TPOT", "estimate", "corrected"])
    best = _first_per_model(rows)
    counts = {model: sum(r[0] == model for r in rows) for model in best}
    for model, topology, measured, ttft, tpot, estimated, fixed in rows:
        bold = "**" if best[model] == topology and counts[model] > 1 else ""
        lines += [f"   * - {model}", f"     - {bold}{topology}{bold}",
                  f"     - {bold}{_n(measured)}{bold}", f"     - {_n(ttft)} / {tpot:.2f}",
                  f"     - {estimated}", f"     - {fixed}"]
    return lines


def gate_2026_11_30() -> list[str]:
    """This CPU machine, scripts/gate_overhead.py: each setting's three runs, as printed."""
    text = (RESULTS / "2026-11-30-cpu-gate" / "gate_overhead.txt").read_text()
    runs: dict = {}
    for block in re.split(r"^# run \d+: ", text, flags=re.M)[1:]:
        setting = re.search(r"--concurrency (\d+) .*--chunks (\d+)", block).groups()
        rates = dict(re.findall(r"^(direct|gate)\s+(\d+) req/s", block, flags=re.M))
        cpu = re.search(r"the gate's own CPU ([\d.]+) ms", block).group(1)
        runs.setdefault(setting, []).append((cpu, int(rates["direct"]), int(rates["gate"])))
    lines = _head(["the gate against a minimal streaming upstream, three runs of each setting"],
                  ["setting", "gate's own CPU per request", "requests/s direct vs gate"])
    for (concurrency, chunks), found in runs.items():
        direct = [r[1] for r in found]
        gate = [r[2] for r in found]
        lines += [f"   * - {concurrency} in flight, {chunks} chunks",
                  f"     - {', '.join(r[0] for r in found)} ms",
                  f"     - {_n(min(direct))}-{_n(max(direct))} vs {_n(min(gate))}-{_n(max(gate))}"]
    return lines


def _scale(folder: str) -> list[str]:
    """The namespace SLURM cluster at 2-32 nodes (scripts/scale_bench.py): one row per node
    count, the three modes side by side."""
    rows = json.loads((RESULTS / folder / "scale.json").read_text())["rows"]
    by = {(r["nodes"], r["mode"]): r for r in rows}
    lines = _head(["seconds unless noted; overhead = salloc to READY minus the stand-in's start"],
                  ["nodes", "``--dp N`` overhead", "``--pp N`` overhead",
                   "``--replicas N`` overhead", "launcher CPU s (dp / replicas)",
                   "stop (dp / replicas)", "rank death seen (dp / pp / replicas)"])

    def cell(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    for nodes in sorted({r["nodes"] for r in rows}):
        dp, pp, rep = (by.get((nodes, m), {}) for m in ("dp", "pp", "replicas"))
        lines += [f"   * - {nodes}", f"     - {cell(dp.get('overhead_s'))}",
                  f"     - {cell(pp.get('overhead_s'))}", f"     - {cell(rep.get('overhead_s'))}",
                  f"     - {cell(dp.get('launcher_cpu_s'))} / {cell(rep.get('launcher_cpu_s'))}",
                  f"     - {cell(dp.get('stop_s'))} / {cell(rep.get('stop_s'))}",
                  f"     - {cell(dp.get('death_s'))} / {cell(pp.get('death_s'))} / "
                  f"{cell(rep.get('death_s'))}"]
    return lines


def scale_2026_11_30() -> list[str]:
    """Before the node scripts' start was made lighter (commit 10d5d11)."""
    return _scale("2026-11-30-scale-namespaces")


def scale_after_2026_11_30() -> list[str]:
    """After: one small Python helper per node instead of two."""
    return _scale("2026-11-30-scale-namespaces/after")


TABLES = {"repeats-2026-11-30": repeats_2026_11_30, "planner-2026-11-23": planner_2026_11_23,
          "pd-2026-11-23": pd_2026_11_23,
          "dense-2026-11-30": dense_2026_11_30, "pd-slo-2026-11-30": pd_slo_2026_11_30,
          "pd-slo-isl1024-2026-12-01": pd_slo_isl1024_2026_12_01,
          "dp-scaling-2026-11-30": dp_scaling_2026_11_30,
          "multi-gpu-2026-11-22": multi_gpu_2026_11_22,
          "out-of-sample-cold-2026-11-30": out_of_sample_cold_2026_11_30,
          "gate-2026-11-30": gate_2026_11_30,
          "calibrate-2026-11-23": calibrate_2026_11_23, "scale-2026-11-30": scale_2026_11_30,
          "scale-after-2026-11-30": scale_after_2026_11_30,
          "warm-start-2026-11-23": warm_start_2026_11_23,
          "offline-2026-11-22": offline_2026_11_22, "h100-2026-11-22": h100_2026_11_22}
_BLOCK = re.compile(r"^(\.\. generated-table: (\S+)\n\n)(.*?)^\.\. end-generated-table$",
                    re.S | re.M)


def render(text: str) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise SystemExit(f"{DOC}: no generator for table {name!r}")
        return match.group(1) + "\n".join(TABLES[name]()) + "\n\n.. end-generated-table"

    return _BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = DOC.read_text()
    names = [m.group(2) for m in _BLOCK.finditer(text)]
    missing = sorted(set(TABLES) - set(names))
    if missing:
        print(f"{DOC}: no block for {', '.join(missing)}", file=sys.stderr)
        return 1
    wanted = render(text)
    if args.check:
        if wanted != text:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(keepends=True), wanted.splitlines(keepends=True),
                "docs/benchmarks.rst", "generated from docs/results"))
            return 1
        print(f"{len(names)} generated table(s) match their raw results")
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
