"""One benchmark point as pyserve reads it back (``PointRecord``): built from a result file
(vLLM's keys plus pyserve's block) by the summary table and by ``pyserve plot``, so the derived
figures (GPU count, per-GPU throughput, interactivity, power efficiency) are computed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def gpus_of(provenance: dict) -> int | None:
    """GPUs serving: every replica's behind a router, else the launch's topology when recorded
    (TP x PP x DP), else the GPUs seen on the benchmark host, else None (unknown)."""
    serving = provenance.get("gpus_serving") if isinstance(provenance, dict) else None
    if isinstance(serving, int) and not isinstance(serving, bool) and serving > 0:
        return serving  # replicas behind a router: all of them
    topo = provenance.get("topology") if isinstance(provenance, dict) else None
    if isinstance(topo, dict):
        try:
            return max(1, int(topo.get("tp", 1)) * int(topo.get("pp", 1)) * int(topo.get("dp", 1)))
        except (TypeError, ValueError):
            return None
    count = (provenance or {}).get("gpus", {}).get("count") if isinstance(provenance, dict) \
        else None
    return count if isinstance(count, int) and count > 0 else None


def _number(value) -> float | None:
    """A finite number, else None (strings, booleans and NaN from hand-edited files)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


@dataclass(frozen=True)
class PointRecord:
    suite: str
    point: str
    status: str  # ok | invalid | failed | skipped | resumed
    note: str
    gpus: int | None
    x: float  # concurrency, else request rate (inf for "as fast as possible")
    completed: int | None
    failed: int | None
    output_tok_s: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    itl_p50_ms: float | None
    e2el_p50_ms: float | None
    duration_s: float | None
    watts_per_gpu: float | None
    tok_s_per_kw: float | None
    tpot_p99_ms: float | None = None

    @property
    def output_tok_s_per_gpu(self) -> float | None:
        if self.output_tok_s is None or not self.gpus:
            return None
        return self.output_tok_s / self.gpus

    @property
    def interactivity(self) -> float | None:
        """Tokens per second one user sees: 1000 / TPOT p50 (ms)."""
        return 1000 / self.tpot_p50_ms if self.tpot_p50_ms else None

    @classmethod
    def from_result(cls, result: dict, *, suite: str = "", point: str = "",
                    status: str | None = None, note: str | None = None,
                    gpus: int | None = None) -> PointRecord:
        """``result``: a point's JSON. ``gpus`` overrides what its provenance says."""
        info = result.get("pyserve") if isinstance(result.get("pyserve"), dict) else {}
        power = info.get("power") if isinstance(info.get("power"), dict) else {}
        provenance = info.get("provenance") if isinstance(info.get("provenance"), dict) else {}
        conc = _number(result.get("max_concurrency"))
        rate = _number(result.get("request_rate"))
        counts = {k: result.get(k) if isinstance(result.get(k), int) else None
                  for k in ("completed", "failed")}
        return cls(
            suite=str(info.get("suite") or suite), point=str(info.get("point") or point),
            status=status or str(info.get("status", "")), note=note or str(info.get("note", "")),
            gpus=gpus if gpus is not None else gpus_of(provenance),
            x=conc if conc else (rate if rate else math.inf),
            output_tok_s=_number(result.get("output_throughput")),
            ttft_p50_ms=_number(result.get("median_ttft_ms")),
            ttft_p99_ms=_number(result.get("p99_ttft_ms")),
            tpot_p50_ms=_number(result.get("median_tpot_ms")),
            itl_p50_ms=_number(result.get("median_itl_ms")),
            e2el_p50_ms=_number(result.get("median_e2el_ms")),
            duration_s=_number(result.get("duration")),
            watts_per_gpu=_number(power.get("avg_watts_per_gpu")),
            tok_s_per_kw=_number(power.get("output_tok_s_per_kw")),
            tpot_p99_ms=_number(result.get("p99_tpot_ms")), **counts)

    def summary_row(self) -> dict:
        return {
            "suite": self.suite, "point": self.point, "status": self.status, "note": self.note,
            "completed": self.completed, "failed": self.failed,
            "output_tok_s": _round(self.output_tok_s),
            "output_tok_s_per_gpu": _round(self.output_tok_s_per_gpu),
            "ttft_p50_ms": _round(self.ttft_p50_ms), "ttft_p99_ms": _round(self.ttft_p99_ms),
            "tpot_p50_ms": _round(self.tpot_p50_ms), "itl_p50_ms": _round(self.itl_p50_ms),
            "e2el_p50_ms": _round(self.e2el_p50_ms),
            "interactivity_tok_s_user": _round(self.interactivity),
            "watts_per_gpu": self.watts_per_gpu, "tok_s_per_kw": self.tok_s_per_kw,
            "duration_s": _round(self.duration_s),
        }


SUMMARY_COLUMNS = tuple(PointRecord.from_result({}).summary_row())
