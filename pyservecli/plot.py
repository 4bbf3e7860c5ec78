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

from .errors import PyserveError


@dataclass
class Sample:
    config: str
    suite: str
    point: str
    x: float  # concurrency, else request rate (inf drawn at the right end)
    tput_per_gpu: float | None
    e2el_ms: float | None
    interactivity: float | None
    ttft_ms: float | None
    tok_s_per_kw: float | None


def _gpus(info: dict) -> int:
    """GPUs serving: the launch topology when recorded, else those on the benchmark host."""
    topo = info.get("provenance", {}).get("topology")
    if topo:
        return max(1, topo.get("tp", 1) * topo.get("pp", 1) * topo.get("dp", 1))
    return info.get("provenance", {}).get("gpus", {}).get("count") or 1


def load_samples(dirs: list[Path]) -> list[Sample]:
    samples = []
    for root in dirs:
        if not root.is_dir():
            raise PyserveError(f"{root} is not a directory of results")
        for path in sorted(root.rglob("*.json")):
            try:
                result = json.loads(path.read_text())
            except ValueError:
                continue
            info = result.get("pyserve") if isinstance(result, dict) else None
            if not info or info.get("status") != "ok":
                continue
            rel = path.relative_to(root).parts
            config = root.name
            conc = result.get("max_concurrency")
            rate = result.get("request_rate")
            x = float(conc) if conc else (math.inf if rate in ("inf", None, math.inf)
                                          else float(rate))
            tput = result.get("output_throughput")
            tpot = result.get("median_tpot_ms")
            samples.append(Sample(
                config=config, suite=info.get("suite", rel[-2] if len(rel) > 1 else ""),
                point=info.get("point", path.stem), x=x,
                tput_per_gpu=tput / _gpus(info) if tput else None,
                e2el_ms=result.get("median_e2el_ms"),
                interactivity=1000 / tpot if tpot else None,
                ttft_ms=result.get("median_ttft_ms"),
                tok_s_per_kw=info.get("power", {}).get("output_tok_s_per_kw")))
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
