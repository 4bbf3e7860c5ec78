"""pyserve as a library: every verb of the CLI as a Python call, with the CLI's names and checks.
The ``pyserve`` command is a thin layer over these functions.

    from pyservecli import api

    print(api.plan("Qwen/Qwen3-30B-A3B-FP8", tp=8, ep=True).to_json())   # launch --dry-run
    with api.serve("./Qwen3-8B", dp=2, vllm_args=["--max-model-len", "4096"]) as server:
        assert all(check.passed for check in api.health(server.base_url))
        results = api.bench(server.base_url, isl=1024, osl=256, concurrency=128,
                            out="results/dp2")
    result = api.offline("./Qwen3-8B", input_len=1024, output_len=256, num_prompts=512)

``serve`` runs the launcher in this process: READY on entering the block, every rank stopped on
leaving it (an exception, Ctrl+C or SIGTERM included). Planning errors (topology, a model that
does not fit, a bad flag, a port in use) are raised as ``PyserveError`` before anything starts;
a rank that dies before READY raises ``PyserveError`` with the cause found in its log.
Nothing here imports vllm or torch at import time.
"""

from __future__ import annotations

import math
import os
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyservecli import default_workspace
from pyservecli.bench.health import DEFAULT_TIMEOUT_S
from pyservecli.errors import PyserveError
from pyservecli.plan.spec import LaunchSpec

if TYPE_CHECKING:  # real types without importing the planner and the runners at start-up
    from pyservecli.plan.auto import Choice
    from pyservecli.plan.estimate import Workload
    from pyservecli.plan.fleet import FleetPlan
    from pyservecli.plan.hosts import Cluster
    from pyservecli.plan.launch import LaunchPlan
    from pyservecli.plan.modelconfig import ModelFacts
    from pyservecli.run.container import ContainerSpec
    from pyservecli.run.launcher import LaunchOptions, Runner

Say = Callable[[str], None]


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")  # one write: lines from threads never run together
    sys.stderr.flush()


def _workspace(workspace: str | Path | None) -> Path:
    return Path(workspace or default_workspace())


@dataclass
class PreparedLaunch:
    """A checked plan and the launcher's options: what ``launch``/``serve`` run."""

    plan: LaunchPlan | FleetPlan  # a FleetPlan with replicas, several models or P/D
    options: LaunchOptions
    container: ContainerSpec | None = None  # --image
    restart: bool = False  # replicas: restart one that dies

    @property
    def is_fleet(self) -> bool:
        from pyservecli.plan.fleet import FleetPlan

        return isinstance(self.plan, FleetPlan)

    def runner(self, say: Say) -> Runner:
        """The launcher for this plan: a ``Launch``, or a ``Fleet`` for replicas."""
        if self.is_fleet:
            from pyservecli.run.fleet import Fleet

            return Fleet(self.plan, self.options, restart=self.restart, say=say)
        from pyservecli.run.launcher import Launch

        return Launch(self.plan, self.options, say=say)


def prepare_launch(model: str | None = None, *, spec: LaunchSpec | None = None,
                   dry_run: bool = False, **settings) -> PreparedLaunch:
    """Every check ``pyserve launch`` makes before starting anything, and the plan.

    ``spec``: the launch (``plan.spec.LaunchSpec``); or ``model`` and ``settings``, the
    keywords of the same names as the spec's fields (``tp=2``, ``image=...``), which are
    ``pyserve launch``'s options. Given both, ``settings`` change the spec.

    ``profile_dir``: vLLM's torch profiler into this directory ("" for WORKSPACE/profiles).
    ``cache_dir``: the base of the compile caches (default WORKSPACE/cache; one directory per
    vLLM version and GPU type under it); ``compile_cache=False`` leaves vLLM's own default.
    ``gpu_memory``: GiB per GPU to size the model for (default: nvidia-smi, SLURM's GPU type).
    ``replicas``: that many independent servers over equal shares of the allocation, behind
    vllm-router (``router_policy``) on ``port``; ``restart`` brings back one that dies.
    ``serve``: several models behind one router endpoint instead of ``model``: one dict per
    model with ``model`` and any of ``tp``, ``pp``, ``dp``, ``ep``, ``backend``, ``env``,
    ``vllm_args``, ``replicas`` (default 1) and ``gpus`` (its share; default equal).
    ``prefill``/``decode``: disaggregated serving, that many prefill and decode servers of
    ``model`` (TP ``prefill_tp``/``decode_tp``, else equal shares), KV moved over NIXL, the
    router in P/D mode. ``router_host``: the interface of the fleet's public port (default all;
    the router's management API is on loopback whatever this says).
    ``perf_db``: the performance store whose measurements can overrule the automatic choice
    (default $PYSERVE_PERF_DB, else WORKSPACE/perf.db).
    ``dry_run``: a plan for anywhere (ports are not probed, nsys need not be installed)."""
    if spec is None:
        spec = LaunchSpec.from_settings(model=model, **settings)
    elif settings or model is not None:
        spec = spec.replace(**settings, **({"model": model} if model is not None else {}))
    m, t, fl, c, pr, r = (spec.model, spec.topology, spec.fleet, spec.container,
                          spec.profiling, spec.run)
    from pyservecli.plan.launch import LaunchRequest, make_plan
    from pyservecli.plan.profiling import NSYS_FINALIZE_GRACE_S, torch_profiler_config
    from pyservecli.plan.vllm_args import option_value
    from pyservecli.run.cluster import detect, resolve_ip
    from pyservecli.run.hfhub import find_config
    from pyservecli.run.launcher import LaunchOptions
    from pyservecli.run.portreserve import is_free_here, reserve
    from pyservecli.run.tools import require_nsys

    ws = _workspace(r.workspace)
    vllm_args = list(m.vllm_args)
    router_host = fl.router_host
    if pr.profile_dir is not None:
        if option_value(vllm_args, "--profiler-config"):
            raise PyserveError("give either --profile or vLLM's --profiler-config, not both")
        target = Path(pr.profile_dir) if pr.profile_dir else ws / "profiles"
        vllm_args += ["--profiler-config", torch_profiler_config(target.resolve())]
    if pr.nsys and not dry_run:
        require_nsys()  # before anything starts
    if not r.ready_timeout > 0:
        raise PyserveError(f"--ready-timeout must be a positive number of seconds, got "
                           f"{r.ready_timeout}")
    if (c.container_mounts or c.force or c.privileged or c.runtime) and not c.image:
        raise PyserveError("--runtime, --container-mount, --force and --privileged need --image")
    container = None
    if c.image:
        from pyservecli.run.container import make_spec
        from pyservecli.run.runtimes import DEFAULT_RUNTIME

        container = make_spec(c.image, list(c.container_mounts), c.force, c.privileged,
                              c.runtime or DEFAULT_RUNTIME)
    request = LaunchRequest(model=m.model, tp=t.tp, pp=t.pp, dp=t.dp, ep=t.ep,
                            backend=t.backend, port=t.port, nodelist=t.nodelist,
                            gpus_per_node=t.gpus_per_node, vllm_args=vllm_args,
                            env=dict(m.env),
                            nsys_dir=(ws / "nsys").resolve() if pr.nsys else None)
    cluster = detect(None, t.nodelist, t.gpus_per_node, gpu_memory=_gib(m.gpu_memory))
    # Inside SLURM the head may be another machine: the launcher asks it about its ports.
    probe = not dry_run and not cluster.in_slurm

    def is_free(port: int) -> bool:
        # Free here, and not planned by another launcher of this host that has not bound it
        # yet (two launches started side by side).
        return not probe or is_free_here(port)

    if fl.replicas is None and not fl.serve and fl.prefill is None and (
            fl.restart or fl.router_policy != "round_robin"):
        raise PyserveError("--restart and --router-policy go with --replicas, --serve or "
                           "--prefill/--decode")
    if fl.serve and (m.model or fl.replicas is not None):
        raise PyserveError("give MODEL (with --replicas), or one --serve line per model")
    if (fl.prefill is None) != (fl.decode is None):
        raise PyserveError("--prefill and --decode go together")
    if fl.prefill is not None and (fl.replicas is not None or fl.serve):
        raise PyserveError("--prefill/--decode do not combine with --replicas or --serve (yet)")
    if (fl.prefill_tp or fl.decode_tp) and fl.prefill is None:
        raise PyserveError("--prefill-tp and --decode-tp go with --prefill/--decode")
    fleet = fl.replicas is not None or bool(fl.serve) or fl.prefill is not None
    if router_host is not None and not fleet:
        raise PyserveError("--router-host goes with --replicas, --serve or --prefill/--decode")
    if router_host is not None:
        router_host = _check_router_host(router_host, probe)
    if r.api_key_file and dry_run:
        from pyservecli.run.launcher import read_api_key

        read_api_key(Path(r.api_key_file))  # refused now as the launch would refuse it
    if fleet:
        if c.force:
            # Each server's node script would replace the image under the servers already
            # running from it.
            raise PyserveError("--force with several servers: reload the image once with "
                               "`pyserve image load TARBALL --force`, then launch without it")
        import socket

        from pyservecli.plan.fleet import ServeGroup, make_fleet

        groups = None
        if fl.serve:
            groups = [ServeGroup(request=LaunchRequest(
                model=line.model, tp=line.tp, pp=line.pp, dp=line.dp, ep=line.ep,
                backend=line.backend, port=t.port, nodelist=t.nodelist,
                gpus_per_node=t.gpus_per_node, vllm_args=[*line.vllm_args, *vllm_args],
                env={**m.env, **line.env}, nsys_dir=request.nsys_dir),
                replicas=line.replicas, gpus=line.gpus) for line in fl.serve]
        if fl.prefill is not None:
            from pyservecli.plan.fleet import pd_groups

            total = None if cluster.gpus_per_node is None \
                else len(cluster.nodes) * cluster.gpus_per_node
            groups = pd_groups(request, fl.prefill, fl.decode, fl.prefill_tp, fl.decode_tp,
                               total)

        def make() -> object:
            return make_fleet(request, cluster, 1 if fl.replicas is None else fl.replicas,
                              is_free=is_free, resolve=resolve_ip,
                              launch_suffix=secrets.token_hex(3), policy=fl.router_policy,
                              find_config=find_config,
                              router_host=resolve_ip(socket.gethostname()),
                              listen=router_host or "0.0.0.0",
                              # The gate and router run here, inside SLURM too.
                              is_free_here=None if dry_run else is_free_here,
                              groups=groups)
    else:
        def make() -> object:
            return make_plan(request, cluster, is_free=is_free, resolve=resolve_ip,
                             launch_suffix=secrets.token_hex(3), find_config=find_config,
                             rank_auto=lambda facts, found, choice, args: ranked_choice(
                                 facts, found, choice, args, ws, r.perf_db))
    plan = make()
    if not dry_run:
        # Held for this launcher until it exits; lost to a launch planned at the same moment:
        # plan again with what is free now.
        for _attempt in range(5):
            if not reserve(planned_ports(plan, here_only=cluster.in_slurm)):
                break
            plan = make()
        else:
            raise PyserveError("the planned ports kept being taken by other launches on this "
                               "host; try again, or give another --port")
        _check_writable(ws, "--workspace")
        if r.cache_dir and r.compile_cache:
            # Given explicitly: refused here rather than each node quietly going without it.
            _check_writable(Path(r.cache_dir), "--cache-dir")
    options = LaunchOptions(workspace=ws.resolve(),
                            api_key_file=Path(r.api_key_file) if r.api_key_file else None,
                            ready_timeout=r.ready_timeout, then=list(r.then) if r.then else None,
                            stop_grace=NSYS_FINALIZE_GRACE_S if pr.nsys else 60.0,
                            container=container,
                            cache_dir=Path(r.cache_dir or ws / "cache").resolve()
                            if r.compile_cache else None)
    return PreparedLaunch(plan=plan, options=options, container=container, restart=fl.restart)


def planned_ports(plan, here_only: bool = False) -> set[int]:
    """Every port a plan will bind where it runs: the API and internal ports of each server,
    and for a fleet its public port, the router's admin and metrics ports and the NIXL side
    channels. ``here_only``: only those bound on the launching host (inside SLURM the servers
    run on the allocation's nodes, which check their own ports)."""
    launches = plan.replicas if hasattr(plan, "router") else [plan]
    if here_only:
        launches = []
    ports: set[int] = set()
    for one in launches:
        ports |= {one.ports.api, one.ports.dp_rpc, one.ports.master, one.ports.ray}
        for node in one.nodes:
            side = node.env.get("VLLM_NIXL_SIDE_CHANNEL_PORT", "")
            if side.isdigit():
                ports.add(int(side))
    if hasattr(plan, "router"):
        ports |= {plan.router.port, plan.router.admin_port, plan.router.metrics_port}
    return ports


def _check_router_host(host: str, probe: bool) -> str:
    """--router-host: an address of this host to put the fleet's public port on."""
    import ipaddress
    import socket

    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise PyserveError(f"--router-host {host!r} is not an IP address (0.0.0.0 for every "
                           "interface, 127.0.0.1 for this host only, or one of its addresses)"
                           ) from None
    if probe and address not in ("0.0.0.0", "::"):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, 0))
            except OSError:
                raise PyserveError(f"--router-host {address} is not an address of this host"
                                   ) from None
    return address


def _gib(gpu_memory: float | str | None) -> float | None:
    """``--gpu-memory`` as GiB per GPU (80, "80GiB", "143771MiB")."""
    from pyservecli.plan.gpus import parse_memory_gib

    return None if gpu_memory is None else parse_memory_gib(str(gpu_memory))


def _check_writable(directory: Path, option: str) -> None:
    """Create ``directory`` if needed; refuse one this user cannot write, before any start."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PyserveError(f"{option} {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PyserveError(f"{option} {directory} is not writable")


def plan(model: str | None = None, **settings):
    """The plan ``pyserve launch --dry-run`` prints (a ``LaunchPlan``; ``.to_json()``).
    ``settings``: those of ``prepare_launch``."""
    return prepare_launch(model, dry_run=True, **settings).plan


def launch(model: str | None = None, *, say: Say = _stderr, **settings) -> int:
    """``pyserve launch``: READY, then serve until stopped (or run ``then``); the exit status."""
    prepared = prepare_launch(model, **settings)
    return prepared.runner(say).run()


@dataclass
class Server:
    """A server started by ``serve``: where it answers and what was launched."""

    base_url: str  # http://HOST:PORT (no /v1)
    workspace: Path
    record_path: Path = field(default=Path())
    ready_s: float = 0.0  # launch to READY, seconds
    fleet: object | None = None  # run.fleet.Fleet with replicas: its replicas and router

    @property
    def host(self) -> str:
        return self.base_url.removeprefix("http://").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def record(self) -> dict:
        """This launch's record (topology, argv per node, READY timings, job id)."""
        import json

        return json.loads(self.record_path.read_text())


@contextmanager
def serve(model: str | None = None, *, say: Say | None = None,
          log_path: str | Path | None = None,
          **settings) -> Iterator[Server]:
    """``pyserve launch`` as a context: yields a ``Server`` once READY, stops every rank on
    leaving. Progress lines go to ``say`` (default: stderr), and are appended to ``log_path``
    when given. ``settings``: those of ``prepare_launch``."""
    prepared = prepare_launch(model, **settings)
    say = say or _stderr
    if log_path is not None:
        say = _tee(say, Path(log_path))
    started = time.monotonic()
    with prepared.runner(say).serving() as running:
        if prepared.is_fleet:
            # The router's endpoint on this host; the fleet's record names every role.
            yield Server(base_url=running.router_url, workspace=prepared.options.workspace,
                         record_path=running.record_path,
                         ready_s=round(time.monotonic() - started, 2), fleet=running)
            return
        yield Server(base_url=prepared.plan.endpoint.removesuffix("/v1"),
                     workspace=prepared.options.workspace, record_path=running.files.record,
                     ready_s=running.times["ready_s"])


def _tee(say: Say, path: Path) -> Say:
    path.parent.mkdir(parents=True, exist_ok=True)

    def both(line: str) -> None:
        with open(path, "a") as log:
            log.write(line + "\n")
        say(line)

    return both


def launch_argv(model: str | None = None, **settings) -> list[str]:
    """``pyserve launch`` arguments for these settings (e.g. for an sbatch line): the same
    keywords as ``launch``."""
    return LaunchSpec.from_settings(model=model, **settings).to_argv()


def status(workspace: str | Path | None = None, launch: str | None = None) -> dict:
    """``pyserve status``: the launch's record (the workspace's latest, or the id ``launch``),
    with whether it answers now, whether its launcher lives and its SLURM state."""
    from pyservecli.run.status import latest_status

    return latest_status(_workspace(workspace), launch)


def stop(workspace: str | Path | None = None, launch: str | None = None, *,
         grace: float = 120.0, say: Say = _stderr) -> None:
    """``pyserve stop``: the launch's launcher stops every rank; a launcher that is gone or on
    another host has its heartbeat expired, and the nodes stop themselves."""
    from pyservecli.run.status import stop_launch

    stop_launch(_workspace(workspace), launch, grace=grace, say=say)


def image(verb: str, *args: str, runtime: str = "docker") -> int:
    """``pyserve image VERB``: ``load TARBALL [--force]``, ``ls`` or ``rm REF`` on every node
    of the allocation (one srun step), or on this host outside SLURM; the exit status."""
    import subprocess

    from pyservecli.run import cluster
    from pyservecli.run.container import tarball_tag
    from pyservecli.run.procs import srun_per_node

    args = list(args)
    if verb == "load":
        tarball = Path(args[0]).resolve()
        args = [str(tarball), tarball_tag(tarball), *args[1:]]
    argv = [sys.executable, "-m", "pyservecli.workers.image", "--runtime", runtime, verb, *args]
    found = cluster.detect()
    if found.in_slurm:
        argv = [*srun_per_node(found.nodes), *argv]
    return subprocess.run(argv).returncode


def read_api_key(path: str | Path) -> str:
    """The key in an --api-key-file, checked as the launch checks it (``run.launcher``)."""
    from pyservecli.run.launcher import read_api_key as read

    return read(Path(path))


def sbatch_script() -> str:
    """``pyserve sbatch-script``: the sbatch script (slurm/run.sbatch is this text)."""
    from pyservecli.run.render import render

    return render("run.sbatch.j2")


def container_runtimes() -> list[str]:
    """The names ``--runtime`` takes (run/runtimes.py's registry)."""
    from pyservecli.run.runtimes import RUNTIMES

    return list(RUNTIMES)


def create_model(name: str, directory: str | Path, *, force: bool = False) -> Path:
    """``pyserve model create``: a config-only directory of a built-in model."""
    from pyservecli.models.dummy import create_model_dir

    return create_model_dir(name, Path(directory), force=force)


def builtin_models() -> list[str]:
    """``pyserve model list``: the built-in config-only models."""
    from pyservecli.models.dummy import builtin_models as names

    return list(names())


def top(workspace: str | Path | None = None, launch: str | None = None):
    """``pyserve top``: a ``run.top.Top`` over the launch (the workspace's latest, or the id
    ``launch``); each ``.snapshot()`` reads every server, the router and the GPU telemetry
    again (rates are per second since the previous snapshot)."""
    from pyservecli.run.status import find_record
    from pyservecli.run.top import Top

    ws = _workspace(workspace)
    find_record(ws, launch)  # a missing launch is refused now, not at the first snapshot
    return Top(ws, launch)


def health(base_url: str, *, model: str | None = None, api_key: str | None = None,
           timeout: float = DEFAULT_TIMEOUT_S, only: Sequence[str] | None = None):
    """``pyserve health``: the list of ``CheckResult`` (``.name``, ``.passed``, ``.detail``)."""
    from pyservecli.bench.health import run_checks

    return run_checks(base_url, model, api_key, timeout=timeout, only=list(only) if only else None)


def bench(base_url: str, *, types: Sequence[str] = ("throughput",), isl: int | None = None,
          osl: int | None = None, concurrency: int | None = None, num_prompts: int | None = None,
          model: str | None = None, tokenizer: str | None = None,
          dataset_dir: str | Path | None = None, out: str | Path | None = None,
          resume: bool = False, profile: bool = False, api_key: str | None = None,
          workspace: str | Path | None = None, seed: int | None = None, say: Say = _stderr,
          perf_db: str | Path | None = None, repeats: int = 1, server_argv: str | None = None,
          reset_prefix_cache: bool = False):
    """``pyserve bench``: runs the points, writes OUT/<suite>/<point>.json and OUT/summary.csv,
    returns the ``PointResult`` list (``.valid``, ``.model``, ``.result`` = vLLM's keys +
    provenance). An endpoint that serves several models (a router) and no ``model``: each model
    in turn, into OUT/<model>/ (``model_dir_name``). ``seed``: the run's prompt seed (default
    a new one per run: no point resends prompts the server has cached; ``suites.point_seed``).
    ``repeats``: each point that many times on fresh prompts; its result is their median, with
    the spread (``results.combine_repeats``). ``server_argv``: for a server pyserve did not
    launch, the command line that started it, as the user states it (secrets redacted).
    ``reset_prefix_cache``: empty the servers' prefix cache before each run of a point (vLLM
    allows it with ``VLLM_SERVER_DEV_MODE=1``; refused before any point runs otherwise)."""
    from pyservecli.bench.provenance import stated_argv
    from pyservecli.bench.runner import (
        models_to_measure,
        run_points,
        server_gpus,
        write_summary,
    )
    from pyservecli.bench.suites import points_for

    points = points_for(list(types), isl=isl, osl=osl, concurrency=concurrency,
                        num_prompts=num_prompts)
    stated = stated_argv(server_argv) if server_argv else None  # refused before any request
    ws = _workspace(workspace)
    out_dir = Path(out) if out else ws / "bench"
    results = []
    for server, folder in models_to_measure(base_url, model, api_key, tokenizer):
        target = out_dir / folder if folder else out_dir
        if folder:
            say(f"model {server.model} -> {target}")
        mine = run_points(points, server, target, tokenizer=tokenizer,
                          dataset_dir=Path(dataset_dir) if dataset_dir else None,
                          api_key=api_key, workspace=ws, profile=profile, resume=resume,
                          seed=seed, say=say, perf_db=_perf_store(ws, perf_db).path,
                          repeats=repeats, server_argv=stated,
                          reset_prefix_cache=reset_prefix_cache)
        write_summary(mine, target, server_gpus(mine))
        results += mine
    return results


@dataclass
class SweepRun:
    """One server configuration of a sweep: its points and where the time went."""

    label: str
    out_dir: Path
    results: list
    wall_s: float
    bench_s: float
    overhead_pct: float | None
    server_start_s: float | None = None  # launch to READY, for --serve configurations


def sweep(suites: Sequence[str] = ("rate", "concurrency"), *, base_url: str | None = None,
          servers: Sequence[tuple[str, LaunchSpec | dict]] = (),
          num_prompts: int | None = None,
          tokenizer: str | None = None, out: str | Path | None = None, resume: bool = False,
          api_key: str | None = None, workspace: str | Path | None = None,
          say: Say = _stderr, points: Sequence | None = None,
          perf_db: str | Path | None = None, perf_source: str = "sweep",
          search: Callable | None = None, repeats: int = 1,
          reset_prefix_cache: bool = False) -> list[SweepRun]:
    """``pyserve sweep``: the suites' points against the server at ``base_url``, or against
    each of ``servers`` (``(label, serve settings)``), launched one at a time. Results in
    OUT/<label>/<suite>/<point>.json and OUT/<label>/summary.csv; ``resume`` skips points done.
    A ``base_url`` serving several models (a router): each model in turn, label
    HOST-PORT/<model>. ``points``: these ``BenchPoint``s instead of the suites' (``pyserve plan
    --measure``); ``search(run_one)``: chooses the points itself against each live server,
    ``run_one(point)`` -> its ``PointResult``, and returns the results (a goodput search).
    Every good result goes to the performance store ``perf_db`` as ``perf_source``.
    ``repeats``, ``reset_prefix_cache``: as for ``bench``."""
    from pyservecli.bench.runner import (
        models_to_measure,
        run_points,
        server_gpus,
        server_info,
        write_summary,
    )
    from pyservecli.bench.suites import points_for
    from pyservecli.bench.sweep import SWEEPS, overhead

    if bool(base_url) == bool(servers):
        raise PyserveError("give either --host (a running server) or --serve (to launch)")
    if points is None:
        points = points_for(list(suites), table=SWEEPS, num_prompts=num_prompts,
                            what="sweep suite")
    points = list(points)
    ws = _workspace(workspace)
    store = _perf_store(ws, perf_db)
    out_dir = Path(out) if out else ws / "sweep"
    # (label, launch settings or None for the running server, its model when known)
    configs: list[tuple[str, dict | None, object | None]] = [
        (label, settings, None) for label, settings in servers]
    if base_url:
        host_label = base_url.removeprefix("http://").replace(":", "-")
        configs = [(f"{host_label}/{folder}" if folder else host_label, None, server)
                   for server, folder in models_to_measure(base_url, None, api_key, tokenizer)]
    runs = []
    for label, settings, known in configs:
        target = out_dir / label

        def run_all(url: str, target: Path = target, known=known) -> tuple[list, float]:
            start = time.monotonic()
            server = known or server_info(url, None, api_key)

            def run(chosen: list) -> list:
                return run_points(chosen, server, target, tokenizer=tokenizer, api_key=api_key,
                                  workspace=ws, resume=resume, say=say, perf_db=store.path,
                                  perf_source=perf_source, repeats=repeats,
                                  reset_prefix_cache=reset_prefix_cache)

            results = run(points) if search is None else search(lambda pt: run([pt])[0])
            return results, time.monotonic() - start

        server_start = None
        if settings is None:
            results, wall = run_all(base_url)
        else:
            launched = time.monotonic()
            spec = settings if isinstance(settings, LaunchSpec) else \
                LaunchSpec.from_settings(**settings)
            with serve(spec=spec.replace(workspace=spec.run.workspace or ws), say=say,
                       log_path=target / "launch.log") as server:
                server_start = time.monotonic() - launched
                results, wall = run_all(server.base_url)
        write_summary(results, target, server_gpus(results))
        cost = overhead(wall, results)
        runs.append(SweepRun(label=label, out_dir=target, results=results,
                             wall_s=cost["wall_s"], bench_s=cost["bench_s"],
                             overhead_pct=cost["overhead_pct"], server_start_s=server_start))
    return runs


def plan_offline(model: str, *, tp: int | None = None, pp: int | None = None,
                 dp: int | None = None, ep: bool | None = None, nodelist: str | None = None,
                 gpus_per_node: int | None = None, input_len: int | None = None,
                 output_len: int | None = None, dataset_path: str | None = None,
                 num_prompts: int = 100, seed: int = 0, viztracer: str | Path | None = None,
                 torch_profile_dir: str | Path | None = None, nsys: bool = False,
                 engine_args: Sequence[str] = (), out: str | Path | None = None,
                 workspace: str | Path | None = None):
    """The plan ``pyserve offline --dry-run`` prints (an ``OfflinePlan``): one torchrun per
    node. ``engine_args`` are vLLM engine arguments in CLI spelling
    (``["--load-format", "dummy"]``); ``viztracer`` writes one trace per rank
    (``FILE-rankN.json``)."""
    from pyservecli.plan.offline import make_request
    from pyservecli.plan.offline import plan_offline as make_offline_plan
    from pyservecli.run.cluster import detect, resolve_ip

    request = make_request(
        model, tp=tp, pp=pp, dp=dp, ep=ep, viztracer=viztracer,
        torch_profile_dir=torch_profile_dir, engine_args=engine_args,
        input_len=input_len, output_len=output_len, dataset_path=dataset_path,
        num_prompts=num_prompts, seed=seed, nsys=nsys)
    cluster = detect(None, nodelist, gpus_per_node)
    return make_offline_plan(request, cluster, Path(out) if out else None, _workspace(workspace),
                             resolve=resolve_ip)


def run_offline(offline_plan, *, say: Say = lambda _line: None,
                perf_db: str | Path | None = None) -> dict:
    """Run every rank of ``offline_plan``, merge; returns the result (also OUT/result.json),
    added to the performance store ``perf_db`` when given (``perf_store_path``)."""
    from pyservecli.bench.offline_run import execute
    from pyservecli.run.tools import require_nsys, require_viztracer

    if offline_plan.nsys:
        require_nsys()
    if offline_plan.config.get("viztracer"):
        require_viztracer()
    result = execute(offline_plan, say)
    if perf_db is not None:
        from pyservecli.bench.perfstore import PerfStore, record_result

        problem = record_result(PerfStore(perf_db), result,
                                Path(offline_plan.out_dir) / "result.json", "offline")
        if problem:
            say(f"pyserve offline: {problem}")
    return result


def offline(model: str, *, say: Say = lambda _line: None, **settings) -> dict:
    """``pyserve offline``: ``plan_offline`` (same settings), then ``run_offline``."""
    return run_offline(plan_offline(model, **settings), say=say)


GOALS = ("throughput", "latency")


@dataclass
class TopologyPlan:
    """``pyserve plan``: the allocation's valid topologies for a model, ranked for a goal."""

    model: str
    goal: str
    workload: Workload
    facts: ModelFacts
    cluster: Cluster
    ranked: list  # plan.auto.Candidate, best first; invalid ones last
    choice: Choice  # what `pyserve launch MODEL` with no flags picks
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    measured: list | None = None  # bench.planreport.MeasuredRow after measure_plan
    measured_with: dict | None = None  # what else the measurements depended on (flags, env)
    explained: list = field(default_factory=list)  # plan.auto.explain's lines
    store: dict | None = None  # the performance store read: path, shape, points found

    def header(self) -> dict:
        gpu = self.cluster.gpu
        return {"model": self.model, "goal": self.goal,
                "workload": {"isl": self.workload.isl, "osl": self.workload.osl,
                             "concurrency": self.workload.concurrency},
                "slo": {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms},
                "allocation": {"nodes": len(self.cluster.nodes),
                               "gpus_per_node": self.cluster.gpus_per_node,
                               "gpu_memory_gib": gpu.memory_gib, "gpu_source": gpu.source,
                               "estimates_for": gpu.estimate_spec.name},
                "model_facts": self.facts.summary(),
                "automatic_choice": {"shape": self.choice.shape.label
                                     if self.choice.shape else None,
                                     "decisions": list(self.choice.decisions)},
                "explained": list(self.explained),
                "perf_store": self.store}

    def report(self) -> dict:
        from pyservecli.bench.planreport import report

        data = report(self.header(), self.ranked, self.measured, self.goal)
        return data if self.measured_with is None else {**data,
                                                         "measured_with": self.measured_with}


def plan_topologies(model: str, *, goal: str = "throughput", isl: int | None = None,
                    osl: int | None = None, concurrency: int | None = None,
                    ttft_ms: float | None = None, tpot_ms: float | None = None,
                    nodelist: str | None = None, gpus_per_node: int | None = None,
                    gpu_memory: float | str | None = None,
                    vllm_args: Sequence[str] = (), workspace: str | Path | None = None,
                    perf_db: str | Path | None = None, gpu_type: str | None = None,
                    disaggregated: bool = True) -> TopologyPlan:
    """Every valid topology of the allocation for ``model`` (one server, and prefill/decode
    fleets when ``disaggregated``), with its memory fit and figure, ranked for ``goal``
    (throughput: output tok/s at ``concurrency`` requests of ``isl``/``osl`` tokens [default
    1024/256, 64 per GPU]; latency: TPOT at concurrency 1). Figures come from the performance
    store (``perf_db``, else $PYSERVE_PERF_DB, else WORKSPACE/perf.db, plus the seed that ships
    with pyserve) where it has points, else from the estimator. ``ttft_ms`` / ``tpot_ms``: rank
    by goodput, the most output tok/s at a load whose figures meet them."""
    from pyservecli.plan.auto import Choice, choose, explain
    from pyservecli.plan.estimate import Workload
    from pyservecli.plan.placement import read_model
    from pyservecli.plan.vllm_args import memory_settings
    from pyservecli.run.cluster import detect
    from pyservecli.run.hfhub import find_config

    if goal not in GOALS:
        raise PyserveError(f"--goal {goal!r}: choose from {', '.join(GOALS)}")
    cluster = detect(None, nodelist, gpus_per_node, gpu_memory=_gib(gpu_memory))
    if cluster.gpus_per_node is None:
        # launch --dry-run here plans vLLM's CPU engine, one rank slot per rank its flags ask
        # for; plan ranks GPU topologies, so it needs to be told the GPUs (#26).
        raise PyserveError(
            "no GPU found here, and plan ranks GPU topologies: say which, e.g. `pyserve plan "
            f"{shlex.quote(model)} --gpus-per-node 8 --gpu-type H100` (add --nodelist for "
            "several nodes); `pyserve launch` here would run vLLM's CPU engine, one rank slot "
            "per rank its flags ask for")
    if gpu_type is not None:
        cluster = _with_gpu_type(cluster, gpu_type, gpu_memory is not None)
    for label, value in (("--isl", isl), ("--osl", osl), ("--concurrency", concurrency),
                         ("--ttft", ttft_ms), ("--tpot", tpot_ms)):
        # not (> 0 and finite): NaN compares false both ways, and an infinite SLO is no SLO.
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise PyserveError(f"{label} must be a positive number, got {value}")
    total = len(cluster.nodes) * cluster.gpus_per_node
    if concurrency is None:
        concurrency = 64 * total if goal == "throughput" else 1
    workload = Workload(isl or 1024, osl or 256, concurrency)
    settings = memory_settings(list(vllm_args))
    _model_dir, facts = read_model(model, settings, find_config)
    if facts.memory is None:
        raise PyserveError(_cannot_size(model, facts.source))
    utilization = settings.gpu_memory_utilization
    try:
        choice = choose(facts, len(cluster.nodes), cluster.gpus_per_node, cluster.gpu,
                        utilization=utilization)
    except PyserveError as exc:
        choice = Choice(None, [str(exc)])
    store = _perf_store(workspace, perf_db)
    # The rules' choice breaks ties in the ranking; launch takes the ranking's first one-server
    # shape at its default load, which the footer shows.
    ranked, source = _ranked(facts, cluster, workload, vllm_args, goal, ttft_ms, tpot_ms,
                             choice.shape, store, disaggregated)
    explained = explain(ranked, goal, choice.shape)
    launch_choice = ranked_choice(facts, cluster, choice, vllm_args, workspace, perf_db)
    return TopologyPlan(model=model, goal=goal, workload=workload, facts=facts,
                        cluster=cluster, ranked=ranked, choice=launch_choice, ttft_ms=ttft_ms,
                        tpot_ms=tpot_ms, explained=explained, store=source)


def perf_store_path(workspace: str | Path | None, perf_db: str | Path | None = None) -> Path:
    """The performance store: ``perf_db``, else $PYSERVE_PERF_DB, else WORKSPACE/perf.db."""
    return _perf_store(workspace, perf_db).path


def _with_gpu_type(cluster, gpu_type: str, memory_given: bool):
    """``--gpu-type``: the GPU the estimates are for (an H100 SXM and an H100 PCIe share 80
    GB but not their speed); its memory too unless --gpu-memory says otherwise."""
    from dataclasses import replace as replaced

    from pyservecli.plan.gpus import GPUS, GpuInfo, find_gpu

    spec = find_gpu(gpu_type.replace("-", " ")) or find_gpu(gpu_type)
    if spec is None:
        names = ", ".join(dict.fromkeys(s.name for _keys, s in GPUS))
        raise PyserveError(f"--gpu-type {gpu_type!r}: not a GPU pyserve knows ({names})")
    old = cluster.gpu
    memory = old.memory_gib if memory_given and old is not None else spec.memory_gib
    source = old.source if memory_given and old is not None else f"--gpu-type {spec.name}"
    return replaced(cluster, gpu=GpuInfo(memory, spec, source))


def _cannot_size(model: str, why: str) -> str:
    """Why a model cannot be planned, and what the user can do about it (#26 item 1)."""
    from pyservecli.models.dummy import builtin_models

    why = why.replace(" (set HF_HUB_OFFLINE=1 to skip the attempt)", "")
    why = why.removesuffix(": model checks skipped")
    return (f"cannot size {model}: {why}. Plan needs its config.json: give a local model "
            f"directory, or fetch the config into the HF cache where the hub is reachable "
            f"(hf download {model} config.json), or plan a built-in shape "
            f"(pyserve model create NAME DIR, then pyserve plan DIR; built in: "
            f"{', '.join(builtin_models())})")


def _perf_store(workspace: str | Path | None, perf_db: str | Path | None):
    from pyservecli.bench.perfstore import PerfStore, store_path

    return PerfStore(store_path(_workspace(workspace), perf_db))


def _ranked(facts, cluster, workload, vllm_args: Sequence[str], goal: str,
            ttft_ms: float | None, tpot_ms: float | None, preferred, store,
            disaggregated: bool) -> tuple[list, dict]:
    """The candidates of ``facts``' model on ``cluster``, with figures from ``store``, ranked;
    and what the store held for them."""
    from pyservecli.bench.perfstore import figure_source
    from pyservecli.plan.auto import candidates, rank, with_figures
    from pyservecli.plan.perfkey import flags_key, model_shape, speed_flags
    from pyservecli.plan.vllm_args import memory_settings

    settings = memory_settings(list(vllm_args))
    found = candidates(facts, len(cluster.nodes), cluster.gpus_per_node, cluster.gpu, workload,
                       settings.gpu_memory_utilization, disaggregated=disaggregated)
    spec = cluster.gpu.estimate_spec
    shape = model_shape(facts.config or {}, dtype=settings.dtype,
                        quantization=settings.quantization,
                        kv_cache_dtype=settings.kv_cache_dtype)
    gpu_name = spec.name if cluster.gpu.spec is not None else "unknown"
    figure_of = figure_source(store, shape, gpu_name,
                              len(cluster.nodes) * cluster.gpus_per_node,
                              flags_key(speed_flags(list(vllm_args))), cluster.gpus_per_node,
                              facts.memory, spec)
    found = with_figures(found, workload, figure_of, ttft_ms, tpot_ms)
    source = {"path": str(store.path), "shape": shape.fingerprint, "family": shape.family,
              "gpu": gpu_name, "points": figure_of.points,
              "family_points": figure_of.family_points}
    return rank(found, goal, ttft_ms, tpot_ms, preferred), source


def ranked_choice(facts, cluster, choice, serve_args: Sequence[str],
                  workspace: str | Path | None = None, perf_db: str | Path | None = None):
    """``pyserve launch MODEL`` with no parallel flag: the automatic rules' ``choice``, unless
    ``pyserve plan``'s ranking (the same figures, throughput at its default load) puts another
    one-server shape first; the decisions say which and why."""
    from pyservecli.plan.auto import Choice, explain, overrules_rules
    from pyservecli.plan.estimate import Workload

    if choice.shape is None or facts.memory is None or cluster.gpus_per_node is None:
        return choice
    total = len(cluster.nodes) * cluster.gpus_per_node
    try:
        ranked, _source = _ranked(facts, cluster, Workload(1024, 256, 64 * total), serve_args,
                                  "throughput", None, None, choice.shape,
                                  _perf_store(workspace, perf_db), disaggregated=False)
    except PyserveError as exc:
        # A broken store must not stop a launch the rules can plan: said, then the rules.
        return Choice(choice.shape, choice.decisions,
                      choice.warnings + [f"{exc}; the automatic rules decide"], choice.fit)
    first = next((c for c in ranked if c.valid), None)
    if not overrules_rules(first, choice.shape):
        return choice
    lines = explain(ranked, "throughput", choice.shape)[-1:]
    return Choice(first.shape, lines + [f"without that the rules would take "
                                        f"{choice.shape.describe()} ("
                                        + "; ".join(choice.decisions) + ")"],
                  choice.warnings, first.fit)


def measure_plan(topology_plan: TopologyPlan, *, top: int = 3, out: str | Path | None = None,
                 resume: bool = False, num_prompts: int | None = None,
                 nodelist: str | None = None, gpus_per_node: int | None = None,
                 gpu_memory: float | str | None = None, vllm_args: Sequence[str] = (),
                 port: int = 8000, api_key_file: str | Path | None = None,
                 env: dict[str, str] | None = None, workspace: str | Path | None = None,
                 perf_db: str | Path | None = None, ready_timeout: float = 1800.0,
                 only: Sequence[str] = (), repeats: int = 1, say: Say = _stderr) -> Path:
    """``pyserve plan --measure``: launch the ``top`` valid candidates one after another (the
    compile cache of the first warms the next), run a short throw-away point on each (the first
    requests after READY pay one-time kernel compilation), then benchmark it at the goal's
    point, or with SLOs search its goodput (``planreport.goodput_search``). Writes
    OUT/plan.json with the measured ranking beside the predicted one; results land in
    OUT/<candidate>/plan/<point>.json like a sweep's and in the performance store, so
    ``resume`` skips what was measured and the next ``pyserve plan`` answers from the store.
    A candidate that fails to start is recorded and skipped. ``only``: these candidates
    (labels as in the report: tp1-dp2, 1p-tp1-1d-tp1) instead of the ``top`` ones.
    ``repeats``: every measured point that many times; the ranking then says which differences
    lie inside the spread."""
    import json

    from pyservecli.bench.planreport import PLAN_FILE
    from pyservecli.bench.results import PointRecord
    from pyservecli.bench.suites import WARMUP_SUITE, _random
    from pyservecli.run.jobfiles import write_private

    if top < 1:
        raise PyserveError(f"--top must be at least 1, got {top}")
    plan_ = topology_plan
    w = plan_.workload
    slo = plan_.ttft_ms is not None or plan_.tpot_ms is not None

    point = _plan_point(w, w.concurrency, num_prompts)
    warmup = _random(WARMUP_SUITE, w.isl, min(w.osl, 16), "inf", max(1, min(w.concurrency, 64)),
                     max(1, min(w.concurrency, 64)))
    ws = _workspace(workspace)
    out_dir = Path(out) if out else ws / "plans" / _plan_label(plan_, point.name)
    chosen = [c for c in plan_.ranked if c.valid][:top]
    if only:
        labels = {c.shape.label: c for c in plan_.ranked}
        unknown = [label for label in only if label not in labels]
        if unknown:
            raise PyserveError(f"--only {','.join(unknown)}: no such candidate; these are: "
                               f"{', '.join(labels)}")
        refused = [label for label in only if not labels[label].valid]
        if refused:
            raise PyserveError(f"--only {','.join(refused)}: does not fit this allocation")
        chosen = [labels[label] for label in dict.fromkeys(only)]
    if not chosen:
        raise PyserveError("no valid topology to measure")
    # What changes a measurement besides the topology: --resume reuses only results measured
    # with the same (a result of other vLLM flags is another experiment).
    measured_with = {"model": plan_.model, "vllm_args": list(vllm_args),
                     "env": {k: env[k] for k in sorted(env or {})},
                     "num_prompts": point.num_prompts,
                     "gpu_memory": gpu_memory}
    if repeats > 1:  # absent for one run: results measured before --repeats still resume
        measured_with["repeats"] = repeats
    if slo:
        measured_with["slo"] = {"ttft_ms": plan_.ttft_ms, "tpot_ms": plan_.tpot_ms}
    with_file = out_dir / "measured-with.json"
    if resume and with_file.is_file():
        try:
            before = json.loads(with_file.read_text())
        except (OSError, ValueError):
            before = None
        if before != measured_with:
            raise PyserveError(f"--resume: the results in {out_dir} were measured with other "
                               f"settings ({json.dumps(before)}; now {json.dumps(measured_with)}"
                               "); give another --out, or leave out --resume to measure again")
    elif resume and out_dir.is_dir() and any(out_dir.iterdir()):
        raise PyserveError(f"--resume: {out_dir} does not say which settings its results were "
                           "measured with; give another --out, or leave out --resume")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_private(with_file, json.dumps(measured_with, indent=2) + "\n")

    def record_of(result) -> PointRecord | None:
        if result is None or not result.valid or not result.result or \
                result.status not in ("ok", "resumed"):
            return None
        return PointRecord.from_result(result.result, suite="plan", point=result.point.name)

    def search(run_one):
        """Against a live server: the warm-up, then the plan's points (``_plan_points``)."""
        results = [run_one(warmup)]

        def run_at(load: int):
            result = run_one(_plan_point(w, load, num_prompts))
            results.append(result)
            return record_of(result)

        _plan_points(plan_, run_at)
        return results

    rows = []
    for number, cand in enumerate(chosen, start=1):
        shape = cand.shape
        settings = {"model": plan_.model, **shape.launch_settings(),
                    "nodelist": nodelist, "gpus_per_node": gpus_per_node,
                    "gpu_memory": gpu_memory, "vllm_args": list(vllm_args), "port": port,
                    "api_key_file": api_key_file, "ready_timeout": ready_timeout,
                    "env": dict(env or {})}
        replayed = _replay(out_dir / shape.label, plan_, num_prompts) if resume else None
        if replayed is not None:
            say(f"pyserve: {shape.describe()} ({number} of {len(chosen)}) measured "
                f"already: {out_dir / shape.label}")
            rows.append(_measured_row(cand, plan_, replayed))
            continue
        say(f"pyserve: measuring {shape.describe()} ({number} of {len(chosen)})")
        records: list = []
        try:
            runs = sweep(servers=[(shape.label, settings)], out=out_dir, resume=resume,
                         workspace=ws, say=say, perf_db=perf_db, perf_source="plan",
                         search=search, points=[point], repeats=repeats)
            records = [(r.point.max_concurrency, record_of(r)) for r in runs[0].results
                       if r.point.suite == "plan"]
        except PyserveError as exc:
            say(f"pyserve: {shape.describe()} failed: {exc}")
        rows.append(_measured_row(cand, plan_, records))
    plan_.measured = rows
    plan_.measured_with = measured_with
    data = plan_.report()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_private(out_dir / PLAN_FILE, json.dumps(data, indent=2) + "\n")
    return out_dir / PLAN_FILE


def _plan_point(w, load: int, num_prompts: int | None):
    """The measured point of ``plan --measure`` at ``load`` requests in flight."""
    from pyservecli.bench.suites import _random

    return _random("plan", w.isl, w.osl, "inf", num_prompts or max(100, 4 * load), load)


def _meets_plan_slo(plan_: TopologyPlan, record) -> bool:
    """Whether a measured point (``PointRecord``) meets the plan's SLOs (p99)."""
    from pyservecli.plan.auto import meets_slo
    from pyservecli.plan.perfmodel import MEASURED, Figure

    figure = Figure(record.output_tok_s or 0.0, record.ttft_p50_ms, record.tpot_p50_ms,
                    record.ttft_p99_ms, record.tpot_p99_ms, MEASURED, "")
    return meets_slo(figure, plan_.ttft_ms, plan_.tpot_ms)


def _plan_points(plan_: TopologyPlan, run_at) -> None:
    """The loads ``plan --measure`` measures one candidate at, through ``run_at(load)`` ->
    ``PointRecord`` or None: the goal's point; with SLOs a goodput search from it. Live and
    replayed from stored results (``_replay``) alike, so --resume asks for the same loads."""
    from pyservecli.bench.planreport import goodput_search

    w = plan_.workload
    if plan_.ttft_ms is None and plan_.tpot_ms is None:
        run_at(w.concurrency)
        return
    goodput_search(run_at, w.concurrency, lambda r: _meets_plan_slo(plan_, r),
                   limit=max(w.concurrency * 4, 1))


def _measured_row(cand, plan_: TopologyPlan, records: list):
    """A candidate's measured row from its (load, record) pairs: the goal's point, and with
    SLOs the best load that met them and every load tried."""
    from pyservecli.bench.planreport import MeasuredRow

    at_point = next((rec for load, rec in records
                     if load == plan_.workload.concurrency and rec), None)
    rank = plan_.ranked.index(cand) + 1
    if plan_.ttft_ms is None and plan_.tpot_ms is None:
        return MeasuredRow(cand, rank, at_point)
    held = [(load, rec) for load, rec in records
            if rec is not None and _meets_plan_slo(plan_, rec)]
    good = max(held, key=lambda item: item[1].output_tok_s or 0.0, default=None)
    return MeasuredRow(cand, rank, at_point, goodput=good, tried=list(records))


class _NotMeasured(Exception):
    pass


def _replay(folder: Path, plan_: TopologyPlan, num_prompts: int | None) -> list | None:
    """--resume: the candidate's points read back from ``folder`` (the measurement is
    deterministic given them, a goodput search too); None when a load is not measured yet."""
    import json

    from pyservecli.bench.results import PointRecord

    records: list = []

    def run_at(load: int):
        point = _plan_point(plan_.workload, load, num_prompts)
        try:
            kept = json.loads((folder / "plan" / point.result_name).read_text())
        except (OSError, ValueError):
            raise _NotMeasured from None
        if not isinstance(kept, dict) or (kept.get("pyserve") or {}).get("status") != "ok":
            raise _NotMeasured
        record = PointRecord.from_result(kept, suite="plan", point=point.name)
        records.append((load, record))
        return record

    try:
        _plan_points(plan_, run_at)
    except _NotMeasured:
        return None
    return records


def _plan_label(plan_: TopologyPlan, point: str) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", plan_.model.strip("/").split("/")[-1]) or "model"
    cluster = plan_.cluster
    return f"{name}-{len(cluster.nodes)}x{cluster.gpus_per_node}-{plan_.goal}-{point}"
