"""``pyserve plan``'s tables: the predicted ranking, and beside it the measured one
(``--measure``) with the prediction error per candidate. Pure functions of the candidates and
the measured point records; the JSON written to OUT/plan.json is ``report`` as is."""

from __future__ import annotations

from dataclasses import dataclass

from pyservecli.bench.results import PointRecord
from pyservecli.plan.auto import Candidate

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class MeasuredRow:
    candidate: Candidate
    predicted_rank: int
    record: PointRecord | None  # None: not measured (or its run failed)

    @property
    def error_pct(self) -> float | None:
        """(predicted - measured) / measured output tok/s, in percent."""
        est, rec = self.candidate.estimate, self.record
        if est is None or rec is None or not rec.output_tok_s:
            return None
        return 100 * (est.output_tok_s - rec.output_tok_s) / rec.output_tok_s


def measured_ranking(rows: list[MeasuredRow], goal: str) -> list[MeasuredRow]:
    """Measured rows, best first (throughput: output tok/s; latency: TPOT p50)."""
    done = [r for r in rows if r.record is not None and r.record.output_tok_s]
    if goal == "throughput":
        return sorted(done, key=lambda r: -r.record.output_tok_s)
    return sorted(done, key=lambda r: r.record.tpot_p50_ms or float("inf"))


def pick_vs_best(rows: list[MeasuredRow], goal: str) -> float | None:
    """The planner's pick (predicted rank 1) measured, over the best measured, for the goal's
    metric (1.0: the planner picked the best)."""
    ranked = measured_ranking(rows, goal)
    pick = next((r for r in rows if r.predicted_rank == 1 and r.record is not None), None)
    if not ranked or pick is None or not pick.record.output_tok_s:
        return None
    best = ranked[0].record
    if goal == "throughput":
        return pick.record.output_tok_s / best.output_tok_s
    if not pick.record.tpot_p50_ms or not best.tpot_p50_ms:
        return None
    return best.tpot_p50_ms / pick.record.tpot_p50_ms


def report(header: dict, ranked: list[Candidate], rows: list[MeasuredRow] | None = None,
           goal: str = "throughput") -> dict:
    out = {**header, "candidates": []}
    measured = {r.candidate.shape.label: r for r in rows or []}
    order = {r.candidate.shape.label: i + 1
             for i, r in enumerate(measured_ranking(rows or [], goal))}
    for index, cand in enumerate(ranked):
        entry = {"predicted_rank": index + 1 if cand.valid else None, **cand.as_dict()}
        row = measured.get(cand.shape.label)
        if row is not None and row.record is not None:
            entry["measured"] = {"rank": order.get(cand.shape.label),
                                 "output_tok_s": row.record.output_tok_s,
                                 "ttft_p50_ms": row.record.ttft_p50_ms,
                                 "tpot_p50_ms": row.record.tpot_p50_ms,
                                 "failed": row.record.failed}
            if row.error_pct is not None:
                entry["measured"]["prediction_error_pct"] = round(row.error_pct, 1)
        out["candidates"].append(entry)
    if rows is not None:
        ratio = pick_vs_best(rows, goal)
        out["pick_vs_best"] = None if ratio is None else round(ratio, 4)
    return out


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(data: dict) -> str:
    """The report as aligned text: one line per candidate."""
    measured = any("measured" in c for c in data["candidates"])
    head = ["rank", "topology", "fits", "weights/GPU", "KV tokens", "est tok/s", "est TTFT ms",
            "est TPOT ms"]
    if measured:
        head += ["measured rank", "tok/s", "TTFT ms", "TPOT ms", "error"]
    lines = [head]
    for c in data["candidates"]:
        mem, est, got = c.get("memory") or {}, c.get("estimate") or {}, c.get("measured") or {}
        fits = "no" if not c["valid"] else ("yes" if mem.get("holds_max_len", True)
                                             else "short KV")
        row = [_num(c["predicted_rank"]), _describe(c), fits,
               f"{mem['weights_gib']:.1f} GiB" if mem else "-",
               _num(mem.get("kv_tokens")), _num(est.get("output_tok_s")),
               _num(est.get("ttft_ms"), 1), _num(est.get("tpot_ms"), 2)]
        if measured:
            err = got.get("prediction_error_pct")
            row += [_num(got.get("rank")), _num(got.get("output_tok_s")),
                    _num(got.get("ttft_p50_ms"), 1), _num(got.get("tpot_p50_ms"), 2),
                    "-" if err is None else f"{err:+.0f}%"]
        lines.append(row)
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(head))]
    text = "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in lines)
    invalid = [c for c in data["candidates"] if c.get("why")]
    for c in invalid:
        text += f"\n{_describe(c)}: {c['why']}"
    if data.get("pick_vs_best") is not None:
        text += (f"\nplanner's pick measured at {100 * data['pick_vs_best']:.1f} % of the best "
                 "measured topology")
    return text


def _describe(c: dict) -> str:
    text = f"TP {c['tp']}" + (f" x PP {c['pp']}" if c["pp"] > 1 else f" x DP {c['dp']}")
    return text + (" + EP" if c["ep"] else "")
