"""The ``pyserve`` command line. Imports only the light dependencies at start-up."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

from . import DEFAULT_WORKSPACE, __version__, default_workspace
from .errors import PyserveError


def _workspace_option(func):
    return click.option(
        "--workspace", type=click.Path(file_okay=False, path_type=Path),
        default=default_workspace,
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
              "PYSERVE_MODEL, PYSERVE_WORKSPACE), then stop the server and exit with its "
              "status.")
@click.option("--nsys", is_flag=True, help="Run each node's `vllm serve` under `nsys profile` "
              "(capture range: cudaProfilerApi); one report per node in WORKSPACE/nsys.")
@click.option("--profile", "profile_dir", is_flag=False, flag_value="", default=None,
              metavar="[DIR]", help="vLLM's torch profiler, traces into DIR [default: "
              "WORKSPACE/profiles]; capture with `pyserve bench --profile`.")
@click.option("--image", metavar="TARBALL|REF", help="Run every node's server in this image: a "
              "`docker save` tarball (loaded where its tag is missing) or a registry reference.")
@click.option("--container-mount", "container_mounts", multiple=True, metavar="DIR[:DEST]",
              help="Extra bind mount for --image (repeatable); the workspace and a local model "
              "directory are mounted already.")
@click.option("--force", is_flag=True, help="With --image: reload the image even if present "
              "(only a pyserve-labelled image is replaced).")
@click.option("--privileged", is_flag=True, help="With --image: run privileged containers "
              "(off by default; GPUs and EFA/IB devices are passed through without it).")
@click.option("--dry-run", is_flag=True, help="Print the plan; launch nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Dry-run output format.")
@_workspace_option
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
def launch(model, tp, pp, dp, ep, backend, port, nodelist, gpus_per_node, env_pairs,
           api_key_file, ready_timeout, then_cmd, nsys, profile_dir, image, container_mounts,
           force, privileged, dry_run, fmt, workspace, vllm_args):
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
    vllm_args = list(vllm_args)
    if profile_dir is not None:
        from .profiling import torch_profiler_config
        from .vllm_args import option_value

        if option_value(vllm_args, "--profiler-config"):
            raise PyserveError("give either --profile or vLLM's --profiler-config, not both")
        target = Path(profile_dir) if profile_dir else workspace / "profiles"
        vllm_args += ["--profiler-config", torch_profiler_config(target.resolve())]
    if nsys and not dry_run:
        from .profiling import require_nsys

        require_nsys()  # before anything starts
    request = LaunchRequest(model=model, tp=tp, pp=pp, dp=dp, ep=ep, backend=backend, port=port,
                            nodelist=nodelist, gpus_per_node=gpus_per_node,
                            vllm_args=vllm_args, env=env,
                            nsys_dir=(workspace / "nsys").resolve() if nsys else None)
    # Inside SLURM the head node may be another machine: its ports are checked there, at launch.
    remote_head = bool(os.environ.get("SLURM_JOB_ID"))
    is_free = (lambda _port: True) if dry_run or remote_head else None
    if (container_mounts or force or privileged) and not image:
        raise PyserveError("--container-mount, --force and --privileged need --image")
    container = None
    if image:
        from .container import make_spec

        container = make_spec(image, list(container_mounts), force, privileged)
    plan = make_plan(request, is_free=is_free)
    if dry_run:
        click.echo(plan.to_json() if fmt == "json" else describe_plan(plan))
        if container is not None and fmt == "text":
            click.echo(f"image {container.tag}"
                       + (f" (from {container.tarball})" if container.tarball else ""))
        return
    from .launcher import Launch, LaunchOptions
    from .profiling import NSYS_FINALIZE_GRACE_S

    options = LaunchOptions(workspace=workspace.resolve(), api_key_file=api_key_file,
                            ready_timeout=ready_timeout,
                            then=shlex.split(then_cmd) if then_cmd else None,
                            stop_grace=NSYS_FINALIZE_GRACE_S if nsys else 60.0,
                            container=container)
    sys.exit(Launch(plan, options).run())


OFFLINE_EXAMPLES = """
\b
Examples:
  pyserve offline ./Qwen3-8B --input-len 1024 --output-len 256 --num-prompts 512
  pyserve offline ./Qwen3-30B-A3B --tp 4 --dp 2 --ep --input-len 1024 --output-len 1024
  pyserve offline ./Qwen3-8B --dataset-path sharegpt.json --num-prompts 1000 --nsys
  pyserve offline ./tiny --input-len 32 --output-len 16 --load-format dummy --viztracer t.json
"""


@main.command(epilog=OFFLINE_EXAMPLES,
              context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True})
@click.argument("model")
@click.option("--tp", type=int, help="Tensor-parallel size.")
@click.option("--pp", type=int, help="Pipeline-parallel size.")
@click.option("--dp", type=int, help="Data-parallel size [default: all GPUs / (TP x PP)].")
@click.option("--ep/--no-ep", default=None, help="Expert parallelism (EP = DP x TP).")
@click.option("--nodelist", help="Plan for these hosts instead of the allocation's.")
@click.option("--gpus-per-node", type=int, help="Override GPU detection.")
@click.option("--input-len", type=int, help="Tokens per random prompt.")
@click.option("--output-len", type=int,
              help="Tokens generated per request (with --dataset-path: overrides the replies).")
@click.option("--dataset-path", help="ShareGPT JSON file (first human turn of each "
              "conversation); nothing is downloaded.")
@click.option("--num-prompts", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--nsys", is_flag=True, help="Profile each node's ranks with Nsight Systems "
              "(capture range: the measured run).")
@click.option("--viztracer", "viztracer_file", metavar="FILE",
              help="VizTracer trace of the measured run, one file per rank (FILE-rankN.json).")
@click.option("--torch-profile", "torch_profile_dir", metavar="DIR",
              help="vLLM's torch-profiler traces of the measured run, one per rank, into DIR.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Result directory [default: WORKSPACE/offline/JOB_ID].")
@click.option("--dry-run", is_flag=True, help="Print the plan; run nothing.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format (the plan with --dry-run, else the result).")
@_workspace_option
@click.argument("engine_args", nargs=-1, type=click.UNPROCESSED)
def offline(model, tp, pp, dp, ep, nodelist, gpus_per_node, input_len, output_len,
            dataset_path, num_prompts, seed, nsys, viztracer_file, torch_profile_dir, out_dir,
            dry_run, fmt, workspace, engine_args):
    """Measure vLLM's offline engine (no API server) under torchrun, one process per GPU.

    Extra options are engine arguments in vLLM's spelling (--max-model-len 4096,
    --load-format dummy, --enforce-eager). Prints a table like `vllm bench serve`'s and
    writes OUT/result.json (merged per-request samples of every DP rank, with provenance).
    """
    from .offline import execute, format_report, make_request, plan_offline
    from .profiling import require_nsys, require_viztracer

    request = make_request(
        model, tp=tp, pp=pp, dp=dp, ep=ep, viztracer=viztracer_file,
        torch_profile_dir=torch_profile_dir, engine_args=engine_args, nodelist=nodelist,
        gpus_per_node=gpus_per_node, input_len=input_len, output_len=output_len,
        dataset_path=dataset_path, num_prompts=num_prompts, seed=seed, nsys=nsys)
    plan = plan_offline(request, out_dir, workspace)
    out = plan.out_dir
    if dry_run:
        if fmt == "json":
            click.echo(json.dumps(plan.as_dict(), indent=2))
        else:
            from .render import shjoin

            t = plan.topology
            click.echo(f"job {plan.job_id}: {t.nodes} node(s), {plan.procs_per_node} "
                       f"process(es) per node; TP {t.tp} PP {t.pp} DP {t.dp} EP {t.ep}")
            for rank, argv in enumerate(plan.node_argv):
                click.echo(f"node {rank} {plan.nodes[rank]}: {shjoin(argv)}")
        return
    if nsys:
        require_nsys()
    if viztracer_file:
        require_viztracer()
    result = execute(plan, lambda m: click.echo(m, err=True), nsys=nsys)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_report(result))
        click.echo(f"result: {out / 'result.json'}")


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
    from .health import run_checks

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
  pyserve bench --host 10.0.0.5                          # the throughput suite
  pyserve bench --host 10.0.0.5 --type throughput,prefill --out results/run1
  pyserve bench --host 127.0.0.1 --isl 1024 --osl 1024 --concurrency 64
  pyserve bench --host 127.0.0.1 --type sharegpt --dataset-dir /data/datasets
  pyserve bench --host 127.0.0.1 --type concurrency --resume   # skip points already done
""")
@click.option("--host", required=True, help="Server host or IP.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--model", help="Served model name [default: the first one listed].")
@click.option("--type", "types", default="throughput", show_default=True,
              help="Comma-separated suites: throughput, prefill, decode, latency, concurrency, "
              "longctx, sharegpt, sonnet.")
@click.option("--isl", type=int, help="One custom point: input length (with --osl).")
@click.option("--osl", type=int, help="One custom point: output length (with --isl).")
@click.option("--concurrency", type=int, help="Custom point: max concurrency.")
@click.option("--num-prompts", type=int, help="Prompts per point (overrides the suite's).")
@click.option("--tokenizer", help="Tokenizer for the client [default: the model name].")
@click.option("--dataset-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where ShareGPT / sonnet files are (nothing is downloaded).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Results directory [default: WORKSPACE/bench].")
@click.option("--resume", is_flag=True, help="Skip points whose valid result exists.")
@click.option("--profile", is_flag=True,
              help="Call /start_profile and /stop_profile around each point (the server "
              "needs --profiler-config).")
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path))
@_workspace_option
def bench(host, port, model, types, isl, osl, concurrency, num_prompts, tokenizer, dataset_dir,
          out_dir, resume, profile, api_key_file, workspace):
    """Benchmark a running server with vLLM's own client (`vllm bench serve`).

    Writes OUT/<suite>/<point>.json (vLLM's keys plus provenance, power and validity) and
    OUT/summary.csv, prints a summary, and exits 1 if any point is invalid (failed requests
    above 1 %, or no output tokens).
    """
    from .bench import run_points, server_gpus, server_info, write_summary
    from .benchsuites import choose_points

    points = choose_points([t.strip() for t in types.split(",") if t.strip()], isl, osl,
                           concurrency, num_prompts)
    api_key = _read_key(api_key_file)
    base = f"http://{host}:{port}"
    server = server_info(base, model, api_key)
    out = out_dir or workspace / "bench"
    results = run_points(points, server, out, tokenizer=tokenizer, dataset_dir=dataset_dir,
                         api_key=api_key, workspace=workspace, profile=profile, resume=resume)
    rows = write_summary(results, out, server_gpus(results))
    _print_summary(rows, out)
    sys.exit(0 if all(r.valid for r in results) else 1)


@main.command(epilog="""
\b
Examples:
  pyserve sweep --host 127.0.0.1 --suite rate                  # one running server
  pyserve sweep --serve "Qwen/Qwen3-8B --tp 1" --suite rate,concurrency
  pyserve sweep --serve "M --max-num-seqs 64" --serve "M --max-num-seqs 256" --resume
""")
@click.option("--suite", "suites", default="rate,concurrency", show_default=True,
              help="Comma-separated: rate, concurrency, input, output.")
@click.option("--host", help="Sweep this running server.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--serve", "serve_cmds", multiple=True, metavar="'MODEL [ARGS]'",
              help="Launch this (pyserve launch arguments) and sweep it; repeat to sweep "
              "server settings, one server at a time.")
@click.option("--num-prompts", type=int, help="Prompts per point (overrides the suite's 100).")
@click.option("--tokenizer", help="Tokenizer for the client [default: the model name].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Results directory [default: WORKSPACE/sweep].")
@click.option("--resume", is_flag=True, help="Skip points whose valid result exists.")
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path))
@_workspace_option
def sweep(suites, host, port, serve_cmds, num_prompts, tokenizer, out_dir, resume,
          api_key_file, workspace):
    """Sweep benchmark parameters on one server, or server settings across launches.

    Results: OUT/<server label>/<suite>/<point>.json and OUT/<server label>/summary.csv. A failed
    point is recorded and the sweep goes on; the exit status is 1 if any point is invalid.
    """
    import time

    from .bench import run_points, server_gpus, server_info, write_summary
    from .sweep import launched_server, overhead, serve_label, sweep_points

    if bool(host) == bool(serve_cmds):
        raise PyserveError("give either --host (a running server) or --serve (to launch)")
    points = sweep_points([s.strip() for s in suites.split(",") if s.strip()], num_prompts)
    api_key = _read_key(api_key_file)
    out = out_dir or workspace / "sweep"
    configs = [(f"{host}-{port}", None)] if host else [
        (serve_label(shlex.split(cmd)), shlex.split(cmd)) for cmd in serve_cmds]
    all_valid = True
    for label, serve_args in configs:
        server_start = None
        if serve_args is None:
            start = time.monotonic()
            results = run_points(points, server_info(f"http://{host}:{port}", None, api_key),
                                 out / label, tokenizer=tokenizer, api_key=api_key,
                                 workspace=workspace, resume=resume)
        else:
            launch_start = time.monotonic()
            with launched_server(serve_args, workspace, port, out / label / "launch.log") as base:
                start = time.monotonic()
                server_start = start - launch_start
                results = run_points(points, server_info(base, None, api_key), out / label,
                                     tokenizer=tokenizer, api_key=api_key, workspace=workspace,
                                     resume=resume)
        cost = overhead(time.monotonic() - start, results)
        _print_summary(write_summary(results, out / label, server_gpus(results)), out / label)
        started = f"server start {server_start:.1f}s, then " if server_start else ""
        click.echo(f"sweep {label}: {started}{cost['wall_s']}s wall, {cost['bench_s']}s inside "
                   f"benchmarks, overhead {cost['overhead_pct']}%")
        all_valid &= all(r.valid for r in results)
    sys.exit(0 if all_valid else 1)


@main.command("plot", epilog="""
\b
Examples:
  pyserve plot pyserve-work/bench
  pyserve plot results/tp8-ep results/dp8-ep results/tp4-dp2-ep --out results/plots
""")
@click.argument("dirs", nargs=-1, required=True,
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the PNGs go [default: FIRST_DIR/plots].")
def plot_cmd(dirs, out_dir):
    """Draw panels.png (throughput/GPU, latency, interactivity, TTFT, power efficiency) and
    pareto.png (throughput/GPU against interactivity) from result directories."""
    from .plot import plot

    for path in plot(list(dirs), out_dir or dirs[0] / "plots"):
        click.echo(path)


def _print_summary(rows: list[dict], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = ("suite", "point", "status", "output_tok_s", "ttft_p50_ms", "tpot_p50_ms",
               "interactivity_tok_s_user", "watts_per_gpu", "note")
    table = Table(title=f"pyserve bench -> {out}/summary.csv")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    Console().print(table)


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


@main.group(epilog="""
\b
Examples:
  pyserve image load vllm-serve-latest.tar.gz      # on every node of the allocation
  pyserve image ls
  pyserve image rm pyserve:latest
""")
def image():
    """Manage the serving image on the allocation's nodes (or this host outside SLURM).

    Only images carrying the pyserve.version label are ever removed or replaced.
    """


def _on_every_node(*helper_args: str) -> int:
    import subprocess

    from . import cluster as cluster_mod
    from .procs import srun_per_node

    argv = [sys.executable, "-m", "pyservecli.container", *helper_args]
    found = cluster_mod.detect()
    if found.in_slurm:
        argv = [*srun_per_node(found.nodes), *argv]
    return subprocess.run(argv).returncode


@image.command("load")
@click.argument("tarball", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the image if present (pyserve images only).")
def image_load(tarball, force):
    """Load TARBALL (`docker save`, optionally gzip/pigz) where its tag is missing."""
    from .container import tarball_tag

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


@main.group()
def trace():
    """Read profiler traces (torch profiler, VizTracer) on a login node."""


@trace.command("summarize", epilog="""
\b
Examples:
  pyserve trace summarize traces/rank0.1234.pt.trace.json.gz
  pyserve trace summarize traces/ --category kernel --top 15
  pyserve trace summarize offline.json-rank0.json --format json
""")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--top", type=int, default=20, show_default=True, help="Rows per trace.")
@click.option("--category", help="Only events of this category (torch: kernel, cpu_op, "
              "python_function, gpu_memcpy, ...).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def trace_summarize(path, top, category, fmt):
    """Top operations / functions of PATH (a trace file, .json or .json.gz, or a directory of
    them) by total (inclusive) time.

    Torch-profiler traces leave out the python_function and Trace categories unless
    --category asks for one: those wrap everything else, idle threads included.
    """
    from .trace import (
        TORCH_DEFAULT_SKIP,
        categories,
        format_table,
        load_traces,
        summarize_events,
    )

    if top < 1:
        raise PyserveError(f"--top must be at least 1, got {top}")
    reports = []
    traces, skipped = load_traces(path)
    if skipped:
        click.echo(f"pyserve: skipped {len(skipped)} file(s) without traceEvents: "
                   + ", ".join(p.name for p in skipped[:5]) + (" …" if len(skipped) > 5 else ""),
                   err=True)
    for file, events, kind in traces:
        ops = summarize_events(events, category,
                               TORCH_DEFAULT_SKIP if kind == "torch profiler" else frozenset())
        by_category = categories(events)
        reports.append({"file": str(file), "kind": kind, "categories": by_category,
                        "top": [{"category": op.category, "name": op.name, "calls": op.count,
                                 "total_ms": op.total_us / 1000, "mean_us": op.mean_us}
                                for op in ops[:top]]})
        if fmt == "text":
            cats = ", ".join(f"{c or '-'} {n}" for c, n in list(by_category.items())[:6])
            click.echo(format_table(ops, top, f"{file} ({kind}; events by category: {cats})"))
            click.echo()
    if fmt == "json":
        click.echo(json.dumps(reports, indent=2))


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
