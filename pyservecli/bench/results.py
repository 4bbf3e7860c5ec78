"""One benchmark point as pyserve reads it back (``PointRecord``): built from a result file
(vLLM's keys plus pyserve's block) by the summary table and by ``pyserve plot``, so the derived
figures (GPU count, per-GPU throughput, interactivity, power efficiency) are computed once.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

# A result file larger than this is not read (vLLM's result JSON with per-request detail is a
# few MB at thousands of prompts).
MAX_RESULT_BYTES = 256 * 2**20


def read_result_json(path: Path):
    """The JSON a result file holds. ValueError saying why for anything else: not a regular
    file (a FIFO named *.json would block the read for ever), larger than a result can be, not
    JSON, or nested too deeply for the decoder. OSError as the file system raises it."""
    if not path.is_file():
        raise ValueError("not a regular file")
    if path.stat().st_size > MAX_RESULT_BYTES:
        raise ValueError(f"larger than {MAX_RESULT_BYTES // 2**20} MiB")
    try:
        return json.loads(path.read_text())
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not text") from None


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
    load: str = "concurrency"  # what x is: "concurrency" (closed loop) or "rate" (open)
    model: str = ""  # the served model, as the result names it
    repeats: int = 1  # runs behind the figures (--repeats): the values are their medians
    output_tok_s_min: float | None = None  # the repeats' spread, when there were several
    output_tok_s_max: float | None = None

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
        spread = _spread(info, "output_tok_s")
        return cls(
            suite=str(info.get("suite") or suite), point=str(info.get("point") or point),
            status=status or str(info.get("status", "")), note=note or str(info.get("note", "")),
            gpus=gpus if gpus is not None else gpus_of(provenance),
            x=conc if conc else (rate if rate else math.inf),
            load="concurrency" if conc else "rate",
            model=str(result.get("model_id") or ""),
            output_tok_s=_number(result.get("output_throughput")),
            ttft_p50_ms=_number(result.get("median_ttft_ms")),
            ttft_p99_ms=_number(result.get("p99_ttft_ms")),
            tpot_p50_ms=_number(result.get("median_tpot_ms")),
            itl_p50_ms=_number(result.get("median_itl_ms")),
            e2el_p50_ms=_number(result.get("median_e2el_ms")),
            duration_s=_number(result.get("duration")),
            watts_per_gpu=_number(power.get("avg_watts_per_gpu")),
            tok_s_per_kw=_number(power.get("output_tok_s_per_kw")),
            tpot_p99_ms=_number(result.get("p99_tpot_ms")), repeats=repeats_of(result),
            output_tok_s_min=spread.get("min"), output_tok_s_max=spread.get("max"), **counts)

    def overlaps(self, other: PointRecord) -> bool:
        """Whether the two throughputs lie inside each other's spread of repeats: a
        difference between them is not shown by these runs."""
        if self.repeats < 2 or other.repeats < 2 or None in (
                self.output_tok_s_min, self.output_tok_s_max, other.output_tok_s_min,
                other.output_tok_s_max):
            return False
        return (self.output_tok_s_min <= other.output_tok_s_max
                and other.output_tok_s_min <= self.output_tok_s_max)

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
            "repeats": self.repeats,
            "output_tok_s_min": _round(self.output_tok_s_min),
            "output_tok_s_max": _round(self.output_tok_s_max),
        }


# --repeats: each run of a point is SUITE/POINT.repeat-K.json; POINT.json holds their medians
# and spread. Readers that want points (plot) skip the repeat files; the performance store
# takes the repeats and skips the median file (its figures are theirs).
_REPEAT_FILE = re.compile(r"\.repeat-\d+$")
# The spread kept for each of these figures: result key -> name in pyserve.repeats.
SPREAD_KEYS = {"output_throughput": "output_tok_s", "median_ttft_ms": "ttft_p50_ms",
               "p99_ttft_ms": "ttft_p99_ms", "median_tpot_ms": "tpot_p50_ms",
               "p99_tpot_ms": "tpot_p99_ms"}


def repeat_stem(name: str, number: int) -> str:
    return f"{name}.repeat-{number}"


def is_repeat_file(path: Path) -> bool:
    return path.suffix == ".json" and bool(_REPEAT_FILE.search(path.stem))


def repeats_of(result: dict) -> int:
    """How many runs a result's figures are the medians of (1 for a single run)."""
    info = result.get("pyserve") if isinstance(result, dict) else None
    block = info.get("repeats") if isinstance(info, dict) else None
    count = block.get("n") if isinstance(block, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 1 else 1


def _spread(info: dict, name: str) -> dict:
    block = info.get("repeats") if isinstance(info.get("repeats"), dict) else {}
    spread = block.get(name) if isinstance(block.get(name), dict) else {}
    return {k: _number(spread.get(k)) for k in ("min", "max", "median")
            if _number(spread.get(k)) is not None}


def _median_numbers(blocks: list[dict]) -> dict:
    """Key -> median over ``blocks`` of every number all of them have."""
    keys = [k for k in blocks[0] if all(_number(b.get(k)) is not None for b in blocks)]
    medians = {}
    for key in keys:
        values = [b[key] for b in blocks]
        if all(isinstance(v, int) for v in values):
            medians[key] = statistics.median_low(values)
        else:
            medians[key] = round(statistics.median(values), 4)
    return medians


def combine_repeats(parts: list[tuple[str, str, dict, str]], run_seed: int) -> dict:
    """One point's result from its repeats, each (status, note, result, file name): every
    figure the median of the good repeats', with each headline figure's min / max / values in
    ``pyserve.repeats``. The point is ok only when every repeat is: a repeat that failed is
    not averaged away."""
    good = [(note, result, name) for status, note, result, name in parts if status == "ok"]
    bad = len(parts) - len(good)
    first = next((result for _, _, result, _ in parts if result.get("pyserve")), {})
    info = dict(first.get("pyserve") or {})
    block = {"n": len(parts), "ok": len(good), "files": [name for *_, name in parts]}
    if not good:
        info.update(status="failed", note=f"none of {len(parts)} repeats succeeded",
                    repeats=block, run_seed=run_seed)
        return {"pyserve": info}
    results = [result for _, result, _ in good]
    ranked = sorted(results, key=lambda r: _number(r.get("output_throughput")) or 0.0)
    combined = dict(ranked[(len(ranked) - 1) // 2])  # the median run's own keys, then...
    combined.update(_median_numbers(results))  # ...every number the median of the repeats'
    for key, name in SPREAD_KEYS.items():
        values = [_number(r.get(key)) for r in results]
        if None not in values:
            block[name] = {"median": round(statistics.median(values), 4),
                           "min": min(values), "max": max(values), "values": values}
    infos = [r["pyserve"] for r in results]
    powers = [i["power"] for i in infos if isinstance(i.get("power"), dict)]
    caches = [i.get("prefix_cache") or {} for i in infos]
    queried = sum(c.get("queried_tokens") or 0 for c in caches)
    hits = sum(c.get("hit_tokens") or 0 for c in caches)
    notes = sorted({note for note, _, _ in good if note})
    if bad:
        notes.insert(0, f"{bad} of {len(parts)} repeats failed or were invalid: the figures "
                     "are the others' median")
    info.update(
        status="ok" if not bad else "invalid", note="; ".join(notes), repeats=block,
        seed=None, seeds=[i.get("seed") for i in infos], run_seed=run_seed,
        wall_s=round(sum(_number(i.get("wall_s")) or 0.0 for i in infos), 3),
        power=({**_median_numbers(powers), "median_of_repeats": len(powers)}
               if len(powers) == len(infos) and powers else {}),
        prefix_cache=({"available": True, "queried_tokens": queried, "hit_tokens": hits,
                       "hit_rate": round(hits / queried, 4) if queried else None}
                      if all(c.get("available") for c in caches) else caches[0]))
    combined["pyserve"] = info
    return combined


SUMMARY_COLUMNS = tuple(PointRecord.from_result({}).summary_row())
