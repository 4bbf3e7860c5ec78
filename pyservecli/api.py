"""pyserve as a library: the CLI's verbs as Python calls, with the CLI's names and checks.

    from pyservecli import api

    print(api.plan("Qwen/Qwen3-30B-A3B-FP8", tp=8, ep=True).to_json())   # launch --dry-run
    with api.serve("./Qwen3-8B", dp=2, vllm_args=["--max-model-len", "4096"]) as server:
        assert all(check.passed for check in api.health(server.base_url))
        results = api.bench(server.base_url, isl=1024, osl=256, concurrency=128,
                            out="results/dp2")
    result = api.offline("./Qwen3-8B", input_len=1024, output_len=256, num_prompts=512)

``serve`` runs ``pyserve launch`` itself (a child process in its own session), so signal
handling, READY and the stopping of every rank are the launcher's, exactly as on the command
line; its leaving the ``with`` block stops the server. Planning errors (topology, a model that
does not fit, a bad flag) are raised as ``PyserveError`` before anything starts.
Nothing here imports vllm or torch at import time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import default_workspace


def _workspace(workspace: str | Path | None) -> Path:
    return Path(workspace or default_workspace())


def plan(model: str, *, tp: int | None = None, pp: int | None = None, dp: int | None = None,
         ep: bool | None = None, backend: str | None = None, port: int = 8000,
         nodelist: str | None = None, gpus_per_node: int | None = None,
         vllm_args: Sequence[str] = (), env: dict[str, str] | None = None):
    """The plan ``pyserve launch --dry-run`` prints (a ``LaunchPlan``; ``.to_json()``)."""
    from .plan import LaunchRequest, make_plan

    request = LaunchRequest(model=model, tp=tp, pp=pp, dp=dp, ep=ep, backend=backend, port=port,
                            nodelist=nodelist, gpus_per_node=gpus_per_node,
                            vllm_args=list(vllm_args), env=dict(env or {}))
    # As the CLI's dry run: the head's ports are checked by the launcher, on the head.
    return make_plan(request, is_free=lambda _port: True)


@dataclass
class Server:
    """A server started by ``serve``: where it answers and what was launched."""

    base_url: str  # http://HOST:PORT (no /v1)
    workspace: Path

    @property
    def host(self) -> str:
        return self.base_url.removeprefix("http://").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def record(self) -> dict:
        """The launch record (topology, argv per node, READY timings, job id)."""
        return json.loads((self.workspace / "latest.json").read_text())


def launch_argv(model: str, *, tp: int | None = None, pp: int | None = None,
                dp: int | None = None, ep: bool | None = None, backend: str | None = None,
                nodelist: str | None = None, gpus_per_node: int | None = None,
                env: dict[str, str] | None = None, api_key_file: str | Path | None = None,
                image: str | None = None, vllm_args: Sequence[str] = ()) -> list[str]:
    """``pyserve launch`` arguments for these settings (after ``launch``, before workspace/port)."""
    argv = [model]
    for flag, value in (("--tp", tp), ("--pp", pp), ("--dp", dp), ("--backend", backend),
                        ("--nodelist", nodelist), ("--gpus-per-node", gpus_per_node),
                        ("--api-key-file", api_key_file), ("--image", image)):
        if value is not None:
            argv += [flag, str(value)]
    if ep is not None:
        argv.append("--ep" if ep else "--no-ep")
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    return argv + list(vllm_args)


@contextmanager
def serve(model: str, *, tp: int | None = None, pp: int | None = None, dp: int | None = None,
          ep: bool | None = None, backend: str | None = None, port: int = 8000,
          nodelist: str | None = None, gpus_per_node: int | None = None,
          env: dict[str, str] | None = None, api_key_file: str | Path | None = None,
          image: str | None = None, vllm_args: Sequence[str] = (),
          workspace: str | Path | None = None, ready_timeout: float = 1800,
          log_path: str | Path | None = None) -> Iterator[Server]:
    """``pyserve launch`` as a context: yields a ``Server`` once READY, stops every rank on
    exit. The launcher's stderr (progress, errors) goes to ``log_path``
    (default WORKSPACE/api-launch.log)."""
    from .sweep import launched_server

    # The same plan the launcher will make, so a bad request fails here, before any process.
    plan(model, tp=tp, pp=pp, dp=dp, ep=ep, backend=backend, port=port, nodelist=nodelist,
         gpus_per_node=gpus_per_node, vllm_args=vllm_args, env=env)
    ws = _workspace(workspace).resolve()
    args = launch_argv(model, tp=tp, pp=pp, dp=dp, ep=ep, backend=backend, nodelist=nodelist,
                       gpus_per_node=gpus_per_node, env=env, api_key_file=api_key_file,
                       image=image, vllm_args=vllm_args)
    log = Path(log_path) if log_path else ws / "api-launch.log"
    with launched_server(args, ws, port, log, ready_timeout=ready_timeout) as base:
        yield Server(base_url=base, workspace=ws)


def health(base_url: str, *, model: str | None = None, api_key: str | None = None,
           timeout: float = 60.0, only: Sequence[str] | None = None):
    """``pyserve health``: the list of ``CheckResult`` (``.name``, ``.passed``, ``.detail``)."""
    from .health import run_checks

    return run_checks(base_url, model, api_key, timeout=timeout, only=list(only) if only else None)


def bench(base_url: str, *, types: Sequence[str] = ("throughput",), isl: int | None = None,
          osl: int | None = None, concurrency: int | None = None, num_prompts: int | None = None,
          model: str | None = None, tokenizer: str | None = None,
          dataset_dir: str | Path | None = None, out: str | Path | None = None,
          resume: bool = False, profile: bool = False, api_key: str | None = None,
          workspace: str | Path | None = None):
    """``pyserve bench``: runs the points, writes OUT/<suite>/<point>.json and OUT/summary.csv,
    returns the ``PointResult`` list (``.valid``, ``.result`` = vLLM's keys + provenance)."""
    from .bench import run_points, server_gpus, server_info, write_summary
    from .benchsuites import choose_points

    points = choose_points(list(types), isl, osl, concurrency, num_prompts)
    ws = _workspace(workspace)
    out_dir = Path(out) if out else ws / "bench"
    results = run_points(points, server_info(base_url, model, api_key), out_dir,
                         tokenizer=tokenizer,
                         dataset_dir=Path(dataset_dir) if dataset_dir else None,
                         api_key=api_key, workspace=ws, profile=profile, resume=resume)
    write_summary(results, out_dir, server_gpus(results))
    return results


def offline(model: str, *, tp: int | None = None, pp: int | None = None,
            dp: int | None = None, ep: bool | None = None,
            nodelist: str | None = None, gpus_per_node: int | None = None,
            input_len: int | None = None, output_len: int | None = None,
            dataset_path: str | None = None, num_prompts: int = 100, seed: int = 0,
            viztracer: str | Path | None = None, torch_profile_dir: str | Path | None = None,
            nsys: bool = False, engine_args: Sequence[str] = (), out: str | Path | None = None,
            workspace: str | Path | None = None,
            say: Callable[[str], None] = lambda _line: None) -> dict:
    """``pyserve offline``: runs every rank, returns the merged result (also OUT/result.json).
    ``engine_args`` are vLLM engine arguments in CLI spelling (``["--load-format", "dummy"]``);
    ``viztracer`` writes one trace per rank (``FILE-rankN.json``); ``say`` gets progress lines."""
    from .offline import execute, make_request, plan_offline
    from .profiling import require_nsys, require_viztracer

    request = make_request(
        model, tp=tp, pp=pp, dp=dp, ep=ep, viztracer=viztracer,
        torch_profile_dir=torch_profile_dir, engine_args=engine_args, nodelist=nodelist,
        gpus_per_node=gpus_per_node, input_len=input_len, output_len=output_len,
        dataset_path=dataset_path, num_prompts=num_prompts, seed=seed, nsys=nsys)
    if nsys:
        require_nsys()
    if viztracer:
        require_viztracer()
    offline_plan = plan_offline(request, Path(out) if out else None, _workspace(workspace))
    return execute(offline_plan, say, nsys=nsys)
