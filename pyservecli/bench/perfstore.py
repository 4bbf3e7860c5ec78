"""The performance store: every measured point in one SQLite file (stdlib ``sqlite3``).

``bench``, ``sweep``, ``plan --measure`` and ``offline`` add a row per good result; ``pyserve
perf import DIR`` loads result folders measured before (pyserve's, or plain ``vllm bench serve``
JSON with the shape and topology given); the planner reads it (``plan.perfmodel``).

Where: ``--perf-db FILE``, else ``$PYSERVE_PERF_DB`` (one file a team shares on a shared file
system), else ``WORKSPACE/perf.db``. Several writers at once are safe: every write is one
``BEGIN IMMEDIATE`` transaction under SQLite's file lock, with a 60 s busy timeout, in the
default rollback journal (WAL needs shared memory, which network file systems do not give).
A seed store of the GPU results in docs/results ships with the package (``seed.csv``, text so
that a change to it can be read in review); the planner reads it beside the user's store.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

from pyservecli.bench.results import _number, read_result_json, repeats_of
from pyservecli.bench.suites import WARMUP_SUITE
from pyservecli.errors import PyserveError
from pyservecli.plan.vllm_args import option_value

ENV_VAR = "PYSERVE_PERF_DB"
DB_NAME = "perf.db"
SEED_FILE = "perf-seed.csv"
BUSY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PerfPoint:
    """One measured point. Key: shape .. rate; values: output_tok_s .. tpot_p99_ms."""

    shape: str  # plan.perfkey fingerprint
    shape_json: str  # the fields behind it, to rebuild the estimator's input
    model: str  # the name it was served as (display only)
    gpu: str  # GPU kind ("H200"), as the planner names it
    gpu_memory_gib: float | None
    gpus: int  # GPUs serving
    vllm: str  # server's vLLM version ("" unknown)
    tp: int
    pp: int
    dp: int
    ep: bool
    roles: str  # "" one server; "replicas:N"; "pd:P:D"
    prefill_tp: int  # P/D: the prefill servers' TP
    flags: str  # plan.perfkey.flags_key of the speed flags
    isl: int
    osl: int
    concurrency: int | None
    rate: float | None  # requests/s; None: as fast as the concurrency allows
    output_tok_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    weights: str  # "dummy" or "real" (what was served)
    source: str  # bench | sweep | plan | offline | import | seed
    result: str  # the result file
    recorded: str  # UTC date of the measurement

    @property
    def topology_label(self) -> str:
        """tp2-dp1, 1p-tp1-1d-tp1 (a candidate's label); 2x-tp1-dp1 for replicas, "offline
        tp1-dp2" for an offline run."""
        from pyservecli.plan.auto import Shape
        from pyservecli.plan.perfmodel import shape_of_point

        shape = shape_of_point(self)
        if shape is not None:
            return shape.label
        one = Shape(self.tp, self.pp, self.dp, self.ep).label
        if self.roles.startswith("replicas:"):
            return f"{self.roles.split(':')[1]}x-{one}"
        return f"{self.roles} {one}"


COLUMNS = [f.name for f in fields(PerfPoint)]
_TYPES = {"gpu_memory_gib": "REAL", "gpus": "INTEGER", "tp": "INTEGER", "pp": "INTEGER",
          "dp": "INTEGER", "ep": "INTEGER", "prefill_tp": "INTEGER", "isl": "INTEGER",
          "osl": "INTEGER", "concurrency": "INTEGER", "rate": "REAL", "output_tok_s": "REAL",
          "ttft_p50_ms": "REAL", "ttft_p99_ms": "REAL", "tpot_p50_ms": "REAL",
          "tpot_p99_ms": "REAL"}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS points (id INTEGER PRIMARY KEY, "
    + ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in COLUMNS) + ")"
)
# One row per key and result file (a re-import replaces it). IFNULL: UNIQUE treats NULLs as
# distinct, and a closed-loop point has no rate.
_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS points_key ON points (shape, gpu, gpus, tp, pp, "
          "dp, ep, roles, prefill_tp, flags, isl, osl, IFNULL(concurrency, -1), "
          "IFNULL(rate, -1), result)")


def store_path(workspace: Path, explicit: str | Path | None = None) -> Path:
    """--perf-db, else $PYSERVE_PERF_DB, else WORKSPACE/perf.db."""
    chosen = explicit or os.environ.get(ENV_VAR) or Path(workspace) / DB_NAME
    return Path(chosen).expanduser()


class PerfStore:
    """The store at ``path`` (created on first write)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            db.execute(_SCHEMA)
            db.execute(_INDEX)
        except sqlite3.Error as exc:
            raise PyserveError(f"performance store {self.path}: {exc}") from None
        except OSError as exc:
            raise PyserveError(f"performance store {self.path}: {exc.strerror}") from None
        return db

    def add(self, points: Iterable[PerfPoint]) -> int:
        """Add ``points`` in one transaction; a point already stored (same key and result file)
        is replaced. Returns how many were written."""
        rows = [tuple(_column(p, c) for c in COLUMNS) for p in points]
        if not rows:
            return 0
        sql = (f"INSERT OR REPLACE INTO points ({', '.join(COLUMNS)}) VALUES "
               f"({', '.join('?' for _ in COLUMNS)})")
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(sql, rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise PyserveError(f"performance store {self.path}: {exc}") from None
        finally:
            db.close()
        return len(rows)

    def points(self, shape: str | None = None, gpu: str | None = None) -> list[PerfPoint]:
        """The stored points (of one shape, one GPU kind); none while the file does not exist
        (a store is created by its first write)."""
        if self.path.exists() and not self.path.is_file():
            raise PyserveError(f"performance store {self.path}: not a file")
        if not self.path.is_file():
            return []
        where, args = [], []
        for column, value in (("shape", shape), ("gpu", gpu)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {', '.join(COLUMNS)} FROM points"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        db = self._connect()
        try:
            rows = db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise PyserveError(f"performance store {self.path}: {exc}") from None
        finally:
            db.close()
        return [_point(row) for row in rows]


def _column(point: PerfPoint, column: str):
    value = getattr(point, column)
    return int(value) if isinstance(value, bool) else value


def _point(row: Iterable) -> PerfPoint:
    values = dict(zip(COLUMNS, row, strict=True))
    values["ep"] = bool(values["ep"])
    return PerfPoint(**values)


@functools.cache
def seed_points() -> tuple[PerfPoint, ...]:
    """The GPU results that ship with pyserve (docs/results, exported to ``perf-seed.csv``),
    read once per process (``pyserve plan`` ranks twice: its own goal and launch's)."""
    path = resources.files("pyservecli") / "bench" / SEED_FILE
    if not path.is_file():
        return ()
    return tuple(read_csv(path.read_text()))


def all_points(store: PerfStore | None, shape: str | None = None,
               gpu: str | None = None) -> list[PerfPoint]:
    """The seed's points and the store's, for one shape and GPU (a store's own measurement
    of a seed point's key comes after it, so it wins where one is picked)."""
    found = [p for p in seed_points() if (shape is None or p.shape == shape)
             and (gpu is None or p.gpu == gpu)]
    return found + (store.points(shape, gpu) if store is not None else [])


def write_csv(points: Iterable[PerfPoint]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for p in points:
        writer.writerow(["" if v is None else (int(v) if isinstance(v, bool) else v)
                         for v in (getattr(p, c) for c in COLUMNS)])
    return out.getvalue()


def read_csv(text: str) -> Iterator[PerfPoint]:
    reader = csv.DictReader(io.StringIO(text))
    ints = {"gpus", "tp", "pp", "dp", "prefill_tp", "isl", "osl", "concurrency"}
    floats = {"gpu_memory_gib", "rate", "output_tok_s", "ttft_p50_ms", "ttft_p99_ms",
              "tpot_p50_ms", "tpot_p99_ms"}
    for row in reader:
        values: dict = {}
        for column in COLUMNS:
            raw = row.get(column, "")
            if column in ints:
                values[column] = int(raw) if raw not in ("", None) else None
            elif column in floats:
                values[column] = float(raw) if raw not in ("", None) else None
            elif column == "ep":
                values[column] = raw in ("1", "True", "true")
            else:
                values[column] = raw or ""
        yield PerfPoint(**values)


# ---- from result files -------------------------------------------------------------------

_POINT_NAME = re.compile(r"i(\d+)-o(\d+)")


@dataclass(frozen=True)
class Given:
    """What a result file cannot say about itself (``perf import`` of plain ``vllm bench
    serve`` JSON): the model's config, the topology, the GPU."""

    config: dict | None = None
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: bool | None = None
    gpu: str | None = None
    gpus: int | None = None
    vllm_args: tuple[str, ...] = ()


def _workload(result: dict, point_name: str) -> tuple[int, int] | None:
    match = _POINT_NAME.search(point_name or "")
    if match:
        return int(match.group(1)), int(match.group(2))
    done = result.get("completed")
    tin = _number(result.get("total_input_tokens"))
    tout = _number(result.get("total_output_tokens"))
    if isinstance(done, int) and done > 0 and tin and tout:
        return round(tin / done), round(tout / done)
    return None


def _gpu_kind(name: str | None) -> tuple[str, float | None]:
    from pyservecli.plan.gpus import find_gpu

    spec = find_gpu(name)
    if spec is not None:
        return spec.name, spec.memory_gib
    return (name or "unknown"), None


def _server_model(argv) -> str | None:
    if isinstance(argv, list) and len(argv) >= 3 and argv[:2] == ["vllm", "serve"]:
        return str(argv[2])
    return None


def _topology_of(provenance: dict, given: Given) -> tuple[dict, str, int, list | None] | None:
    """(one server's topology, roles, prefill TP, that server's argv) from a result's
    provenance, or from ``given``."""
    roles = provenance.get("roles") if isinstance(provenance.get("roles"), dict) else None
    servers = [r for r in (roles or {}).get("replicas") or [] if isinstance(r, dict)]
    if servers:
        prefill = [s for s in servers if s.get("role") == "prefill"]
        decode = [s for s in servers if s.get("role") == "decode"]
        if prefill and decode:
            topo = decode[0].get("topology") or {}
            ptp = int((prefill[0].get("topology") or {}).get("tp") or 1)
            return topo, f"pd:{len(prefill)}:{len(decode)}", ptp, decode[0].get("argv")
        if len({s.get("model") for s in servers}) > 1:
            # Several models behind one router: the measured model's servers alone (its
            # provenance names their argv).
            model = _server_model(provenance.get("server_argv"))
            servers = [s for s in servers if _server_model(s.get("argv")) == model]
            if not servers:
                return None
        topo = servers[0].get("topology") or {}
        return topo, f"replicas:{len(servers)}", 0, servers[0].get("argv")
    topo = provenance.get("topology")
    if isinstance(topo, dict):
        return topo, "", 0, provenance.get("server_argv")
    if given.tp is not None or given.dp is not None or given.pp is not None:
        return ({"tp": given.tp or 1, "pp": given.pp or 1, "dp": given.dp or 1,
                 "ep": 1 if given.ep else 0}, "", 0, None)
    return None


def point_from_result(result: dict, path: Path, *, source: str, given: Given = Given(),
                      find_config=None) -> tuple[PerfPoint | None, str]:
    """A store row for one result file, or None and why not. ``find_config(model)``: the
    config.json dict of a served model (a directory, the HF cache, a built-in shape), or
    None."""
    from pyservecli.plan.perfkey import flags_key, speed_flags

    if isinstance(result.get("config"), dict) and isinstance(result.get("provenance"), dict) \
            and "dp_ranks" in result:
        return _offline_point(result, path, given, find_config)
    info = result.get("pyserve") if isinstance(result.get("pyserve"), dict) else {}
    if info and info.get("status") != "ok":
        return None, f"status {info.get('status')!r}"
    output = _number(result.get("output_throughput"))
    if not output or not result.get("completed"):
        return None, "no output throughput"
    if output < 0:
        return None, f"output throughput {output} is negative"
    provenance = info.get("provenance") if isinstance(info.get("provenance"), dict) else {}
    load = _workload(result, str(info.get("point") or path.stem))
    if load is None:
        return None, "input/output lengths unknown"
    found = _topology_of(provenance, given)
    if found is None:
        return None, "topology unknown (give --tp/--dp/--pp)"
    topo, roles, prefill_tp, argv = found
    argv = [str(a) for a in argv] if isinstance(argv, list) else list(given.vllm_args)
    model = _server_model(argv) or str(result.get("model_id") or "")
    config = given.config or (find_config(model) if find_config and model else None)
    if config is None:
        return None, f"no config.json for {model or 'the model'} (give --model-config)"
    flags = speed_flags(argv)
    try:
        shape, gpu, memory = _shape_and_gpu(config, flags, provenance, given)
    except PyserveError as exc:
        return None, str(exc)
    try:
        tp, pp, dp = int(topo.get("tp") or 1), int(topo.get("pp") or 1), int(topo.get("dp") or 1)
    except (TypeError, ValueError):
        return None, "topology unreadable"
    ep = bool(topo.get("ep"))
    from pyservecli.bench.results import gpus_of

    gpus = given.gpus or gpus_of(provenance) or tp * pp * dp
    conc = _number(result.get("max_concurrency"))
    rate = _number(result.get("request_rate"))
    # SQLite stores 64-bit integers; no benchmark holds more requests in flight than this.
    if conc is not None and not 0 < conc < 2 ** 31:
        return None, f"max_concurrency {result.get('max_concurrency')!r} is out of range"
    weights = "dummy" if option_value(argv, "--load-format") == "dummy" else "real"
    return PerfPoint(
        shape=shape.fingerprint, shape_json=json.dumps(shape.fields, sort_keys=True),
        model=model, gpu=gpu, gpu_memory_gib=memory, gpus=int(gpus),
        vllm=str(provenance.get("vllm_server_version") or provenance.get("vllm_version")
                 or ""),
        tp=tp, pp=pp, dp=dp, ep=ep, roles=roles, prefill_tp=prefill_tp,
        flags=flags_key(flags), isl=load[0], osl=load[1],
        concurrency=int(conc) if conc else None, rate=rate,
        output_tok_s=round(output, 3),
        ttft_p50_ms=_number(result.get("median_ttft_ms")),
        ttft_p99_ms=_number(result.get("p99_ttft_ms")),
        tpot_p50_ms=_number(result.get("median_tpot_ms")),
        tpot_p99_ms=_number(result.get("p99_tpot_ms")),
        weights=weights, source=source, result=str(path),
        recorded=str(provenance.get("date") or result.get("date") or
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
    ), ""


def _offline_point(result: dict, path: Path, given: Given,
                   find_config) -> tuple[PerfPoint | None, str]:
    """``pyserve offline``'s result.json: the engine alone (no API server), every prompt at
    once. Stored with roles "offline" so that the planner never mixes it with served figures."""
    from pyservecli.plan.perfkey import flags_key

    config, provenance = result["config"], result["provenance"]
    output = _number(result.get("output_throughput"))
    model = str(config.get("model") or "")
    model_config = given.config or (find_config(model) if find_config and model else None)
    if not output or model_config is None:
        return None, "no output throughput" if not output else f"no config.json for {model}"
    engine = config.get("engine_kwargs") if isinstance(config.get("engine_kwargs"), dict) else {}
    flags = {f"--{k.replace('_', '-')}": str(v) for k, v in engine.items()
             if f"--{k.replace('_', '-')}" in _speed_flag_names()}
    try:
        shape, gpu, memory = _shape_and_gpu(
            model_config, {f"--{k.replace('_', '-')}": v for k, v in engine.items()},
            provenance, given)
    except PyserveError as exc:
        return None, str(exc)
    topo = provenance.get("topology") or {}
    tp, pp, dp = (int(topo.get(k) or config.get(k) or 1) for k in ("tp", "pp", "dp"))
    ttft, tpot = result.get("ttft_ms") or {}, result.get("tpot_ms") or {}
    return PerfPoint(
        shape=shape.fingerprint, shape_json=json.dumps(shape.fields, sort_keys=True),
        model=model, gpu=gpu, gpu_memory_gib=memory, gpus=tp * pp * dp,
        vllm=str(provenance.get("vllm_version") or ""), tp=tp, pp=pp, dp=dp,
        ep=bool(topo.get("ep") or config.get("ep")), roles="offline", prefill_tp=0,
        flags=flags_key(dict(sorted(flags.items()))),
        isl=int(config.get("input_len") or 0), osl=int(config.get("output_len") or 0),
        concurrency=int(result.get("completed") or 0) or None, rate=None,
        output_tok_s=round(output, 3), ttft_p50_ms=_number(ttft.get("p50")),
        ttft_p99_ms=_number(ttft.get("p99")), tpot_p50_ms=_number(tpot.get("p50")),
        tpot_p99_ms=_number(tpot.get("p99")),
        weights="dummy" if engine.get("load_format") == "dummy" else "real",
        source="offline", result=str(path), recorded=str(provenance.get("date") or "")), ""


def _shape_and_gpu(config: dict, flags: dict, provenance: dict, given: Given):
    """The model shape (with the weight and KV formats its flags give) and the GPU kind a
    result was measured on."""
    from pyservecli.plan.perfkey import model_shape

    shape = model_shape(config, dtype=flags.get("--dtype"),
                        quantization=flags.get("--quantization"),
                        kv_cache_dtype=flags.get("--kv-cache-dtype"))
    seen = provenance.get("gpus") if isinstance(provenance.get("gpus"), dict) else {}
    gpu, memory = _gpu_kind(given.gpu or seen.get("name"))
    return shape, gpu, memory


def _speed_flag_names() -> tuple[str, ...]:
    from pyservecli.plan.perfkey import SPEED_FLAGS

    return SPEED_FLAGS


def read_model_config(spec: str) -> dict:
    """``--model-config``: a model directory, a config.json, or a built-in shape's name."""
    from pyservecli.models.dummy import builtin_config, builtin_models
    from pyservecli.plan.modelconfig import load_config_file

    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return load_config_file(path)
    if spec in builtin_models():
        return builtin_config(spec)
    raise PyserveError(f"--model-config {spec}: no config.json there and no built-in shape of "
                       "that name")


def shape_of_model(model: str):
    """The ``perfkey.ModelShape`` of a model named as ``pyserve perf`` takes it: a directory,
    a hub id in the HF cache, or a built-in shape's name."""
    from pyservecli.plan.perfkey import model_shape

    config = find_model_config(model)
    if config is None:
        try:
            config = read_model_config(model)
        except PyserveError:
            raise PyserveError(f"{model}: no config.json found (a model directory, a hub id "
                               "in the HF cache, or a built-in shape name)") from None
    return model_shape(config)


def write_private_file(path: Path, text: str) -> None:
    """An export of the store, readable by its owner only (as the store's records are)."""
    from pyservecli.run.jobfiles import write_private

    write_private(path, text)


def find_model_config(model: str) -> dict | None:
    """The config.json of a served model: its directory, else the HF cache (no network), else
    the built-in shape of that name (a config-only directory made by ``pyserve model create``
    on another machine, e.g. /tmp/models/qwen3-8b)."""
    from pyservecli.models.dummy import builtin_models
    from pyservecli.plan.modelconfig import load_config_file, resolve_model_dir
    from pyservecli.run.hfhub import cached_config, hub_cache, is_repo_id

    try:
        local = resolve_model_dir(model)
        if local is not None and (local / "config.json").is_file():
            return load_config_file(local / "config.json")
    except (PyserveError, OSError, ValueError):
        pass  # not a readable directory here
    try:
        if is_repo_id(model):
            found = cached_config(hub_cache(os.environ), model)
            if found is not None:
                return load_config_file(found)
        name = Path(model.rstrip("/")).name.lower()
        if name in builtin_models():
            from pyservecli.models.dummy import builtin_config

            return builtin_config(name)
    except (PyserveError, OSError, ValueError):
        return None
    return None


def record_result(store: PerfStore, result: dict, path: Path, source: str) -> str | None:
    """Add one good result to ``store``; a line to show when it could not be (the benchmark
    itself stands either way), else None."""
    try:
        point, why = point_from_result(result, path.resolve(), source=source,
                                       find_config=find_model_config)
        if point is None:
            return f"not added to the performance store ({why})"
        store.add([point])
    except PyserveError as exc:
        return f"not added to the performance store: {exc}"
    return None


def result_files(root: Path) -> Iterator[Path]:
    """The result JSON files under ``root`` (pyserve's point files and plain vLLM ones), in
    a stable order; pyserve's own bookkeeping files are skipped."""
    skip = {"plan.json", "measured-with.json", "latest.json", "sweep.json"}
    for path in sorted(root.rglob("*.json")):
        if path.name in skip or path.name.endswith((".running.json", ".failed.json")):
            continue
        yield path


def import_dir(root: Path, *, given: Given = Given(), find_config=None,
               source: str = "import") -> tuple[list[PerfPoint], list[tuple[Path, str]]]:
    """Store rows for every result under ``root``, and (file, why) for each one skipped."""
    points, skipped = [], []
    for path in result_files(root):
        try:
            result = read_result_json(path)
        except ValueError as exc:
            skipped.append((path, "not JSON" if isinstance(exc, json.JSONDecodeError)
                            else str(exc)))
            continue
        except OSError as exc:
            skipped.append((path, exc.strerror or str(exc)))
            continue
        if not isinstance(result, dict) or "output_throughput" not in result:
            continue  # not a benchmark result (records, plans)
        if repeats_of(result) > 1:
            continue  # the median of --repeats: its repeats' own files are rows each
        info = result.get("pyserve")
        if info is not None and not isinstance(info, dict):
            skipped.append((path, "its pyserve block is not an object"))
            continue
        if (info or {}).get("suite") == WARMUP_SUITE:
            continue  # a cold throw-away point by design (plan --measure): never a figure
        point, why = point_from_result(result, path, source=source, given=given,
                                       find_config=find_config)
        if point is None:
            skipped.append((path, why))
        else:
            points.append(point)
    return points, skipped


def as_row(point: PerfPoint) -> dict:
    return asdict(point)


# ---- for the planner ---------------------------------------------------------------------

def figure_source(store: PerfStore | None, shape, gpu_name: str, gpus: int, flags: str,
                  gpus_per_node: int, memory, spec, points: list[PerfPoint] | None = None):
    """``plan.auto.FigureOf`` for one model ``shape`` (``perfkey.ModelShape``) on ``gpus`` GPUs
    of kind ``gpu_name``: the stored points (seed and store) of that GPU, GPU count and speed
    flags, turned into figures by ``plan.perfmodel.figure``; ``memory``/``spec``: the model's
    memory and the GPU's spec, for the candidates' own estimates. ``points``: these instead of
    the seed's and the store's (a leave-one-shape-out check of the planner)."""
    from pyservecli.plan.auto import estimate_shape
    from pyservecli.plan.estimate import Workload
    from pyservecli.plan.gpus import DEFAULT_GPU, find_gpu
    from pyservecli.plan.perfkey import shape_from_json
    from pyservecli.plan.perfmodel import (
        correction_ratios,
        figure,
        shape_of_point,
        topology_spread,
    )

    found = all_points(store, gpu=gpu_name) if points is None else points
    pool = [p for p in found if p.gpu == gpu_name and p.gpus == gpus and p.flags == flags]
    mine = [p for p in pool if p.shape == shape.fingerprint]
    shapes: dict[str, object] = {}

    def shape_of(point):
        if point.shape not in shapes:
            try:
                shapes[point.shape] = shape_from_json(point.shape_json)
            except (PyserveError, ValueError, KeyError, TypeError):
                shapes[point.shape] = None
        return shapes[point.shape]

    family = [p for p in pool if p.shape != shape.fingerprint
              and getattr(shape_of(p), "family", None) == shape.family]

    def estimate_of(point):
        other = shape_of(point) if point.shape != shape.fingerprint else None
        mem = memory if point.shape == shape.fingerprint else (
            other.memory() if other is not None else None)
        if mem is None or not point.concurrency:
            return None
        cand = shape_of_point(point)
        if cand is None:
            return None
        return estimate_shape(mem, find_gpu(point.gpu) or DEFAULT_GPU, cand, gpus_per_node,
                              Workload(point.isl, point.osl, point.concurrency))

    def per_pool(compute):
        """``compute(pool, estimate_of)`` once per pool: the pools are fixed per shape
        (``figure`` filters them the same way for every candidate and load)."""
        cache: dict[tuple, object] = {}

        def of(pool):
            key = tuple(id(p) for p in pool)
            if key not in cache:
                cache[key] = compute(pool, estimate_of)
            return cache[key]
        return of

    ratios = per_pool(correction_ratios)
    spread_of = per_pool(topology_spread)

    def figure_of(cand, workload):
        est = estimate_shape(memory, spec, cand, gpus_per_node, workload)
        return figure(cand, workload, est, mine, estimate_of, family,
                      shape.family, ratios, spread_of)

    figure_of.points = len(mine)  # type: ignore[attr-defined]
    figure_of.family_points = len(family)  # type: ignore[attr-defined]
    return figure_of
