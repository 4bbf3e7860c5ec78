"""The ``pyserve`` command line. Imports only the light dependencies at start-up."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .errors import PyserveError

DEFAULT_WORKSPACE = "pyserve-work"


def _workspace_option(func):
    return click.option(
        "--workspace", type=click.Path(file_okay=False, path_type=Path),
        default=lambda: os.environ.get("PYSERVE_WORKSPACE", DEFAULT_WORKSPACE),
        show_default=f"$PYSERVE_WORKSPACE or ./{DEFAULT_WORKSPACE}",
        help="Where logs, rendered scripts and launch records go.")(func)


def _read_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise PyserveError(f"cannot read --api-key-file {path}: {exc.strerror}") from None


class PyserveGroup(click.Group):
    """Turns PyserveError into a one-line message and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PyserveError as exc:
            click.echo(f"pyserve: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=PyserveGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyserve")
def main():
    """Launch and benchmark vLLM on SLURM and bare-metal GPU clusters.

    \b
    Typical use, inside `salloc -N 2 --gpus-per-node=8`:
      pyserve launch Qwen/Qwen3-30B-A3B-FP8 --tp 8 --ep
      pyserve health --host HEAD_IP
    """


LAUNCH_EXAMPLES = """
\b
Examples:
  pyserve launch Qwen/Qwen3-8B                         # one node, every GPU as DP
  pyserve launch Qwen/Qwen3-30B-A3B-FP8 --tp 8 --ep    # 2 nodes x 8: DP 2, EP 16
  pyserve launch ./Qwen3-8B --tp 8 --pp 2              # mp backend, --nnodes 2
  pyserve launch MODEL -tp 4 --max-model-len 8192      # vLLM's own flags work too
  pyserve launch MODEL --tp 8 --ep --nodelist n[1-2] --gpus-per-node 8 --dry-run --format json
  pyserve launch ./tiny --load-format dummy --then "pyserve health --host 127.0.0.1"
"""


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
    epilog=LAUNCH_EXAMPLES,
)
@click.argument("model")
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
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="Environment variable for every node (repeatable); {node_rank} in VALUE "
              "becomes each node's rank.")
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the API key; it reaches vLLM as VLLM_API_KEY, never in argv.")
@click.option("--ready-timeout", type=float, default=1800.0, show_default=True,
              help="Seconds to wait for READY.")
@click.option("--then", "then_cmd", metavar="COMMAND",
              help="Run COMMAND once READY (env: PYSERVE_ENDPOINT, PYSERVE_BASE_URL, "
              "PYSERVE_MODEL), then stop the server and exit with its status.")
@click.option("--dry-run", is_flag=True, help="Print the plan; launch nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Dry-run output format.")
@_workspace_option
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
def launch(model, tp, pp, dp, ep, backend, port, nodelist, gpus_per_node, env_pairs,
           api_key_file, ready_timeout, then_cmd, dry_run, fmt, workspace, vllm_args):
    """Launch `vllm serve` for MODEL across the allocation and wait until it is READY.

    Arguments pyserve does not know are passed to `vllm serve` unchanged. READY means /health
    answers, /v1/models lists the model and a 1-token completion succeeds; then the endpoint is
    printed and pyserve stays up until Ctrl+C / SIGTERM / scancel, stopping every rank.
    """
    from .plan import LaunchRequest, make_plan

    env = {}
    for pair in env_pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PyserveError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    request = LaunchRequest(model=model, tp=tp, pp=pp, dp=dp, ep=ep, backend=backend, port=port,
                            nodelist=nodelist, gpus_per_node=gpus_per_node,
                            vllm_args=list(vllm_args), env=env)
    # Inside SLURM the head node may be another machine: its ports are checked there, at launch.
    remote_head = bool(os.environ.get("SLURM_JOB_ID"))
    is_free = (lambda _port: True) if dry_run or remote_head else None
    plan = make_plan(request, is_free=is_free)
    if dry_run:
        click.echo(plan.to_json() if fmt == "json" else describe_plan(plan))
        return
    from .launcher import Launch, LaunchOptions

    options = LaunchOptions(workspace=workspace.resolve(), api_key_file=api_key_file,
                            ready_timeout=ready_timeout,
                            then=shlex.split(then_cmd) if then_cmd else None)
    sys.exit(Launch(plan, options).run())


def describe_plan(plan) -> str:
    from .render import shjoin

    t = plan.topology
    lines = [
        f"job {plan.job_id}: {t.nodes} node(s) x {t.gpus_per_node} "
        f"{'GPUs' if plan.gpu_source != 'no GPU found' else 'CPU rank slots'} ({plan.gpu_source})",
        f"TP {t.tp}  PP {t.pp}  DP {t.dp} (local {t.dp_local})  EP {t.ep}  backend {t.backend}",
        f"endpoint {plan.endpoint}",
    ]
    for node in plan.nodes:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in node.env.items())
        lines.append(f"node {node.rank} {node.host}: {env + ' ' if env else ''}{shjoin(node.argv)}")
    return "\n".join(lines)


@main.command(epilog="""
\b
Examples:
  pyserve health --host 10.0.0.5
  pyserve health --host 127.0.0.1 --port 8001 --model my-model --api-key-file ~/.key
  pyserve health --host 127.0.0.1 --check chat --check json_schema --format json
""")
@click.option("--host", required=True, help="Server host or IP.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--model", help="Served model name [default: the first one listed].")
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--check", "only", multiple=True, help="Run only these checks (repeatable).")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds per request.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def health(host, port, model, api_key_file, only, timeout, fmt):
    """Check a running server's OpenAI API: exit 1 if any check fails.

    Checks: models, completion, batch prompt, chat, sampling params, streaming, logprobs, stop
    sequences, echo, n=2, and structured outputs (json_schema, regex, choice, grammar).
    """
    from .health import CHECKS, run_checks

    unknown = set(only) - {name for name, _ in CHECKS}
    if unknown:
        raise PyserveError(f"unknown check(s) {', '.join(sorted(unknown))}; choose from "
                           f"{', '.join(name for name, _ in CHECKS)}")
    base = f"http://{host}:{port}"
    results = run_checks(base, model, _read_key(api_key_file), timeout=timeout,
                         only=list(only) or None)
    failed = [r for r in results if not r.passed]
    if fmt == "json":
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"pyserve health {base}")
        for column in ("check", "result", "detail", "s"):
            table.add_column(column)
        for r in results:
            table.add_row(r.name, "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
                          r.detail, f"{r.seconds:.2f}")
        console = Console()
        console.print(table)
        console.print(f"health: {len(results) - len(failed)} of {len(results)} checks passed")
    sys.exit(1 if failed else 0)


@main.command(epilog="""
\b
Examples:
  pyserve status
  pyserve status --workspace /shared/me/pyserve-work --format json
""")
@_workspace_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def status(workspace, fmt):
    """Show the latest launch recorded in the workspace and whether it answers now."""
    from .status import latest_status

    info = latest_status(workspace)
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
    else:
        for key in ("job_id", "state", "slurm_state", "answering", "endpoint",
                    "served_model_name", "log_dir"):
            if key in info:
                click.echo(f"{key:18} {info[key]}")


@main.group()
def model():
    """Config-only model directories for serving with --load-format dummy."""


@model.command("create", epilog="""
\b
Examples:
  pyserve model create qwen3-tiny ./models/qwen3-tiny
  pyserve model create qwen3-30b-a3b /scratch/models/Qwen3-30B-A3B-dummy
""")
@click.argument("name")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing directory.")
def model_create(name, out_dir, force):
    """Write built-in model NAME (config.json + generated tokenizer) into OUT_DIR."""
    from .dummymodel import create_model_dir

    click.echo(create_model_dir(name, out_dir, force=force))


@model.command("list")
def model_list():
    """List the built-in model configurations."""
    from .dummymodel import builtin_models

    for name in builtin_models():
        click.echo(name)


@main.command("sbatch-script", epilog="""
\b
Examples:
  pyserve sbatch-script > run.sbatch && sbatch -N 2 --gpus-per-node 8 run.sbatch MODEL --tp 8 --ep
""")
def sbatch_script():
    """Print the sbatch script (slurm/run.sbatch is this output)."""
    from .render import render

    click.echo(render("run.sbatch.j2"), nl=False)


if __name__ == "__main__":
    main()
