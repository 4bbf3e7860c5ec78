"""``pyserve trace summarize``: where the time went, from a trace file, without a browser.

Reads Chrome trace-event JSON, the format of both the torch profiler (``*.pt.trace.json.gz``,
written by vLLM's ``--profiler-config``) and VizTracer: complete events (``"ph": "X"``) are
grouped by category and name and ranked by total duration. Durations are inclusive (a
function's time contains its callees'), as the issue's "total time" asks.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pyservecli.errors import PyserveError


@dataclass
class OpTotal:
    category: str
    name: str
    count: int
    total_us: float

    @property
    def mean_us(self) -> float:
        return self.total_us / self.count


def trace_files(path: Path) -> list[Path]:
    """A file, or every trace file in a directory (per-rank traces side by side)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.name.endswith((".json", ".json.gz")))
        if not files:
            raise PyserveError(f"no .json or .json.gz trace in {path}")
        return files
    if not path.exists():
        raise PyserveError(f"trace {path} does not exist")
    return [path]


def load_traces(path: Path) -> tuple[list[tuple[Path, list[dict], str]], list[Path]]:
    """(file, events, kind) of every trace at ``path``, and the files skipped. A directory may
    hold other JSON beside the traces (``pyserve offline --out`` puts config.json, plan.json and
    result.json there): those are skipped, not fatal. A file named directly must be a trace."""
    files = trace_files(path)
    if not path.is_dir():
        return [(files[0], *load_events(files[0]))], []
    loaded, skipped = [], []
    for file in files:
        try:
            loaded.append((file, *load_events(file)))
        except PyserveError:
            skipped.append(file)
    if not loaded:
        raise PyserveError(f"no trace in {path}: {len(skipped)} JSON file(s), none with "
                           "traceEvents")
    return loaded, skipped


# Traces are read whole into memory; past this (uncompressed) size pyserve refuses rather than
# let a wrong path (/dev/zero, a disk image) fill the machine's memory.
MAX_TRACE_BYTES = 4 << 30


def load_events(path: Path, max_bytes: int = MAX_TRACE_BYTES) -> tuple[list[dict], str]:
    """The trace's events and what wrote it ("torch profiler", "VizTracer" or "trace")."""
    if not path.is_file():
        raise PyserveError(f"{path} is not a regular file")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise PyserveError(f"{path} is larger than {max_bytes >> 20} MiB uncompressed; "
                               "pyserve reads traces whole and stops there")
        data = json.loads(raw)
    except (OSError, EOFError) as exc:
        raise PyserveError(f"cannot read trace {path}: {exc}") from None
    except ValueError as exc:
        raise PyserveError(f"{path} is not a JSON trace: {exc}") from None
    if isinstance(data, list):
        return data, "trace"
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise PyserveError(f"{path} has no traceEvents: not a Chrome/Perfetto trace")
    if "viztracer_metadata" in data:
        kind = "VizTracer"
    elif "deviceProperties" in data or "schemaVersion" in data:
        kind = "torch profiler"
    else:
        kind = "trace"
    return data["traceEvents"], kind


# In torch-profiler traces these wrap everything (idle threads' Python stacks, the whole
# profiling window) and would fill the table; asked for by --category they still show.
TORCH_DEFAULT_SKIP = frozenset({"python_function", "Trace"})


def summarize_events(events: list[dict], category: str | None = None,
                     skip: frozenset[str] = frozenset()) -> list[OpTotal]:
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for event in events:
        if not isinstance(event, dict) or event.get("ph") != "X" or "dur" not in event:
            continue
        cat = str(event.get("cat", "") or "")
        if (category and cat != category) or (not category and cat in skip):
            continue
        duration = event["dur"]
        if isinstance(duration, bool) or not isinstance(duration, int | float) \
                or not math.isfinite(duration):
            continue  # a hand-edited or broken event: not a duration
        entry = totals[(cat, str(event.get("name", "?")))]
        entry[0] += 1
        entry[1] += float(duration)
    ops = [OpTotal(cat, name, int(n), total) for (cat, name), (n, total) in totals.items()]
    return sorted(ops, key=lambda op: op.total_us, reverse=True)


def format_table(ops: list[OpTotal], top: int, title: str) -> str:
    shown = ops[:top]
    if not shown:
        return f"{title}\n(no complete events)"
    grand = sum(op.total_us for op in ops) or 1.0
    name_width = min(80, max(len(op.name) for op in shown))
    cat_width = max(8, max(len(op.category) for op in shown))
    lines = [title,
             f"{'category':<{cat_width}}  {'name':<{name_width}}  {'calls':>8}  "
             f"{'total ms':>11}  {'mean us':>10}  {'share':>6}"]
    for op in shown:
        name = op.name if len(op.name) <= name_width else op.name[: name_width - 1] + "…"
        lines.append(f"{op.category:<{cat_width}}  {name:<{name_width}}  {op.count:>8}  "
                     f"{op.total_us / 1000:>11.3f}  {op.mean_us:>10.1f}  "
                     f"{100 * op.total_us / grand:>5.1f}%")
    return "\n".join(lines)


def categories(events: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        if isinstance(event, dict) and event.get("ph") == "X":
            counts[str(event.get("cat", "") or "")] += 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
