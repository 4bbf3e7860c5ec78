"""``pyserve plot``: PNG charts from benchmark result directories.

``panels.png``: throughput per GPU, end-to-end latency, interactivity (1000 / TPOT, tokens/s per
user), TTFT and power efficiency, each against concurrency (or request rate, dashed), one line
per series. ``pareto.png``: throughput per GPU against interactivity, with each series' Pareto
frontier. A series is one result directory given on the command line (for a sweep, pass each
server label's directory), split by served model and by load kind (concurrency or request
rate) where the directory mixes them. Points measured with ``--repeats`` carry their spread as
error bars.

Besides pyserve's own results, plain vLLM results are drawn: files written by
``vllm bench serve --save-result`` (vLLM's keys, no ``pyserve`` block) and the runs of
``vllm bench sweep serve`` (``SERVE-<a>-BENCH-<b>/run=N.json``: one configuration per serve
combination). They carry no GPU count: it comes from ``--gpus N``, else a ``gpus.txt`` in the
result directory (or a parent up to the one given), else 1 (drawn per server, with a note).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pyservecli.bench.results import PointRecord, is_repeat_file, read_result_json
from pyservecli.bench.suites import WARMUP_SUITE
from pyservecli.errors import PyserveError


@dataclass(frozen=True)
class Sample:
    """One point of one configuration (a result directory) as drawn."""

    config: str
    record: PointRecord
    series: str = ""  # the line it is drawn on (``load_results`` names it)

    @property
    def x(self) -> float:
        return self.record.x

    @property
    def tput_spread(self) -> tuple[float, float] | None:
        """Per GPU, the min and max of the repeats behind the point (--repeats)."""
        low, high = self.record.output_tok_s_min, self.record.output_tok_s_max
        if self.record.repeats < 2 or low is None or high is None:
            return None
        return low / (self.record.gpus or 1), high / (self.record.gpus or 1)

    @property
    def tput_per_gpu(self) -> float | None:
        # Unknown GPU count: drawn per server (as one GPU); plot() says so.
        tput = self.record.output_tok_s
        return tput / (self.record.gpus or 1) if tput else None

    @property
    def e2el_ms(self) -> float | None:
        return self.record.e2el_p50_ms

    @property
    def interactivity(self) -> float | None:
        return self.record.interactivity

    @property
    def ttft_ms(self) -> float | None:
        return self.record.ttft_p50_ms

    @property
    def tok_s_per_kw(self) -> float | None:
        return self.record.tok_s_per_kw


# Files of `vllm bench sweep` that are not one measured run.
_SWEEP_SKIP = ("warmup.json", "summary.json")


def _is_vllm_result(value) -> bool:
    return isinstance(value, dict) and "output_throughput" in value and "pyserve" not in value


def _gpus_file(path: Path, root: Path) -> int | None:
    """The count in the nearest gpus.txt from ``path``'s directory up to ``root``."""
    for directory in [path.parent, *path.parent.parents]:
        candidate = directory / "gpus.txt"
        if candidate.is_file():
            text = candidate.read_text().strip()
            if not text.isdigit() or int(text) < 1:
                raise PyserveError(f"{candidate} should hold a GPU count, got {text[:40]!r}")
            return int(text)
        if directory == root:
            break
    return None


def _sweep_config(path: Path, root: Path) -> str:
    """``vllm bench sweep``'s SERVE-<a>-BENCH-<b>/run=N.json: one line per serve combination."""
    name = path.parent.name
    if path.name.startswith("run=") and name.startswith("SERVE-"):
        return f"{root.name}/{name.split('-BENCH-')[0]}"
    return root.name


@dataclass
class Loaded:
    samples: list[Sample]
    notes: list[str]


def load_results(dirs: list[Path], gpus: int | None = None) -> Loaded:
    """Every valid point under ``dirs``: pyserve results with status ok, and plain vLLM
    results that pass the same validity gate. ``gpus`` counts for plain results."""
    from pyservecli.bench.runner import judge

    samples, notes = [], []
    unknown_gpus = 0
    for root in dirs:
        if not root.is_dir():
            raise PyserveError(f"{root} is not a directory of results")
        for path in sorted(root.rglob("*.json")):
            if path.name in _SWEEP_SKIP or path.name.endswith((".failure.json", ".failed.json",
                                                                 ".running.json")):
                continue
            if is_repeat_file(path):
                continue  # one run of a point repeated: the point's own file has the median
            try:
                result = read_result_json(path)
            except (ValueError, OSError):
                continue
            rel = path.relative_to(root).parts
            suite = rel[-2] if len(rel) > 1 else ""
            if _is_vllm_result(result):
                if judge(result)[0] != "ok":
                    continue
                count = gpus or _gpus_file(path, root)
                unknown_gpus += count is None
                record = PointRecord.from_result(result, suite=suite, point=path.stem,
                                                 status="ok", gpus=count)
                samples.append(Sample(config=_sweep_config(path, root), record=record))
                continue
            info = result.get("pyserve") if isinstance(result, dict) else None
            if not isinstance(info, dict) or info.get("status") != "ok":
                continue
            if info.get("suite") == WARMUP_SUITE:
                continue  # plan --measure's throw-away first point: cold by design
            record = PointRecord.from_result(result, suite=suite, point=path.stem)
            samples.append(Sample(config=root.name, record=record))
    if not samples:
        raise PyserveError(f"no valid results under {', '.join(map(str, dirs))}")
    if unknown_gpus:
        notes.append(f"{unknown_gpus} vLLM result(s) say nothing of their GPUs: drawn per "
                     "server (as 1 GPU); pass --gpus N or put the count in DIR/gpus.txt")
    samples, more = _name_series(samples)
    return Loaded(samples, notes + more)


def _name_series(samples: list[Sample]) -> tuple[list[Sample], list[str]]:
    """One line per (configuration, model, load kind): points of two models, or concurrency
    points and request-rate points, never share a line (#26). The name grows only by what
    differs, with a note for each folder that mixes."""
    notes = []
    named = []
    for config in sorted({s.config for s in samples}):
        mine = [s for s in samples if s.config == config]
        models = sorted({s.record.model for s in mine})
        loads = sorted({s.record.load for s in mine})
        if len(models) > 1:
            notes.append(f"{config} holds {len(models)} models ({', '.join(models)}): one line "
                         "each")
        for s in mine:
            parts = [config]
            if len(models) > 1:
                parts.append(s.record.model or "?")
            if len(loads) > 1 and s.record.load == "rate":
                parts.append("by request rate")
            named.append(Sample(s.config, s.record, " / ".join(parts)))
    return named, notes


def load_samples(dirs: list[Path], gpus: int | None = None) -> list[Sample]:
    return load_results(dirs, gpus).samples


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both axes (higher is better on both), sorted by x."""
    front = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


PANELS = (("tput_per_gpu", "output tok/s per GPU"), ("e2el_ms", "end-to-end latency p50 (ms)"),
          ("interactivity", "interactivity (tok/s/user)"), ("ttft_ms", "TTFT p50 (ms)"),
          ("tok_s_per_kw", "output tok/s per kW"))


def plot(dirs: list[Path], out_dir: Path, gpus: int | None = None,
         say=lambda _line: None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = load_results(dirs, gpus)
    for note in loaded.notes:
        say(f"pyserve plot: note: {note}")
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = out_dir / "panels.png"
    fig = draw_panels(loaded.samples)
    fig.savefig(panels, dpi=110)
    plt.close(fig)
    pareto = out_dir / "pareto.png"
    fig = draw_pareto(loaded.samples)
    fig.savefig(pareto, dpi=110, bbox_inches="tight")  # the legend right of the axes
    plt.close(fig)
    return [panels, pareto]


def draw_panels(samples: list[Sample]):
    """The panels figure: one line per series (``Sample.series``) in each panel."""
    import matplotlib.pyplot as plt

    all_series = sorted({s.series for s in samples})
    finite = [s.x for s in samples if math.isfinite(s.x)]
    inf_at = (max(finite) * 2 if finite else 1.0)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.2))
    rate_lines = any(s.record.load == "rate" for s in samples)
    for ax, (field, label) in zip(axes, PANELS, strict=True):
        drawn = False
        for number, series in enumerate(all_series):
            mine = sorted((s for s in samples if s.series == series and getattr(s, field)),
                          key=lambda s: s.x)
            if not mine:
                continue
            xs = [s.x if math.isfinite(s.x) else inf_at for s in mine]
            ys = [getattr(s, field) for s in mine]
            style = "--" if mine[0].record.load == "rate" else "-"
            color = f"C{number % 10}"
            ax.plot(xs, ys, style, marker="o", color=color, label=series)
            if field == "tput_per_gpu":  # the spread of --repeats, where measured
                for x, y, s in zip(xs, ys, mine, strict=True):
                    if s.tput_spread:
                        low, high = s.tput_spread
                        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], color=color,
                                    capsize=3, linewidth=1)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "unavailable\n(no GPU power samples)" if field == "tok_s_per_kw"
                    else "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (solid) / request rate (dashed), inf at right"
                      if rate_lines else "concurrency")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    # One legend below the panels, never over a point.
    handles, labels = [], []
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    rows = math.ceil(len(labels) / 4)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.5, 0.07 * rows), 1, 1))
    return fig


def draw_pareto(samples: list[Sample]):
    """Throughput per GPU against interactivity: one scatter and frontier per series."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for number, series in enumerate(sorted({s.series for s in samples})):
        pts = [(s.interactivity, s.tput_per_gpu) for s in samples
               if s.series == series and s.interactivity and s.tput_per_gpu]
        if not pts:
            continue
        color = f"C{number % 10}"
        ax.scatter(*zip(*pts, strict=True), label=series, alpha=0.6, color=color)
        front = pareto_front(pts)
        ax.plot(*zip(*front, strict=True), color=color, linewidth=2)
    ax.set_xlabel("interactivity (tok/s/user = 1000 / TPOT p50)")
    ax.set_ylabel("output tok/s per GPU")
    ax.set_title("throughput per GPU vs interactivity (lines: Pareto frontier)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
