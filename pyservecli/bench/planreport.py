"""``pyserve plan``'s tables: the predicted ranking, and beside it the measured one
(``--measure``) with the prediction error per candidate. Pure functions of the candidates and
the measured point records; the JSON written to OUT/plan.json is ``report`` as is."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyservecli.bench.results import PointRecord
from pyservecli.plan.auto import Candidate, goodput_search  # noqa: F401 (api, tests)

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class MeasuredRow:
    candidate: Candidate
    predicted_rank: int
    record: PointRecord | None  # None: not measured (or its run failed)
    # With SLOs: the best measured load that met them, (concurrency, record), and every load
    # the search tried.
    goodput: tuple | None = None
    tried: list = field(default_factory=list)

    @property
    def error_pct(self) -> float | None:
        """(predicted - measured) / measured output tok/s, in percent."""
        est, rec = self.candidate.estimate, self.record
        if est is None or rec is None or not rec.output_tok_s:
            return None
        return 100 * (est.output_tok_s - rec.output_tok_s) / rec.output_tok_s


def measured_ranking(rows: list[MeasuredRow], goal: str) -> list[MeasuredRow]:
    """Measured rows, best first (with SLOs: measured goodput; throughput: output tok/s;
    latency: TPOT p50)."""
    if any(r.tried for r in rows):
        done = [r for r in rows if r.goodput is not None]
        return sorted(done, key=lambda r: -(r.goodput[1].output_tok_s or 0.0))
    done = [r for r in rows if r.record is not None and r.record.output_tok_s]
    if goal == "throughput":
        return sorted(done, key=lambda r: -r.record.output_tok_s)
    return sorted(done, key=lambda r: r.record.tpot_p50_ms or float("inf"))


def pick_vs_best(rows: list[MeasuredRow], goal: str) -> float | None:
    """The planner's pick (predicted rank 1) measured, over the best measured, for the goal's
    metric (1.0: the planner picked the best)."""
    ranked = measured_ranking(rows, goal)
    if any(r.tried for r in rows):
        pick = next((r for r in rows if r.predicted_rank == 1), None)
        if not ranked or pick is None:
            return None
        got = pick.goodput[1].output_tok_s if pick.goodput else 0.0
        return (got or 0.0) / ranked[0].goodput[1].output_tok_s
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
            if row.record.repeats > 1:
                entry["measured"].update(repeats=row.record.repeats,
                                         output_tok_s_min=row.record.output_tok_s_min,
                                         output_tok_s_max=row.record.output_tok_s_max)
            if row.error_pct is not None:
                entry["measured"]["prediction_error_pct"] = round(row.error_pct, 1)
        if row is not None and row.tried:
            entry.setdefault("measured", {"rank": order.get(cand.shape.label)})
            entry["measured"]["goodput"] = None if row.goodput is None else {
                "concurrency": row.goodput[0], "output_tok_s": row.goodput[1].output_tok_s}
            entry["measured"]["searched"] = [
                {"concurrency": load, "output_tok_s": rec.output_tok_s if rec else None,
                 "ttft_p99_ms": rec.ttft_p99_ms if rec else None,
                 "tpot_p99_ms": rec.tpot_p99_ms if rec else None} for load, rec in row.tried]
        out["candidates"].append(entry)
    if rows is not None:
        ratio = pick_vs_best(rows, goal)
        out["pick_vs_best"] = None if ratio is None else round(ratio, 4)
        out["within_spread"] = spread_notes(rows, goal)
    return out


def spread_notes(rows: list[MeasuredRow], goal: str) -> list[str]:
    """Each pair of neighbours in the measured throughput ranking whose repeats overlap: the
    order between them is not shown by these runs (#29)."""
    if goal != "throughput" or any(r.tried for r in rows):
        return []
    ranked = measured_ranking(rows, goal)
    notes = []
    for better, worse in zip(ranked, ranked[1:], strict=False):
        a, b = better.record, worse.record
        if a.overlaps(b):
            notes.append(f"measured ranks {ranked.index(better) + 1} and "
                         f"{ranked.index(worse) + 1} ({better.candidate.shape.label} "
                         f"{a.output_tok_s:,.0f}, {worse.candidate.shape.label} "
                         f"{b.output_tok_s:,.0f} tok/s) lie inside each other's spread over "
                         f"{min(a.repeats, b.repeats)} repeats: their order is not shown")
    return notes


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(data: dict) -> str:
    """The report as aligned text: one line per candidate."""
    measured = any("measured" in c for c in data["candidates"])
    head = ["rank", "topology", "fits", "weights/GPU", "KV tokens", "tok/s", "TTFT ms",
            "TPOT ms", "source"]
    if any("goodput" in c for c in data["candidates"]):
        head += ["goodput tok/s (c)"]
    searched = any("searched" in (c.get("measured") or {}) for c in data["candidates"])
    if measured:
        head += ["measured rank", "tok/s", "TTFT ms", "TPOT ms", "error"]
    if searched:
        head += ["measured goodput (c)"]
    lines = [head]
    hidden = [c for c in data["candidates"] if c.get("prefill") and not c["valid"]]
    for c in data["candidates"]:
        if c in hidden:
            continue  # listed in the JSON; one line below says how many
        mem, est, got = c.get("memory") or {}, c.get("estimate") or {}, c.get("measured") or {}
        fits = "no" if not c["valid"] else ("yes" if mem.get("holds_max_len", True)
                                             else "short KV")
        fig = c.get("figure") or est
        row = [_num(c["predicted_rank"]), _describe(c), fits,
               f"{mem['weights_gib']:.1f} GiB" if mem else "-",
               _num(mem.get("kv_tokens")), _num(fig.get("output_tok_s")),
               _num(fig.get("ttft_ms"), 1), _num(fig.get("tpot_ms"), 2), _source(fig)]
        if "goodput tok/s (c)" in head:
            good = c.get("goodput")
            row.append(f"{good['output_tok_s']:,.0f} ({good['concurrency']})" if good
                       else ("none" if c["valid"] else "-"))
        if measured:
            err = got.get("prediction_error_pct")
            tput = _num(got.get("output_tok_s"))
            if got.get("repeats"):
                tput += (f" ({_num(got.get('output_tok_s_min'))}-"
                         f"{_num(got.get('output_tok_s_max'))})")
            row += [_num(got.get("rank")), tput,
                    _num(got.get("ttft_p50_ms"), 1), _num(got.get("tpot_p50_ms"), 2),
                    "-" if err is None else f"{err:+.0f}%"]
        if searched:
            good = got.get("goodput")
            row.append(f"{good['output_tok_s']:,.0f} ({good['concurrency']})" if good
                       else ("none" if "searched" in got else "-"))
        lines.append(row)
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(head))]
    text = "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in lines)
    invalid = [c for c in data["candidates"] if c.get("why") and c not in hidden]
    if hidden:
        text += (f"\n{len(hidden)} prefill/decode split(s) do not fit (one server's share of "
                 "the model exceeds its GPUs); --format json lists them")
    for c in invalid:
        text += f"\n{_describe(c)}: {c['why']}"
    if data.get("left_out"):
        text += (f"\n{data['left_out']} more candidate(s) not shown (--top); leave out --top to "
                 "see every one")
    for line in data.get("explained") or []:
        text += f"\n{line}"
    store = data.get("perf_store") or {}
    if store:
        alloc = data["allocation"]
        text += (f"\nfigures: {store.get('points', 0)} stored point(s) of this shape and "
                 f"{store.get('family_points', 0)} of its family ({store.get('family')}) on "
                 f"{alloc['nodes'] * alloc['gpus_per_node']} x {store.get('gpu')} (store "
                 f"{store.get('path')} and pyserve's seed)")
    if data.get("pick_vs_best") is not None:
        text += (f"\nplanner's pick measured at {100 * data['pick_vs_best']:.1f} % of the best "
                 "measured topology")
    repeats = [c["measured"]["repeats"] for c in data["candidates"]
               if (c.get("measured") or {}).get("repeats")]
    if repeats:
        text += (f"\nmeasured tok/s: median of {max(repeats)} repeats (min-max)")
    for line in data.get("within_spread") or []:
        text += f"\n{line}"
    return text


def _source(fig: dict) -> str:
    source = fig.get("source") or "estimated"
    if source == "estimated" and fig.get("correction") is not None:
        return f"est x{fig['correction']:.2f}"
    return {"measured": "measured", "interpolated": "interp", "estimated": "est"}.get(source,
                                                                                  source)


def _describe(c: dict) -> str:
    if c.get("prefill"):
        return (f"{c['prefill']}P (TP {c['prefill_tp']}) + {c['decode']}D "
                f"(TP {c['decode_tp']})")
    text = f"TP {c['tp']}" + (f" x PP {c['pp']}" if c["pp"] > 1 else f" x DP {c['dp']}")
    return text + (" + EP" if c["ep"] else "")
