"""``pyserve plot``: PNG charts from benchmark result directories.

``panels.png``: throughput per GPU, end-to-end latency, interactivity (1000 / TPOT, tokens/s per
user), TTFT and power efficiency, each against concurrency (or request rate), one line per
configuration. ``pareto.png``: throughput per GPU against interactivity, with each
configuration's Pareto frontier. A configuration is one result directory given on the command
line (for a sweep, pass each server label's directory).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pyservecli.bench.results import PointRecord
from pyservecli.errors import PyserveError


@dataclass(frozen=True)
class Sample:
    """One point of one configuration (a result directory) as drawn."""

    config: str
    record: PointRecord

    @property
    def x(self) -> float:
        return self.record.x

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


def load_samples(dirs: list[Path]) -> list[Sample]:
    samples = []
    for root in dirs:
        if not root.is_dir():
            raise PyserveError(f"{root} is not a directory of results")
        for path in sorted(root.rglob("*.json")):
            try:
                result = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
            info = result.get("pyserve") if isinstance(result, dict) else None
            if not isinstance(info, dict) or info.get("status") != "ok":
                continue
            rel = path.relative_to(root).parts
            record = PointRecord.from_result(result, suite=rel[-2] if len(rel) > 1 else "",
                                             point=path.stem)
            samples.append(Sample(config=root.name, record=record))
    if not samples:
        raise PyserveError(f"no valid results under {', '.join(map(str, dirs))}")
    return samples


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


def plot(dirs: list[Path], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = load_samples(dirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = sorted({s.config for s in samples})
    finite = [s.x for s in samples if math.isfinite(s.x)]
    inf_at = (max(finite) * 2 if finite else 1.0)

    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.2))
    for ax, (field, label) in zip(axes, PANELS, strict=True):
        drawn = False
        for config in configs:
            pts = sorted((s.x if math.isfinite(s.x) else inf_at, getattr(s, field))
                         for s in samples if s.config == config and getattr(s, field))
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=config)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "unavailable\n(no GPU power samples)" if field == "tok_s_per_kw"
                    else "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency / request rate (inf at right)")
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    panels = out_dir / "panels.png"
    fig.savefig(panels, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for config in configs:
        pts = [(s.interactivity, s.tput_per_gpu) for s in samples
               if s.config == config and s.interactivity and s.tput_per_gpu]
        if not pts:
            continue
        line = ax.scatter(*zip(*pts, strict=True), label=config, alpha=0.6)
        front = pareto_front(pts)
        ax.plot(*zip(*front, strict=True), color=line.get_facecolor()[0], linewidth=2)
    ax.set_xlabel("interactivity (tok/s/user = 1000 / TPOT p50)")
    ax.set_ylabel("output tok/s per GPU")
    ax.set_title("throughput per GPU vs interactivity (lines: Pareto frontier)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    pareto = out_dir / "pareto.png"
    fig.savefig(pareto, dpi=110)
    plt.close(fig)
    return [panels, pareto]
