"""Commands that start, show and stop servers: launch, status, image, sbatch-script."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import fields
from pathlib import Path

import click

from pyservecli.cli import main, workspace_option
from pyservecli.errors import PyserveError
from pyservecli.plan.spec import FIELDS, GROUPS, LaunchSpec, ServeLine, serve_line_extras

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
  pyserve launch ./Qwen3-8B --image vllm-serve-latest.tar.gz --runtime podman   # or pyxis, ...
"""


def _choices(declared) -> list[str]:
    # A registry's names where the spec names one (plan/ cannot import run/'s registries).
    if declared == "container runtimes":
        from pyservecli import api

        return api.container_runtimes()
    return list(declared)


def spec_option(name: str, decl: dict):
    """The click option of one LaunchSpec field, from its declaration (plan/spec.py)."""
    from dataclasses import MISSING

    group = GROUPS[FIELDS[name][0]]
    default = next(f for f in fields(group) if f.name == name)
    default = None if default.default is MISSING else default.default
    kind, flag = decl["kind"], decl["flag"]
    kw = {"help": decl["help"]}
    for key in ("metavar", "show_default"):
        if key in decl:
            kw[key] = decl[key]
    if kind == "argument":
        return click.argument(name, required=False)
    if kind == "args":
        return click.argument(name, nargs=-1, type=click.UNPROCESSED)
    if kind == "workspace":
        return workspace_option
    types = {"int": int, "float": float,
             "path": click.Path(dir_okay=False, path_type=Path),
             "dir": click.Path(file_okay=False, path_type=Path)}
    if kind in types:
        return click.option(flag, name, type=types[kind], default=default, **kw)
    if kind == "flag":
        return click.option(flag, name, is_flag=True, **kw)
    if kind == "negated_flag":
        return click.option(flag, name, flag_value=not default, default=default, **kw)
    if kind == "bool_pair":
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, **kw)
    if kind == "choice":
        return click.option(flag, name, type=click.Choice(_choices(decl["choices"])),
                            default=default, **kw)
    if kind in ("pairs", "multiple", "serve"):
        return click.option(flag, name, multiple=True, **kw)
    if kind == "optional_value":
        return click.option(flag, name, is_flag=False, flag_value="", default=None, **kw)
    return click.option(flag, name, default=default, **kw)  # str, command


def spec_options(*names: str):
    """Some LaunchSpec fields as a command's options (``pyserve plan --measure`` launches):
    declared once, in plan/spec.py, whichever command takes them."""
    def apply(func):
        for name in reversed(names):
            func = spec_option(name, FIELDS[name][1])(func)
        return func
    return apply


def launch_options(func):
    """Every LaunchSpec field as the command's option (MODEL first, vLLM's arguments last)."""
    for name, (_group, decl) in reversed(FIELDS.items()):
        func = spec_option(name, decl)(func)
    return func


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
    epilog=LAUNCH_EXAMPLES,
)
@launch_options
@click.option("--dry-run", is_flag=True, help="Print the plan; launch nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Dry-run output format.")
def launch(dry_run, fmt, **params):
    """Launch `vllm serve` for MODEL across the allocation and wait until it is READY.

    Arguments pyserve does not know are passed to `vllm serve` unchanged. READY means /health
    answers, /v1/models lists the model and a 1-token completion succeeds; then the endpoint is
    printed and pyserve stays up until Ctrl+C / SIGTERM / scancel, stopping every rank.
    """
    from pyservecli import api

    model = params["model"]
    if params["serve"] and model and model.startswith("-"):
        # No MODEL with --serve: the first vLLM flag (for every model) landed in its place.
        params.update(model=None, vllm_args=(model, *params["vllm_args"]))
    if bool(params["model"]) == bool(params["serve"]):
        raise PyserveError("give MODEL, or one --serve line per model (not both)")
    spec = spec_from_params(params)
    if dry_run:
        prepared = api.prepare_launch(spec=spec, dry_run=True)
        if fmt == "json":
            click.echo(prepared.plan.to_json())
        elif prepared.is_fleet:
            click.echo(describe_fleet(prepared.plan))
        else:
            click.echo(describe_plan(prepared.plan))
        container = prepared.container
        if container is not None and fmt == "text":
            source = container.tarball or container.image_file
            click.echo(f"image {container.tag}" + (f" (from {source})" if source else "") +
                       f", runtime {container.runtime}")
        return
    sys.exit(api.launch(spec=spec))


def _then_argv(then_cmd: str | None) -> list[str] | None:
    if then_cmd is None:
        return None
    try:
        argv = shlex.split(then_cmd)
    except ValueError as exc:  # an unbalanced quote
        raise PyserveError(f"--then {then_cmd!r}: {exc}") from None
    if not argv:
        raise PyserveError("--then needs a command")
    # The command runs without a shell (its arguments reach it as written), so an operator
    # would reach it as an argument and fail only after the model has loaded: say so now.
    operators = [token for token in argv if token in _SHELL_OPERATORS]
    if operators:
        line = then_cmd if "'" not in then_cmd else "..."
        raise PyserveError(
            f"--then runs one command without a shell, so {operators[0]!r} would reach it as "
            f"an argument; give the line to a shell: --then \"bash -c '{line}'\"")
    return argv


_SHELL_OPERATORS = frozenset({"&&", "||", "|", "|&", ";", "&", ">", ">>", "<", "<<", "2>", "2>&1",
                              "&>"})


def spec_from_params(params: dict) -> LaunchSpec:
    """The LaunchSpec of the launch command's parameters (also how ``pyserve sweep --serve
    '...'`` reads its launch lines): the command-line forms (KEY=VALUE pairs, a --then string,
    --serve lines) become the spec's."""
    return LaunchSpec.from_settings(**{
        **params, "env": parse_env_pairs(params["env"]), "then": _then_argv(params["then"]),
        "serve": [parse_serve_line(line) for line in params["serve"]]})


def parse_env_pairs(env_pairs) -> dict[str, str]:
    """``--env KEY=VALUE`` options as a mapping (names are checked when the plan is made)."""
    env = {}
    for pair in env_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PyserveError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def parse_serve_line(line: str) -> ServeLine:
    """One ``--serve 'MODEL [OPTIONS]'`` line: its model and how that model is served
    (``serve_line`` fields of the spec, --replicas, --gpus); anything else is the launch's."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:  # an unbalanced quote
        raise PyserveError(f"--serve {line!r}: {exc}") from None
    kept, extra = serve_line_extras(tokens, line)
    try:
        ctx = launch.make_context("launch", kept)
    except click.UsageError as exc:
        raise PyserveError(f"--serve {line!r}: {exc.format_message()}") from None
    if not ctx.params.get("model"):
        raise PyserveError(f"--serve {line!r}: the line starts with the model")
    # Anything a bare "MODEL" line would not set is the launch's.
    defaults = launch.make_context("launch", [ctx.params["model"]]).params
    per_model = [name for name, (_g, decl) in FIELDS.items() if decl.get("serve_line")]
    for key, value in ctx.params.items():
        if key not in (*per_model, "model") and value != defaults.get(key):
            flag = FIELDS[key][1]["flag"] if key in FIELDS else f"--{key.replace('_', '-')}"
            raise PyserveError(f"--serve {line!r}: {flag} belongs outside the --serve lines "
                               "(it is the launch's)")
    return ServeLine(model=ctx.params["model"], **{
        name: ctx.params[name] for name in per_model if name not in ("env", "vllm_args")},
        env=parse_env_pairs(ctx.params["env"]), vllm_args=tuple(ctx.params["vllm_args"]),
        **extra)


def parse_launch_line(line: str) -> LaunchSpec:
    """The LaunchSpec of a ``pyserve launch`` argument string such as
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
    return spec_from_params(params)


def describe_plan(plan) -> str:
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
        argv = shlex.join(map(str, node.argv))
        lines.append(f"node {node.rank} {node.host}: {env + ' ' if env else ''}{argv}")
    return "\n".join(lines)


def describe_fleet(fleet) -> str:
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
             f"router on 127.0.0.1:{router.admin_port}: {shlex.join(map(str, router.argv()))}"]
    for index, replica in enumerate(fleet.replicas):
        lines.append(f"--- {fleet.label(index)} at {fleet.worker_url(index)} ---")
        lines.append(describe_plan(replica))
    return "\n".join(lines)


def render_top(snap: dict):
    """The screen of `pyserve top`: one table of servers, the router's line, one of GPUs."""
    from rich.console import Group
    from rich.table import Table

    def num(value, digits=0, scale=1.0):
        return "-" if value is None else f"{value * scale:,.{digits}f}"

    servers = Table(title=f"pyserve top: {snap['launch']} ({snap['state']}) "
                          f"{snap['endpoint']}", title_justify="left")
    for column in ("server", "model", "state", "router", "running", "waiting",
                   "prompt tok/s", "gen tok/s", "KV %", "preempt", "deaths"):
        servers.add_column(column, overflow="fold")
    for row in snap["servers"]:
        seen = row.get("router")
        router = "-" if seen is None else (
            ("healthy" if seen.get("healthy") else "unhealthy") +
            (f", {seen['requests']} sent" if "requests" in seen else "") +
            (f", circuit {seen['circuit']}" if seen.get("circuit", "closed") != "closed"
             else ""))
        state = row["state"] + ("" if row["answering"] else " (no metrics)")
        # A local directory by its name (the path is in the record); a hub id as it is.
        model = Path(row["model"]).name if row["model"].startswith(("/", ".")) else row["model"]
        servers.add_row(row["label"], model, state, router, num(row.get("running")),
                        num(row.get("waiting")), num(row.get("prompt_tok_s"), 1),
                        num(row.get("generation_tok_s"), 1), num(row.get("kv_cache"), 1, 100),
                        num(row.get("preemptions")), str(row["deaths"]))
    parts = [servers]
    router = snap.get("router")
    if router is not None:
        parts.append(f"router {router['url']}: " + (
            f"{router.get('active_workers', '?')} servers in rotation, "
            f"{router.get('requests', 0)} requests" if router["answering"] else
            "not answering") + f", restarts {router['deaths']}")
    if snap["gpus"]:
        gpus = Table(title="GPUs", title_justify="left")
        for column in ("node", "gpu", "util %", "memory MiB", "power W", "temp C"):
            gpus.add_column(column)
        for g in snap["gpus"]:
            gpus.add_row(g["node"], str(g["index"]), num(g["util_pct"]),
                         f"{num(g['memory_used_mib'])} / {num(g['memory_total_mib'])}",
                         num(g["power_w"]), num(g["temp_c"]))
        parts.append(gpus)
    else:
        parts.append("GPUs: no telemetry (CPU nodes, or no nvidia-smi)")
    return Group(*parts)


@main.command(epilog="""
\b
Examples:
  pyserve top                                # the workspace's latest launch or fleet
  pyserve top local-20261130-101500-4242-ab12cd --interval 5
  pyserve top --once --format json | jq '.servers[].generation_tok_s'
""")
@click.argument("launch", required=False)
@workspace_option
@click.option("--interval", type=click.FloatRange(0.5, 60), default=2.0, show_default=True,
              help="Seconds between two reads.")
@click.option("--once", is_flag=True, help="One snapshot, then exit (rates need two reads: "
              "it reads twice, --interval apart).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: the snapshot for scripts (with --once).")
def top(launch, workspace, interval, once, fmt):
    """A live view of a launch or fleet: per server its role, state, the router's view of it,
    requests running and waiting, prompt and generation tokens/s, KV-cache use and
    preemptions (vLLM's /metrics); per GPU utilisation, memory, power and temperature."""
    import time

    from pyservecli import api

    if fmt == "json" and not once:
        raise PyserveError("--format json goes with --once")
    watcher = api.top(workspace, launch)
    if once:
        watcher.snapshot()
        time.sleep(interval)
        snap = watcher.snapshot()
        if fmt == "json":
            click.echo(json.dumps(snap, indent=2))
        else:
            from rich.console import Console

            Console(width=None if sys.stdout.isatty() else 200).print(render_top(snap))
        return
    from rich.live import Live

    try:
        with Live(render_top(watcher.snapshot()), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render_top(watcher.snapshot()), refresh=True)
    except KeyboardInterrupt:
        pass


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
    from pyservecli import api

    info = api.status(workspace, launch)
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
            if entry.get("compile_cache_why"):
                cache += f" ({entry['compile_cache_why']})"
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
    from pyservecli import api

    api.stop(workspace, launch, grace=grace, say=click.echo)


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


def _on_every_node(verb: str, *args: str) -> int:
    from pyservecli import api

    return api.image(verb, *args, runtime=click.get_current_context().obj)


@image.command("load")
@click.argument("tarball", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the image if present (pyserve images only).")
def image_load(tarball, force):
    """Load TARBALL (`docker save`, optionally gzip/pigz) where its tag is missing."""
    sys.exit(_on_every_node("load", str(tarball), *(["--force"] if force else [])))


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
    from pyservecli import api

    click.echo(api.sbatch_script(), nl=False)

