"""Benchmark suites and the `vllm bench serve` command line for each point. Pure functions.

The values are the reference suites' (chat endpoint, 100 prompts unless noted), so figures
compare with earlier runs. A point's result lands at DIR/<suite>/<point>.json, a path that
depends only on the point, which is what lets sweeps resume.

Prompts are drawn with a seed per point and per run (``point_seed``): a server keeps the KV
cache of prompts it has seen (prefix caching, on by default), so a point that resent an earlier
point's prompts, as one fixed seed for every point did, measured cache hits: TTFT near zero and
inflated throughput.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

from pyservecli.errors import PyserveError

SEED = 42  # the reference suites' seed; the base of nothing unless a run is given it (--seed)


@dataclass(frozen=True)
class BenchPoint:
    suite: str
    name: str
    dataset: str = "random"  # random | sharegpt | sonnet
    input_len: int | None = None
    output_len: int | None = None
    num_prompts: int = 100
    request_rate: str = "inf"
    max_concurrency: int | None = None
    prefix_len: int = 0

    @property
    def max_len(self) -> int | None:
        """Longest request in tokens, when the dataset fixes it."""
        if self.input_len is None or self.output_len is None:
            return None
        return self.prefix_len + self.input_len + self.output_len

    @property
    def result_name(self) -> str:
        return f"{self.name}.json"


def _random(suite, isl, osl, rate, prompts=100, conc=None, name=None) -> BenchPoint:
    label = name or f"i{isl}-o{osl}-r{rate}" + (f"-c{conc}" if conc else "")
    return BenchPoint(suite, label, "random", isl, osl, prompts, str(rate), conc)


SUITES: dict[str, tuple[BenchPoint, ...]] = {
    "throughput": (_random("throughput", 512, 256, "inf"),),
    "prefill": tuple(_random("prefill", isl, 1, 4) for isl in (128, 512, 2048, 4096, 16384)),
    "decode": tuple(_random("decode", 128, osl, 4) for osl in (128, 256, 512, 1024)),
    "latency": tuple(_random("latency", i, o, 1) for i, o in ((128, 128), (512, 256),
                                                              (4096, 512))),
    "concurrency": tuple(_random("concurrency", 512, 256, "inf", conc=c)
                         for c in (1, 4, 16, 64, 256)),
    "longctx": tuple(_random("longctx", isl, 100, 1, prompts=50)
                     for isl in (4096, 16384, 32000)),
    "sharegpt": tuple(BenchPoint("sharegpt", f"sharegpt-r{r}", "sharegpt", request_rate=r)
                      for r in ("inf", "4")),
    "sonnet": tuple(BenchPoint("sonnet", f"sonnet-i550-o150-p200-r{r}", "sonnet", 550, 150,
                               request_rate=r, prefix_len=200) for r in ("inf", "4")),
}
# plan --measure's throw-away first point on each new server (cold by design): run once, never
# stored, plotted or planned with.
WARMUP_SUITE = "warmup"
DATASET_FILES = {"sharegpt": "ShareGPT_V3_unfiltered_cleaned_split.json", "sonnet": "sonnet.txt"}


def points_for(names: list[str], *, table: dict[str, tuple[BenchPoint, ...]] | None = None,
               num_prompts: int | None = None, isl: int | None = None, osl: int | None = None,
               concurrency: int | None = None, what: str = "benchmark type"
               ) -> list[BenchPoint]:
    """The points to run: one custom point when ``isl``/``osl`` are given, else the points of
    the named suites of ``table`` (``SUITES``; ``sweep.SWEEPS`` for sweeps), with
    ``num_prompts`` if given. Used by ``pyserve bench``/``sweep`` and their API twins."""
    if (isl is None) != (osl is None):
        raise PyserveError("--isl and --osl go together")
    for label, value in (("--num-prompts", num_prompts), ("--concurrency", concurrency)):
        if value is not None and value < 1:
            raise PyserveError(f"{label} must be at least 1, got {value}")
    if isl is None and concurrency is not None:
        # The suites set their own concurrency (the concurrency suite sweeps it).
        raise PyserveError("--concurrency sets the custom point's concurrency: give it with "
                           "--isl/--osl")
    if isl is not None:
        return [custom_point(isl, osl, concurrency, num_prompts)]
    table = SUITES if table is None else table
    unknown = [n for n in names if n not in table]
    if unknown or not names:
        raise PyserveError(f"unknown {what}(s) {', '.join(unknown) or repr('')}; choose from "
                           f"{', '.join(table)}")
    points = [p for n in names for p in table[n]]
    if num_prompts is not None:
        points = [replace(p, num_prompts=num_prompts) for p in points]
    return points


def custom_point(isl: int, osl: int, concurrency: int | None, num_prompts: int | None,
                 rate: str = "inf") -> BenchPoint:
    for label, value in (("--isl", isl), ("--osl", osl), ("--concurrency", concurrency),
                         ("--num-prompts", num_prompts)):
        if value is not None and value < 1:
            raise PyserveError(f"{label} must be at least 1, got {value}")
    prompts = num_prompts or (max(100, 4 * concurrency) if concurrency else 100)
    return _random("custom", isl, osl, rate, prompts, concurrency)


def sonnet_dataset_path(point: BenchPoint, result_dir: str) -> str:
    return f"{result_dir}/{point.name}.prompts.json"


def point_seed(point: BenchPoint, run_seed: int) -> int:
    """The prompts' seed of ``point`` in a run seeded ``run_seed``: another for every point of
    the run (the points' prompts never repeat each other's), and for every run (a rerun against
    the same server does not find its prompts cached); the same for the same run seed."""
    return (run_seed + zlib.crc32(f"{point.suite}/{point.name}".encode())) % 2**31


def bench_argv(point: BenchPoint, base_url: str, model: str, tokenizer: str | None,
               result_dir: str, dataset_dir: str | None = None,
               result_name: str | None = None, seed: int = SEED) -> list[str]:
    """The `vllm bench serve` command for one point (the engine's own client), writing its
    result to RESULT_DIR/``result_name`` (default: the point's result file), its prompts drawn
    with ``seed`` (``point_seed``)."""
    argv = ["vllm", "bench", "serve", "--backend", "openai-chat",
            "--endpoint", "/v1/chat/completions", "--base-url", base_url, "--model", model,
            "--seed", str(seed), "--num-prompts", str(point.num_prompts),
            "--request-rate", point.request_rate, "--ignore-eos",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
            "--save-result", "--result-dir", result_dir,
            "--result-filename", result_name or point.result_name]
    if tokenizer:
        argv += ["--tokenizer", tokenizer]
    if point.max_concurrency:
        argv += ["--max-concurrency", str(point.max_concurrency)]
    if point.dataset == "random":
        argv += ["--dataset-name", "random", "--random-input-len", str(point.input_len),
                 "--random-output-len", str(point.output_len)]
    elif point.dataset == "sonnet":
        # Prompts prepared by pyservecli.bench.sonnet next to the result (see sonnet_dataset_path).
        argv += ["--dataset-name", "sharegpt", "--dataset-path",
                 sonnet_dataset_path(point, result_dir), "--sharegpt-output-len",
                 str(point.output_len)]
    else:
        argv += ["--dataset-name", point.dataset,
                 "--dataset-path", f"{dataset_dir}/{DATASET_FILES[point.dataset]}"]
    return argv
