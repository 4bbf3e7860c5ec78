"""Commands that start, show and stop servers: launch, status, image, sbatch-script."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from pyservecli.cli import main, workspace_option
from pyservecli.errors import PyserveError
from pyservecli.plan.fleet import MAX_REPLICAS
from pyservecli.run.runtimes import RUNTIMES

LAUNCH_EXAMPLES = """
\b
Examples:
  pyserve launch Qwen/Qwen3-8B                         # one node, every GPU as DP
  pyserve launch Qwen/Qwen3-30B-A3B-FP8 --tp 8 --ep    # 2 nodes x 8: DP 2, EP 16
  pyserve launch ./Qwen3-8B --tp 8 --pp 2              # mp backend, --nnodes 2
  pyserve launch MODEL -tp 4 --max-model-len 8192      # vLLM's own flags work too
  pyserve launch MODEL --tp 8 --ep --nodelist n[1-2] --gpus-per-node 8 --dry-run --format json
  pyserve launch ./tiny --load-format dummy --then "pyserve health --host 127.0.0.1"
  pyserve launch Qwen/Qwen3-8B --replicas 8 --restart   # 8 servers behind vllm-router
  pyserve launch Qwen/Qwen3-8B --prefill 1 --decode 1    # 1P1D over NIXL, P/D router
"""


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
    epilog=LAUNCH_EXAMPLES,
)
@click.argument("model", required=False)
@click.option("--tp", type=int, help="Tensor-parallel size (also -tp / --tensor-parallel-size).")
@click.option("--pp", type=int, help="Pipeline-parallel size; selects the mp backend.")
@click.option("--dp", type=int, help="Data-parallel size [default: all GPUs / (TP x PP)].")
@click.option("--ep/--no-ep", default=None, help="Expert parallelism (EP = DP x TP).")
@click.option("--backend", type=click.Choice(["single", "rpc", "mp", "ray"]),
              help="How ranks are started across nodes [default: from the topology].")
@click.option("--port", type=int, default=8000, show_default=True, help="API server port.")
@click.option("--nodelist", help="Plan for these hosts (SLURM hostlist syntax) instead of the "
              "allocation's.")
@click.option("--gpus-per-node", type=int, help="Override GPU detection.")
@click.option("--gpu-memory", metavar="GIB", help="Memory per GPU to size the model for (80, "
              "141GiB) [default: nvidia-smi, else SLURM's GPU type, else 80 assumed].")
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="Environment variable for every node (repeatable); {node_rank} in VALUE "
              "becomes each node's rank.")
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the API key; it reaches vLLM as VLLM_API_KEY, never in argv.")
@click.option("--ready-timeout", type=float, default=1800.0, show_default=True,
              help="Seconds to wait for READY.")
@click.option("--then", "then_cmd", metavar="COMMAND",
              help="Run COMMAND once READY (env: PYSERVE_ENDPOINT, PYSERVE_BASE_URL, "
              "PYSERVE_MODEL, PYSERVE_WORKSPACE), then stop the server and exit with its "
              "status.")
@click.option("--nsys", is_flag=True, help="Run each node's `vllm serve` under `nsys profile` "
              "(capture range: cudaProfilerApi); one report per node in WORKSPACE/nsys.")
@click.option("--profile", "profile_dir", is_flag=False, flag_value="", default=None,
              metavar="[DIR]", help="vLLM's torch profiler, traces into DIR [default: "
              "WORKSPACE/profiles]; capture with `pyserve bench --profile`.")
@click.option("--image", metavar="TARBALL|REF|FILE", help="Run every node's server in this "
              "image: a `docker save` tarball (loaded or converted where missing), a registry "
              "reference, or a file the runtime runs as is (apptainer .sif, enroot .sqsh).")
@click.option("--runtime", type=click.Choice(list(RUNTIMES)), default=None,
              help="With --image: the container runtime [default: docker]; pyxis runs the "
              "srun step itself in the container (needs an allocation).")
@click.option("--container-mount", "container_mounts", multiple=True, metavar="DIR[:DEST]",
              help="Extra bind mount for --image (repeatable); the workspace and a local model "
              "directory are mounted already.")
@click.option("--force", is_flag=True, help="With --image: reload the image even if present "
              "(only a pyserve-labelled image is replaced).")
@click.option("--privileged", is_flag=True, help="With --image: run privileged containers "
              "(off by default; GPUs and EFA/IB devices are passed through without it).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Base of vLLM's compile caches, one per vLLM version and GPU type, shared "
              "by every node and later launch [default: WORKSPACE/cache].")
@click.option("--no-cache", "no_cache", is_flag=True,
              help="Leave vLLM's compile cache where vLLM puts it (each node's home).")
@click.option("--replicas", type=int, help="Serve N independent replicas over equal shares of "
              "the allocation behind vllm-router on --port (each replica: the usual topology "
              "of its share).")
@click.option("--router-policy", default="round_robin", show_default=True,
              type=click.Choice(["round_robin", "power_of_two", "cache_aware", "random",
                                 "consistent_hash"]),
              help="With a fleet (--replicas, --serve, --prefill/--decode): how the router "
              "picks a server among those of the requested model (and role).")
@click.option("--router-host", metavar="ADDRESS", help="With a fleet: the interface of the "
              "public port [default: every interface]; the router's management API is on "
              "127.0.0.1 only, whatever this says.")
@click.option("--restart", is_flag=True, help="With --replicas, --serve or --prefill/--decode: "
              "restart a server that dies, at most 3 times (it is taken out of rotation "
              "either way).")
@click.option("--serve", "serve_lines", multiple=True, metavar="'MODEL [OPTIONS]'",
              help="Several models behind one router endpoint, one --serve each (instead of "
              "MODEL): its --tp/--pp/--dp/--ep, --replicas N, --gpus N (its share; default "
              "equal), --env and vLLM flags.")
@click.option("--prefill", type=int, metavar="N", help="Disaggregated serving: N prefill "
              "servers (with --decode M), KV cache moved over NIXL, the router in P/D mode.")
@click.option("--decode", type=int, metavar="M", help="With --prefill: M decode servers.")
@click.option("--prefill-tp", type=int, help="TP of each prefill server [default: an equal "
              "share of the allocation, topology as usual].")
@click.option("--decode-tp", type=int, help="TP of each decode server.")
@click.option("--dry-run", is_flag=True, help="Print the plan; launch nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Dry-run output format.")
@workspace_option
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
def launch(model, tp, pp, dp, ep, backend, port, nodelist, gpus_per_node, gpu_memory, env_pairs,
           api_key_file, ready_timeout, then_cmd, nsys, profile_dir, image, runtime,
           container_mounts,
           force, privileged, cache_dir, no_cache, replicas, router_policy, router_host, restart,
           serve_lines, prefill, decode, prefill_tp, decode_tp, dry_run, fmt, workspace, vllm_args):
    """Launch `vllm serve` for MODEL across the allocation and wait until it is READY.

    Arguments pyserve does not know are passed to `vllm serve` unchanged. READY means /health
    answers, /v1/models lists the model and a 1-token completion succeeds; then the endpoint is
    printed and pyserve stays up until Ctrl+C / SIGTERM / scancel, stopping every rank.
    """
    from pyservecli import api

    if serve_lines and model and model.startswith("-"):
        # No MODEL with --serve: the first vLLM flag (for every model) landed in its place.
        model, vllm_args = None, (model, *vllm_args)
    if bool(model) == bool(serve_lines):
        raise PyserveError("give MODEL, or one --serve line per model (not both)")
    settings = launch_settings(
        model=model, tp=tp, pp=pp, dp=dp, ep=ep, backend=backend, port=port, nodelist=nodelist,
        gpus_per_node=gpus_per_node, gpu_memory=gpu_memory, env_pairs=env_pairs,
        api_key_file=api_key_file,
        ready_timeout=ready_timeout, then_cmd=then_cmd, nsys=nsys, profile_dir=profile_dir,
        image=image, runtime=runtime, container_mounts=container_mounts, force=force,
        privileged=privileged,
        cache_dir=cache_dir, no_cache=no_cache, replicas=replicas, router_policy=router_policy,
        router_host=router_host, restart=restart, workspace=workspace, vllm_args=vllm_args,
        serve=[parse_serve_line(line) for line in serve_lines] or None, prefill=prefill,
        decode=decode, prefill_tp=prefill_tp, decode_tp=decode_tp)
    if dry_run:
        prepared = api.prepare_launch(dry_run=True, **settings)
        if fmt == "json":
            click.echo(prepared.plan.to_json())
        elif prepared.is_fleet:
            click.echo(describe_fleet(prepared.plan))
        else:
            click.echo(describe_plan(prepared.plan))
        spec = prepared.container
        if spec is not None and fmt == "text":
            source = spec.tarball or spec.image_file
            click.echo(f"image {spec.tag}" + (f" (from {source})" if source else "") +
                       f", runtime {spec.runtime}")
        return
    sys.exit(api.launch(**settings))


def _then_argv(then_cmd: str | None) -> list[str] | None:
    if then_cmd is None:
        return None
    try:
        argv = shlex.split(then_cmd)
    except ValueError as exc:  # an unbalanced quote
        raise PyserveError(f"--then {then_cmd!r}: {exc}") from None
    if not argv:
        raise PyserveError("--then needs a command")
    return argv


def launch_settings(*, env_pairs, then_cmd, no_cache=False, **params) -> dict:
    """``api.prepare_launch`` settings from the launch command's parameters (also how
    ``pyserve sweep --serve '...'`` reads its launch lines)."""
    return {**params, "vllm_args": list(params.get("vllm_args", ())),
            "env": parse_env_pairs(env_pairs),
            "compile_cache": not no_cache,
            "then": _then_argv(then_cmd),
            "container_mounts": list(params.get("container_mounts", ()))}


def parse_env_pairs(env_pairs) -> dict[str, str]:
    """``--env KEY=VALUE`` options as a mapping (names are checked when the plan is made)."""
    env = {}
    for pair in env_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PyserveError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


# What a --serve line may set: its model and how that model is served. The rest (ports,
# allocation, workspace, key, image) is the launch's, given once outside the lines.
SERVE_LINE_KEYS = ("model", "tp", "pp", "dp", "ep", "backend", "env_pairs", "vllm_args")


def parse_serve_line(line: str) -> dict:
    """One ``--serve 'MODEL [OPTIONS]'`` line: ``{"model", "tp", ..., "replicas", "gpus",
    "env", "vllm_args"}`` for ``api.prepare_launch(serve=[...])``."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:  # an unbalanced quote
        raise PyserveError(f"--serve {line!r}: {exc}") from None
    extra = {"replicas": 1, "gpus": None}
    kept = []
    index = 0
    while index < len(tokens):
        flag, _, inline = tokens[index].partition("=")
        if flag in ("--replicas", "--gpus"):
            value = inline or (tokens[index + 1] if index + 1 < len(tokens) else "")
            if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_REPLICAS:
                raise PyserveError(f"--serve {line!r}: {flag} needs a whole number from 1 to "
                                   f"{MAX_REPLICAS}")
            extra[flag[2:]] = int(value)
            index += 1 if inline else 2
            continue
        kept.append(tokens[index])
        index += 1
    try:
        ctx = launch.make_context("launch", kept)
    except click.UsageError as exc:
        raise PyserveError(f"--serve {line!r}: {exc.format_message()}") from None
    if not ctx.params.get("model"):
        raise PyserveError(f"--serve {line!r}: the line starts with the model")
    # Anything a bare "MODEL" line would not set is the launch's.
    defaults = launch.make_context("launch", [ctx.params["model"]]).params
    for key, value in ctx.params.items():
        if key not in SERVE_LINE_KEYS and value != defaults.get(key):
            raise PyserveError(f"--serve {line!r}: --{key.replace('_', '-')} belongs outside "
                               "the --serve lines (it is the launch's)")
    return {**{k: ctx.params[k] for k in ("model", "tp", "pp", "dp", "ep", "backend")},
            "env": parse_env_pairs(ctx.params["env_pairs"]),
            "vllm_args": list(ctx.params["vllm_args"]), **extra}


def parse_launch_line(line: str) -> dict:
    """``api.prepare_launch`` settings from a ``pyserve launch`` argument string such as
    "Qwen/Qwen3-8B --tp 2 --max-model-len 4096" (pyserve sweep --serve)."""
    try:
        ctx = launch.make_context("launch", shlex.split(line))
    except click.UsageError as exc:
        raise PyserveError(f"--serve {line!r}: {exc.format_message()}") from None
    except ValueError as exc:
        raise PyserveError(f"--serve {line!r}: {exc}") from None
    params = dict(ctx.params)
    for unused in ("dry_run", "fmt"):
        params.pop(unused)
    lines = params.pop("serve_lines")
    params["serve"] = [parse_serve_line(line) for line in lines] or None
    return launch_settings(**params)


def describe_plan(plan) -> str:
    from pyservecli.run.render import shjoin

    t = plan.topology
    lines = [
        f"job {plan.job_id}: {t.nodes} node(s) x {t.gpus_per_node} "
        f"{'GPUs' if plan.has_gpus else 'CPU rank slots'} ({plan.gpu_source})",
        f"TP {t.tp}  PP {t.pp}  DP {t.dp} (local {t.dp_local})  EP {t.ep}  backend {t.backend}",
        f"endpoint {plan.endpoint}",
        *plan.notes,
        *(f"warning: {w}" for w in plan.warnings),
    ]
    for node in plan.nodes:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in node.env.items())
        lines.append(f"node {node.rank} {node.host}: {env + ' ' if env else ''}{shjoin(node.argv)}")
    return "\n".join(lines)


def describe_fleet(fleet) -> str:
    from pyservecli.plan.fleet import worker_url
    from pyservecli.run.render import shjoin

    router = fleet.router
    roles = [fleet.role(i) for i in range(len(fleet.replicas))]
    if router.pd:
        what = f"{roles.count('prefill')} prefill + {roles.count('decode')} decode servers"
    elif router.igw:
        what = f"{len(fleet.replicas)} servers of {len(fleet.models)} models"
    else:
        what = f"{len(fleet.replicas)} replicas"
    lines = [f"fleet {fleet.fleet_id}: {what} behind vllm-router ({router.policy}) at "
             f"{fleet.endpoint}",
             f"gate on {router.listen}:{router.port}: the OpenAI API (/v1/...) and /health "
             "only (with --api-key-file the key is checked there)",
             f"router on 127.0.0.1:{router.admin_port}: {shjoin(router.argv())}"]
    for index, replica in enumerate(fleet.replicas):
        lines.append(f"--- {fleet.label(index)} at {worker_url(replica)} ---")
        lines.append(describe_plan(replica))
    return "\n".join(lines)


@main.command(epilog="""
\b
Examples:
  pyserve status
  pyserve status 123456                     # a launch of SLURM job 123456 in this workspace
  pyserve status local-20261130-101500-4242-ab12cd  # a launch or fleet, by the id it printed
  pyserve status --workspace /shared/me/pyserve-work --format json
""")
@click.argument("launch", required=False)
@workspace_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def status(launch, workspace, fmt):
    """Show a launch recorded in the workspace (the latest, or LAUNCH: a launch id, a fleet
    id, or a SLURM job id), whether its launcher still runs and whether it answers now; for a
    fleet, the router and each server with its role, state and deaths."""
    from pyservecli.run.status import latest_status

    info = latest_status(workspace, launch)
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
    else:
        fields = ["launch_id", "job_id", "state", "launcher_alive", "slurm_state",
                  "answering", "endpoint", "served_model_name", "log_dir", "ready_s"]
        if len(info.get("models") or []) > 1:  # a fleet of several models: name them all
            fields[fields.index("served_model_name")] = "models"
        for key in fields:
            if key in info:
                value = ", ".join(map(str, info[key])) if key == "models" else info[key]
                if isinstance(value, float):
                    value = f"{value:.1f}"  # seconds: 59.0, not 59.00541215699991
                click.echo(f"{key:18} {value}")
        for host, entry in (info.get("startup") or {}).items():
            phases = ", ".join(f"{name} {at}s" for name, at in entry["phases_s"].items())
            cache = entry.get("compile_cache") or "not used"
            click.echo(f"{'startup ' + host:18} {phases or 'no phase seen'}; compile cache "
                       f"{cache}")
        roles = info.get("roles") if isinstance(info.get("roles"), dict) else {}
        if roles.get("router"):
            router = roles["router"]
            click.echo(f"{'router':18} port {router.get('port')} (gate), admin 127.0.0.1:"
                       f"{router.get('admin_port')}, {router.get('mode')} mode, "
                       f"{router.get('policy')}; log {router.get('log')}")
        for replica in roles.get("replicas") or []:
            # As the launcher's log names it (prefill 0, decode 0, replica 1 of MODEL).
            label = str(replica.get("label") or f"{replica.get('role', 'replica')} "
                                                 f"{replica.get('index')}")
            click.echo(f"{label:18} {replica.get('url')} {replica.get('state')} (deaths "
                       f"{replica.get('deaths')}) {replica.get('model')}")


@main.command(epilog="""
\b
Examples:
  pyserve stop                              # the latest launch of this workspace
  pyserve stop 123456-1a2b3c
""")
@click.argument("launch", required=False)
@workspace_option
@click.option("--grace", type=float, default=120.0, show_default=True,
              help="Seconds to wait for the launcher to stop every rank.")
def stop(launch, workspace, grace):
    """Stop a recorded launch: its launcher stops every rank (SIGTERM). When the launcher is
    gone or on another host, its heartbeat is expired and the nodes stop themselves."""
    from pyservecli.run.status import stop_launch

    stop_launch(workspace, launch, grace=grace, say=click.echo)


@main.group(epilog="""
\b
Examples:
  pyserve image load vllm-serve-latest.tar.gz      # on every node of the allocation
  pyserve image ls
  pyserve image rm pyserve:latest
  pyserve image --runtime podman load vllm-serve-latest.tar.gz
""")
@click.option("--runtime", type=click.Choice(["docker", "podman"]), default="docker",
              show_default=True, help="Whose image store (apptainer and pyxis launches "
              "convert their image into WORKSPACE/images themselves).")
@click.pass_context
def image(ctx, runtime):
    """Manage the serving image on the allocation's nodes (or this host outside SLURM).

    Only images carrying the pyserve.version label are ever removed or replaced.
    """
    ctx.obj = runtime


def _on_every_node(*helper_args: str) -> int:
    import subprocess

    from pyservecli.run import cluster as cluster_mod
    from pyservecli.run.procs import srun_per_node

    runtime = click.get_current_context().obj
    argv = [sys.executable, "-m", "pyservecli.workers.image", "--runtime", runtime, *helper_args]
    found = cluster_mod.detect()
    if found.in_slurm:
        argv = [*srun_per_node(found.nodes), *argv]
    return subprocess.run(argv).returncode


@image.command("load")
@click.argument("tarball", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the image if present (pyserve images only).")
def image_load(tarball, force):
    """Load TARBALL (`docker save`, optionally gzip/pigz) where its tag is missing."""
    from pyservecli.run.container import tarball_tag

    tag = tarball_tag(tarball.resolve())
    sys.exit(_on_every_node("load", str(tarball.resolve()), tag, *(["--force"] if force else [])))


@image.command("ls")
def image_ls():
    """pyserve images on each node: NODE, TAG, ID, SIZE, AGE."""
    sys.exit(_on_every_node("ls"))


@image.command("rm")
@click.argument("ref")
def image_rm(ref):
    """Remove REF on each node, if it is a pyserve image (labelled pyserve.version)."""
    sys.exit(_on_every_node("rm", ref))


@main.command("sbatch-script", epilog="""
\b
Examples:
  pyserve sbatch-script > run.sbatch && sbatch -N 2 --gpus-per-node 8 run.sbatch MODEL --tp 8 --ep
""")
def sbatch_script():
    """Print the sbatch script (slurm/run.sbatch is this output)."""
    from pyservecli.run.render import render

    click.echo(render("run.sbatch.j2"), nl=False)

