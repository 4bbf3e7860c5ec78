"""``pyserve bench``: run benchmark points with `vllm bench serve`, keep results, judge them.

For each point: DIR/<suite>/<point>.json (vLLM's result keys plus ``pyserve`` with provenance,
power and validity), DIR/<suite>/<point>.log (the client's output); then DIR/summary.csv.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests

from pyservecli.bench.power import PowerSampler, remote_argv, window_summary
from pyservecli.bench.provenance import launch_record_for, provenance
from pyservecli.bench.results import (
    SUMMARY_COLUMNS,
    PointRecord,
    combine_repeats,
    gpus_of,
    read_result_json,
    repeat_stem,
    repeats_of,
)
from pyservecli.bench.sonnet import write_dataset
from pyservecli.bench.suites import (
    DATASET_FILES,
    SEED,
    WARMUP_SUITE,
    BenchPoint,
    bench_argv,
    point_seed,
    sonnet_dataset_path,
)
from pyservecli.errors import PyserveError
from pyservecli.run.hfhub import tokenizer_access
from pyservecli.run.readiness import auth_headers, model_cards

MAX_FAILED_FRACTION = 0.01  # more failed requests than this makes a point invalid


@dataclass
class ServerInfo:
    base_url: str
    model: str
    max_model_len: int | None


@dataclass
class PointResult:
    point: BenchPoint
    status: str  # ok | invalid | failed | skipped | resumed
    note: str = ""
    result: dict = field(default_factory=dict)
    model: str = ""  # the served model measured
    path: Path | None = None  # the result file written
    parts: list[PointResult] = field(default_factory=list)  # its repeats, with --repeats

    @property
    def valid(self) -> bool:
        return self.status in ("ok", "resumed", "skipped")


class BenchRunner:
    """Runs `vllm bench serve` argv lists. In-process-capable Pythons (vLLM importable here)
    use one long-lived worker (``pyservecli.workers.bench_worker``) per run; otherwise each
    point is a `vllm bench serve` subprocess. A worker that dies is restarted for the next point."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.in_process = importlib.util.find_spec("vllm") is not None
        self.vllm = None if self.in_process else find_vllm()
        self.worker: subprocess.Popen | None = None

    def _start_worker(self) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        worker_log = open(self.log_dir / "bench-worker.log", "a")  # noqa: SIM115
        return subprocess.Popen([sys.executable, "-m", "pyservecli.workers.bench_worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=worker_log, text=True, env=self.env)

    def run(self, argv: list[str], log_path: Path) -> int:
        """``argv`` starts with "vllm bench serve"; returns its exit status."""
        if not self.in_process:
            with open(log_path, "w") as log:
                return subprocess.run([self.vllm, *argv[1:]], stdout=log,
                                      stderr=subprocess.STDOUT, env=self.env).returncode
        if self.worker is None or self.worker.poll() is not None:
            self.worker = self._start_worker()
        try:
            self.worker.stdin.write(json.dumps({"argv": argv[3:], "log": str(log_path)}) + "\n")
            self.worker.stdin.flush()
            answer = self.worker.stdout.readline()
        except BrokenPipeError:
            answer = ""
        try:
            return int(json.loads(answer)["code"])
        except (ValueError, KeyError, TypeError):
            # The worker died (no answer) or broke the protocol: drop it, fail this point,
            # and start a fresh one for the next point.
            if self.worker.poll() is None:
                self.worker.kill()
            self.worker = None
            return -1

    def close(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.stdin.close()
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()


def find_vllm() -> str:
    """The `vllm` command next to this Python or on PATH, or a clear error."""
    local = Path(sys.executable).parent / "vllm"
    if local.exists():
        return str(local)
    found = shutil.which("vllm")
    if found:
        return found
    raise PyserveError(
        "`vllm` is not installed where pyserve bench runs; it uses vLLM's own client "
        "(`vllm bench serve`). Run it where the engine is, e.g. inside the serving image: "
        "docker run --rm --network host IMAGE pyserve bench --host HOST"
    )


def server_info(base_url: str, model: str | None, api_key: str | None) -> ServerInfo:
    """The model to measure at ``base_url``: ``model``, else the first one listed."""
    return served_models(base_url, model, api_key)[0]


def served_models(base_url: str, model: str | None, api_key: str | None) -> list[ServerInfo]:
    """Every model ``base_url`` lists (a router may serve several), or ``model`` alone;
    PyserveError when nothing answers or ``model`` is not among them."""
    try:
        response = requests.get(f"{base_url}/v1/models", headers=auth_headers(api_key),
                                timeout=10)
    except requests.RequestException as exc:
        raise PyserveError(f"no server answers at {base_url} ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise PyserveError(f"{base_url}/v1/models answered {response.status_code}")
    try:
        cards = model_cards(response.json())
    except ValueError as exc:
        raise PyserveError(f"{base_url}/v1/models did not answer an OpenAI model list "
                           f"({exc}); is this a vLLM server?") from None
    if not cards:
        raise PyserveError(f"{base_url} serves no model")
    if model:
        listed, cards = cards, [c for c in cards if c["id"] == model][:1]
        if not cards:
            raise PyserveError(f"{base_url} does not serve {model}; it serves "
                               f"{', '.join(c['id'] for c in listed)}")
    return [ServerInfo(base_url, c["id"], c.get("max_model_len")
                       if isinstance(c.get("max_model_len"), int) else None) for c in cards]


def models_to_measure(base_url: str, model: str | None, api_key: str | None,
                      tokenizer: str | None) -> list[tuple[ServerInfo, str | None]]:
    """Each model to measure at ``base_url`` (``model``, else every one listed) with the name
    of its results folder: None for a single model (its results go straight into OUT)."""
    servers = served_models(base_url, model, api_key)
    if len(servers) == 1:
        return [(servers[0], None)]
    if tokenizer:
        raise PyserveError(f"{base_url} serves {len(servers)} models; --tokenizer is one "
                           "model's: give --model too")
    taken: set[str] = set()
    return [(server, model_dir_name(server.model, taken)) for server in servers]


def model_dir_name(model: str, taken: set[str]) -> str:
    """A results folder named after a served model ("Qwen/Qwen3-8B" -> "Qwen--Qwen3-8B"):
    only letters, digits, '.', '_' and '-' (the name comes from the server), never '.' or
    '..', and not one of ``taken``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", model.replace("/", "--")).strip(".-") or "model"
    unique, number = name, 2
    while unique in taken:
        unique, number = f"{name}-{number}", number + 1
    taken.add(unique)
    return unique


def check_datasets(points: list[BenchPoint], dataset_dir: Path | None) -> None:
    for point in points:
        if point.dataset in DATASET_FILES:
            where = (dataset_dir or Path(".")) / DATASET_FILES[point.dataset]
            if not where.is_file():
                raise PyserveError(
                    f"the {point.suite} suite needs {where} (nothing is downloaded): put "
                    f"{DATASET_FILES[point.dataset]} there or pass --dataset-dir DIR"
                )


def judge(result: dict) -> tuple[str, str]:
    completed = result.get("completed", 0) or 0
    failed = result.get("failed", 0) or 0
    total = completed + failed
    if not result.get("total_output_tokens"):
        return "invalid", "zero output tokens"
    if total and failed / total > MAX_FAILED_FRACTION:
        return "invalid", f"{failed} of {total} requests failed"
    return "ok", ""


def wait_stop_profile(base_url: str, say: Callable[[str], None], timeout: float = 1800) -> None:
    """/stop_profile can take minutes while traces flush: wait for it, saying so."""
    done = threading.Event()
    outcome: dict = {}

    def call():
        try:
            outcome["status"] = requests.post(f"{base_url}/stop_profile",
                                              timeout=timeout).status_code
        except requests.RequestException as exc:
            outcome["error"] = str(exc)
        done.set()

    threading.Thread(target=call, daemon=True).start()
    start = time.monotonic()
    while not done.wait(10):
        say(f"waiting for the profiler to flush ({time.monotonic() - start:.0f}s)")
    if outcome.get("status") != 200:
        raise PyserveError(f"/stop_profile failed: {outcome}")
    say(f"profile flushed in {time.monotonic() - start:.0f}s")


def run_points(points: list[BenchPoint], server: ServerInfo, out_dir: Path, *,
               tokenizer: str | None = None, dataset_dir: Path | None = None,
               api_key: str | None = None, workspace: Path | None = None,
               profile: bool = False, resume: bool = False, seed: int | None = None,
               say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
               perf_db: Path | None = None, perf_source: str = "bench", repeats: int = 1,
               server_argv: list[str] | None = None,
               reset_prefix_cache: bool = False) -> list[PointResult]:
    """Run ``points`` against ``server``, each point's prompts drawn with ``point_seed`` from
    ``seed`` (default: a new random seed per run, so no prompt is already in the server's
    prefix cache; each result records its seed). ``perf_db``: the performance store each good
    result is added to (``bench.perfstore``), as ``perf_source``. ``repeats``: each point that
    many times on fresh prompts, its result the median with the spread (``combine_repeats``).
    ``server_argv``: for a server pyserve did not launch, the command the user states started
    it (``provenance.stated_argv``), recorded in each result's provenance.
    ``reset_prefix_cache``: empty every server's prefix cache before each run of a point
    (refused here, before any point runs, when a server does not allow it)."""
    if repeats < 1:
        raise PyserveError(f"--repeats must be at least 1, got {repeats}")
    check_datasets(points, dataset_dir)
    run_seed = secrets.randbelow(2**31) if seed is None else seed
    record = launch_record_for(server.base_url, workspace)
    reset = None
    if reset_prefix_cache:
        # The servers themselves: a fleet's gate passes the OpenAI API only.
        reset = Reset(server_urls(record) or (server.base_url,), api_key)
        problem = reset_prefix_caches(reset.urls, reset.api_key)
        if problem:
            raise PyserveError(f"--reset-prefix-cache: {problem}")
    origin = provenance(server.base_url, record, model=server.model, server_argv=server_argv,
                        api_key=api_key)
    env = dict(os.environ)
    tokenizer = tokenizer or launched_from(record, server.model)
    problem, offline = tokenizer_access(tokenizer or server.model, env)
    if problem:
        raise PyserveError(problem)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if api_key:
        env["OPENAI_API_KEY"] = api_key  # read by vLLM's client; never on the command line
    runner = BenchRunner(env, out_dir)
    try:
        results = _run_points(points, server, out_dir, runner, origin, tokenizer, dataset_dir,
                              profile, resume, say, power_remote(record), power_gpu_ids(record),
                              run_seed=run_seed,
                              metrics_urls=server_urls(record), repeats=repeats, reset=reset)
        if perf_db is not None:
            _record(results, perf_db, perf_source, say)
        return [replace(r, model=server.model) for r in results]
    finally:
        runner.close()


def _record(results: list[PointResult], perf_db: Path, source: str,
            say: Callable[[str], None]) -> None:
    """The good points just measured (not those resumed) into the performance store."""
    from pyservecli.bench.perfstore import PerfStore, record_result

    store = PerfStore(perf_db)
    # Each repeat is a row of its own (the store averages a key's rows); never their median too.
    for r in [part for each in results for part in (each.parts or [each])]:
        # A warm-up point is a cold measurement by design: never a figure to plan with.
        if r.status == "ok" and r.result and r.path is not None and \
                r.point.suite != WARMUP_SUITE:
            problem = record_result(store, r.result, r.path, source)
            if problem:
                say(f"{r.point.suite}/{r.point.name}: {problem}")


# A random-dataset point above this prefix-cache hit rate (plus the first prompt's share, which
# vLLM's client sends once before the run) is flagged in its note and table.
CACHED_PROMPTS_FLAG = 0.05


@dataclass(frozen=True)
class Reset:
    """Where ``bench --reset-prefix-cache`` empties the prefix cache before each run."""
    urls: tuple[str, ...]
    api_key: str | None = None


_COUNTER = re.compile(r"^vllm:prefix_cache_(queries|hits)(?:_total)?(?:\{[^}]*\})? (\S+)$",
                      re.M)


def server_urls(record: dict | None) -> tuple[str, ...]:
    """The servers behind a fleet's gate (its launch record), whose /metrics the gate does not
    pass: scraped directly from the launch host."""
    servers = (record or {}).get("roles", {}).get("replicas") or [] \
        if isinstance((record or {}).get("roles"), dict) else []
    return tuple(r["url"] for r in servers if isinstance(r, dict) and isinstance(r.get("url"),
                                                                               str))


def cache_counters(urls: tuple[str, ...]) -> dict | None:
    """vLLM's prefix-cache counters (tokens queried and hit, every engine summed) of the
    servers at ``urls``; None when any cannot be read."""
    total = {"queries": 0.0, "hits": 0.0}
    for url in urls:
        try:
            text = requests.get(f"{url.rstrip('/')}/metrics", timeout=5).text
        except requests.RequestException:
            return None
        found = _COUNTER.findall(text)
        if not found:
            return None
        for kind, value in found:
            try:
                total[kind] += float(value)
            except ValueError:
                return None
    return total


def reset_prefix_caches(urls: tuple[str, ...], api_key: str | None = None,
                        tries: int = 5, pause_s: float = 1.0) -> str | None:
    """Empty the prefix cache of the servers at ``urls`` (vLLM's ``POST /reset_prefix_cache``,
    served only with ``VLLM_SERVER_DEV_MODE=1``). None when every one did; else why not."""
    headers = auth_headers(api_key)
    for url in urls:
        for _ in range(tries):
            try:
                answer = requests.post(f"{url.rstrip('/')}/reset_prefix_cache", headers=headers,
                                       timeout=30)
            except requests.RequestException as exc:
                return f"{url} did not answer POST /reset_prefix_cache ({type(exc).__name__})"
            if answer.status_code in (404, 405):
                return (f"{url} does not serve POST /reset_prefix_cache: vLLM serves it only "
                        "with VLLM_SERVER_DEV_MODE=1 (pyserve launch --env "
                        "VLLM_SERVER_DEV_MODE=1)")
            if not answer.ok:
                return f"{url} answered HTTP {answer.status_code} to POST /reset_prefix_cache"
            try:
                done = answer.json().get("success", True) is not False
            except (ValueError, AttributeError):
                done = True
            if done:
                break
            # vLLM refuses while blocks are held (requests still finishing): it says retry.
            time.sleep(pause_s)
        else:
            return f"{url} kept its prefix cache: blocks still in use after {tries} tries"
    return None


def cache_delta(before: dict | None, after: dict | None) -> dict:
    """The prefix-cache hit rate of one point: tokens hit / tokens queried while it ran. A
    point whose prompts the server had cached measures the cache, not the model (#29)."""
    if before is None or after is None:
        return {"available": False, "reason": "the server's /metrics has no prefix-cache "
                "counters here"}
    queries = after["queries"] - before["queries"]
    hits = after["hits"] - before["hits"]
    return {"available": True, "queried_tokens": int(queries), "hit_tokens": int(hits),
            "hit_rate": round(hits / queries, 4) if queries > 0 else None}


def launched_from(record: dict | None, served: str) -> str | None:
    """Where the server pyserve launched (``record``) loaded ``served`` from (a directory or a
    hub id), when that is not the served name itself: the client's tokenizer for a server
    started with --served-model-name (the name alone is nothing the client can load)."""
    if not record:
        return None
    sources = [(r.get("model"), r.get("source")) for r in
               (record.get("roles") or {}).get("replicas") or [] if isinstance(r, dict)]
    sources.append((record.get("served_model_name"), record.get("model")))
    for name, source in sources:
        if name == served and isinstance(source, str) and source and source != served:
            return source
    return None


def power_remote(record: dict | None) -> list[str] | None:
    """srun argv to sample the server's own nodes (``record``: its launch record), when we run
    inside its SLURM allocation."""
    job = str((record or {}).get("job_id", ""))
    if not job.isdigit() or os.environ.get("SLURM_JOB_ID") != job or not shutil.which("srun"):
        return None
    return remote_argv(job, [n["host"] for n in record["plan"]["nodes"]])


def power_gpu_ids(record: dict | None) -> str | None:
    """The GPUs to sample locally: those the launch was given (its launch record), else this
    process's own CUDA_VISIBLE_DEVICES (e.g. inside `launch --then`), else every GPU."""
    if record and record.get("cuda_visible_devices"):
        return record["cuda_visible_devices"]
    return os.environ.get("CUDA_VISIBLE_DEVICES") or None


def _run_points(points, server, out_dir, runner, origin, tokenizer, dataset_dir, profile,
                resume, say, remote=None, gpu_ids=None, run_seed=SEED,
                metrics_urls: tuple[str, ...] = (), repeats: int = 1,
                reset: Reset | None = None) -> list[PointResult]:
    # vLLM's /metrics: a fleet's servers (the gate does not pass it), else the server itself.
    metrics = metrics_urls or (server.base_url,)
    results = []
    for index, point in enumerate(points, 1):
        suite_dir = out_dir / point.suite
        path = suite_dir / point.result_name
        label = f"[{index}/{len(points)}] {point.suite}/{point.name}"
        stored = _read_result(path)
        # A warm-up point is thrown away: once is enough.
        times = 1 if point.suite == WARMUP_SUITE else repeats
        if resume and stored is not None:
            if _is_good(stored) and repeats_of(stored) == times:
                say(f"{label}: done before, skipped (--resume)")
                results.append(PointResult(point, "resumed", "", stored))
                continue
        if server.max_model_len and point.max_len and point.max_len > server.max_model_len:
            note = f"needs {point.max_len} tokens, server max is {server.max_model_len}"
            say(f"{label}: skipped ({note})")
            results.append(PointResult(point, "skipped", note))
            continue
        suite_dir.mkdir(parents=True, exist_ok=True)

        def measure(stem: str, seed: int, said: str, point=point,
                    suite_dir=suite_dir) -> PointResult:
            return _measure_once(point, stem, seed, said, server, suite_dir, runner, origin,
                                 tokenizer, dataset_dir, profile, say, remote, gpu_ids,
                                 run_seed, metrics, reset)

        seed = point_seed(point, run_seed)
        if times == 1:
            results.append(measure(point.name, seed, label))
            continue
        # Each repeat on prompts of its own (another seed), so no repeat finds the prompts of
        # an earlier one in the prefix cache; the point's own file is their median (#29).
        stems = [repeat_stem(point.name, k) for k in range(1, times + 1)]
        parts = [measure(stem, (seed + k) % 2**31, f"{label} repeat {k + 1}/{times}")
                 for k, stem in enumerate(stems)]
        combined = combine_repeats([(r.status, r.note, r.result, f"{stem}.json")
                                    for r, stem in zip(parts, stems, strict=True)], run_seed)
        status = combined["pyserve"]["status"]
        note = combined["pyserve"]["note"] + _keep_or_write(path, combined, stored)
        spread = combined["pyserve"]["repeats"].get("output_tok_s") or {}
        if spread:
            say(f"{label}: {status}, median {spread['median']:,.1f} output tok/s over "
                f"{times} repeats ({spread['min']:,.1f} - {spread['max']:,.1f})"
                + (f"; {note}" if note else ""))
        else:
            say(f"{label}: {status} {note}".rstrip())
        results.append(PointResult(point, status, note, combined, path=path, parts=parts))
    return results


def _measure_once(point, stem, seed, label, server, suite_dir, runner, origin, tokenizer,
                  dataset_dir, profile, say, remote, gpu_ids, run_seed,
                  metrics, reset: Reset | None = None) -> PointResult:
    """One run of ``point`` with prompts of ``seed``, its result in SUITE_DIR/STEM.json."""
    path = suite_dir / f"{stem}.json"
    stored = _read_result(path)
    # vLLM writes the new result beside the old one, which stays until the new one is in.
    running = suite_dir / f"{stem}.running.json"
    running.unlink(missing_ok=True)
    argv = bench_argv(point, server.base_url, server.model, tokenizer, str(suite_dir),
                      str(dataset_dir) if dataset_dir else None, result_name=running.name,
                      seed=seed)
    if point.dataset == "sonnet":
        write_dataset((dataset_dir or Path(".")) / DATASET_FILES["sonnet"],
                      Path(sonnet_dataset_path(point, str(suite_dir))),
                      tokenizer or server.model, point.input_len, point.prefix_len,
                      point.num_prompts, seed)
    say(f"{label}: running")
    if profile:
        requests.post(f"{server.base_url}/start_profile", timeout=60).raise_for_status()
    not_reset = reset_prefix_caches(reset.urls, reset.api_key) if reset else None
    cache_before = cache_counters(metrics)
    started = time.monotonic()
    with PowerSampler(remote=remote, gpu_ids=gpu_ids) as power:
        code = runner.run(argv, suite_dir / f"{stem}.log")
    wall = time.monotonic() - started
    if profile:
        wait_stop_profile(server.base_url, say)
    result = _read_result(running)
    try:  # vLLM writes the result as the measured requests end
        finished = running.stat().st_mtime
    except OSError:
        finished = time.time()
    running.unlink(missing_ok=True)
    if code != 0 or result is None:
        log = suite_dir / f"{stem}.log"
        tail = log.read_text(errors="replace")[-400:] if log.exists() else "(no log)"
        note = f"vllm bench serve exited {code}: {tail.strip().splitlines()[-1:]}"
        failure = {"pyserve": {"status": "failed", "note": note, "seed": seed,
                               "run_seed": run_seed, "provenance": origin}}
        note += _keep_or_write(path, failure, stored)
        say(f"{label}: FAILED ({note})")
        return PointResult(point, "failed", note, failure)
    status, note = judge(result)
    cache = cache_delta(cache_before, cache_counters(metrics))
    notes = [note] if note else []
    if reset:
        cache["reset"] = not_reset is None
        if not_reset:
            notes.append(f"prefix cache not reset: {not_reset}")
    # vLLM's client sends the first prompt once before the run (its ready check), so up to
    # 1/num_prompts of the run's prompt tokens hit the cache whatever the seed.
    flag_above = CACHED_PROMPTS_FLAG + 1 / max(1, point.num_prompts)
    if point.dataset == "random" and (cache.get("hit_rate") or 0) > flag_above:
        # Random prompts are never cached unless resent: this point measured the cache.
        notes.append(f"prefix cache hit rate {100 * cache['hit_rate']:.0f} %: prompts were cached")
    note = "; ".join(notes)
    result["pyserve"] = {
        "status": status, "note": note, "suite": point.suite, "point": point.name,
        "wall_s": round(wall, 3), "seed": seed, "run_seed": run_seed,
        "provenance": origin,
        "prefix_cache": cache,
        "power": window_summary(power.samples, power.stamps,
                                finished - (_seconds(result.get("duration")) or wall),
                                finished, result.get("output_throughput")),
    }
    _keep_or_write(path, result, stored)
    say(f"{label}: {status} {note}".rstrip())
    return PointResult(point, status, note, result, path=path)


def _is_good(result: dict | None) -> bool:
    return (result or {}).get("pyserve", {}).get("status") == "ok"


def _keep_or_write(path: Path, result: dict, stored: dict | None) -> str:
    """Write ``result`` as ``path``, unless it failed and ``path`` holds a good earlier result:
    that is never lost to a failed rerun; the failure goes beside it (POINT.failed.json).
    Returns what the point's note then says (nothing, or where the earlier result is)."""
    failed = path.with_name(f"{path.stem}.failed.json")
    if result.get("pyserve", {}).get("status") == "failed" and _is_good(stored):
        _write_json(failed, result)
        return f"; kept the earlier result in {path.name}"
    _write_json(path, result)
    failed.unlink(missing_ok=True)
    return ""


def _seconds(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _read_result(path: Path) -> dict | None:
    """A result file's JSON object; None when missing, unreadable or not a result."""
    try:
        value = read_result_json(path)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict) -> None:
    """Replace ``path`` whole: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def summary_row(r: PointResult, gpus: int | None) -> dict:
    return PointRecord.from_result(r.result, suite=r.point.suite, point=r.point.name,
                                   status=r.status, note=r.note, gpus=gpus).summary_row()


def server_gpus(results: list[PointResult]) -> int | None:
    """GPUs serving, from the first point whose provenance says (``results.gpus_of``)."""
    for r in results:
        gpus = gpus_of(r.result.get("pyserve", {}).get("provenance", {}))
        if gpus:
            return gpus
    return None


def write_summary(results: list[PointResult], out_dir: Path, gpus: int | None) -> list[dict]:
    rows = [summary_row(r, gpus) for r in results]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows
