"""Commands that measure: bench, sweep, plot, offline."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from pyservecli.cli import (
    KEY_FILE_HELP,
    emit_rows,
    main,
    perf_db_option,
    print_summary,
    read_key,
    renamed_option,
    repeats_option,
    table_format_option,
    workspace_option,
)
from pyservecli.errors import PyserveError

reset_cache_option = click.option(
    "--reset-prefix-cache", is_flag=True,
    help="Empty the server's prefix cache before each point and repeat (vLLM serves POST "
    "/reset_prefix_cache only with VLLM_SERVER_DEV_MODE=1: pyserve launch --env "
    "VLLM_SERVER_DEV_MODE=1); refused before anything runs where the server does not allow it.")


@main.command(epilog="""
\b
Examples:
  pyserve bench --host 10.0.0.5                          # the throughput suite
  pyserve bench --host 10.0.0.5 --suite throughput,prefill --out results/run1
  pyserve bench --host 127.0.0.1 --isl 1024 --osl 1024 --concurrency 64
  pyserve bench --host 127.0.0.1 --suite sharegpt --dataset-dir /data/datasets
  pyserve bench --host 127.0.0.1 --suite concurrency --resume   # skip points already done
""")
@click.option("--host", required=True, help="Server host or IP.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--model", help="Served model name [default: every model the endpoint lists; "
              "each into OUT/<model>/ when there are several].")
@click.option("--suite", "types", default="throughput", show_default=True,
              help="Comma-separated suites: throughput, prefill, decode, latency, concurrency, "
              "longctx, sharegpt, sonnet.")
@renamed_option("--type", "--suite", "types")
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
@click.option("--seed", type=click.IntRange(0, 2**31 - 1),
              help="Repeat a run's prompts (the run_seed its results record) [default: new "
              "prompts every run, none the server has cached].")
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help=KEY_FILE_HELP)
@click.option("--server-argv", metavar="'vllm serve ...'", help="For a server pyserve did "
              "not launch: the command that started it, recorded in each result as you state "
              "it (secret options' values redacted), so results can be compared flag by flag.")
@repeats_option
@reset_cache_option
@table_format_option
@workspace_option
@perf_db_option
def bench(host, port, model, types, isl, osl, concurrency, num_prompts, tokenizer, dataset_dir,
          out_dir, resume, profile, seed, api_key_file, server_argv, repeats, reset_prefix_cache,
          fmt, workspace, perf_db):
    """Benchmark a running server with vLLM's own client (`vllm bench serve`).

    Writes OUT/<suite>/<point>.json (vLLM's keys plus provenance, power and validity) and
    OUT/summary.csv, prints a summary, and exits 1 if any point is invalid (failed requests
    above 1 %, or no output tokens).
    """
    from pyservecli import api
    from pyservecli.bench.runner import server_gpus, summary_row

    out = out_dir or workspace / "bench"
    results = api.bench(f"http://{host}:{port}", types=split_list(types), isl=isl, osl=osl,
                        concurrency=concurrency, num_prompts=num_prompts, model=model,
                        tokenizer=tokenizer, dataset_dir=dataset_dir, out=out, resume=resume,
                        profile=profile, api_key=read_key(api_key_file), workspace=workspace,
                        seed=seed, perf_db=perf_db, repeats=repeats, server_argv=server_argv,
                        reset_prefix_cache=reset_prefix_cache)
    models = list(dict.fromkeys(r.model for r in results))
    rows = []
    for served in models:
        mine = [r for r in results if r.model == served]
        gpus = server_gpus(mine)
        rows += [{"model": served, **summary_row(r, gpus)} for r in mine]
    print_summary(rows, out, model_column=len(models) > 1, fmt=fmt)
    sys.exit(0 if all(r.valid for r in results) else 1)


def split_list(text: str) -> list[str]:
    """A comma-separated option value: ``"rate, concurrency"`` -> ["rate", "concurrency"]."""
    return [item.strip() for item in text.split(",") if item.strip()]


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
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help=KEY_FILE_HELP)
@repeats_option
@reset_cache_option
@table_format_option
@workspace_option
@perf_db_option
def sweep(suites, host, port, serve_cmds, num_prompts, tokenizer, out_dir, resume,
          api_key_file, repeats, reset_prefix_cache, fmt, workspace, perf_db):
    """Sweep benchmark parameters on one server, or server settings across launches.

    Results: OUT/<server label>/<suite>/<point>.json and OUT/<server label>/summary.csv. A failed
    point is recorded and the sweep goes on; the exit status is 1 if any point is invalid.
    """
    from pyservecli import api
    from pyservecli.bench.runner import server_gpus, summary_row
    from pyservecli.bench.sweep import serve_label
    from pyservecli.cli.serve import parse_launch_line

    servers = []
    for line in serve_cmds:
        settings = parse_launch_line(line).replace(port=port, workspace=workspace)
        label = serve_label(shlex.split(line))
        if any(label == other for other, _ in servers):
            raise PyserveError(f"--serve {line!r}: the same server as an earlier --serve line "
                               f"(both would write {label}/)")
        servers.append((label, settings))
    runs = api.sweep(split_list(suites), base_url=f"http://{host}:{port}" if host else None,
                     servers=servers, num_prompts=num_prompts, tokenizer=tokenizer,
                     out=out_dir or workspace / "sweep", resume=resume,
                     api_key=read_key(api_key_file), workspace=workspace, perf_db=perf_db,
                     repeats=repeats, reset_prefix_cache=reset_prefix_cache)
    if fmt != "text":  # one list of rows, each naming its server configuration
        emit_rows([{"server": run.label, **summary_row(r, server_gpus(run.results))}
                   for run in runs for r in run.results], fmt)
        sys.exit(0 if all(r.valid for run in runs for r in run.results) else 1)
    for run in runs:
        gpus = server_gpus(run.results)
        print_summary([summary_row(r, gpus) for r in run.results], run.out_dir,
                      command="sweep")
        started = (f"server start {run.server_start_s:.1f}s, then "
                   if run.server_start_s else "")
        click.echo(f"sweep {run.label}: {started}{run.wall_s}s wall, {run.bench_s}s inside "
                   f"benchmarks, overhead {run.overhead_pct}%")
    sys.exit(0 if all(r.valid for run in runs for r in run.results) else 1)


@main.command("plot", epilog="""
\b
Examples:
  pyserve plot pyserve-work/bench
  pyserve plot results/tp8-ep results/dp8-ep results/tp4-dp2-ep --out results/plots
  pyserve plot vllm-results/ --gpus 8        # files from vllm bench serve --save-result
  pyserve plot sweep-out/20261123-120000     # a `vllm bench sweep serve` experiment
""")
@click.argument("dirs", nargs=-1, required=True,
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the PNGs go [default: FIRST_DIR/plots].")
@click.option("--gpus", type=click.IntRange(min=1), help="GPUs behind plain vLLM results "
              "(pyserve's own results record theirs) [default: DIR/gpus.txt, else 1].")
def plot_cmd(dirs, out_dir, gpus):
    """Draw panels.png (throughput/GPU, latency, interactivity, TTFT, power efficiency) and
    pareto.png (throughput/GPU against interactivity) from result directories: pyserve's, or
    plain vLLM results (vllm bench serve --save-result, vllm bench sweep serve)."""
    from pyservecli.bench.plot import plot

    for path in plot(list(dirs), out_dir or dirs[0] / "plots", gpus=gpus,
                     say=lambda line: click.echo(line, err=True)):
        click.echo(path)


OFFLINE_EXAMPLES = """
\b
Examples:
  pyserve offline ./Qwen3-8B --isl 1024 --osl 256 --num-prompts 512
  pyserve offline ./Qwen3-30B-A3B --tp 4 --dp 2 --ep --isl 1024 --osl 1024
  pyserve offline ./Qwen3-8B --dataset-path sharegpt.json --num-prompts 1000 --nsys
  pyserve offline ./tiny --isl 32 --osl 16 --load-format dummy --viztracer t.json
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
@click.option("--isl", "input_len", type=int, help="Tokens per random prompt.")
@click.option("--osl", "output_len", type=int,
              help="Tokens generated per request (with --dataset-path: overrides the replies).")
@renamed_option("--input-len", "--isl", "input_len", type=int)
@renamed_option("--output-len", "--osl", "output_len", type=int)
@click.option("--dataset-path", help="ShareGPT JSON file (first human turn of each "
              "conversation); nothing is downloaded.")
@click.option("--dataset-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the ShareGPT file is, as for `pyserve bench --dataset-dir` "
              "(DIR/ShareGPT_V3_unfiltered_cleaned_split.json).")
@click.option("--num-prompts", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="The random prompts' seed. Fixed, unlike bench's new seed per run: every "
              "offline run starts a fresh engine, so no prompt can be cached from before.")
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
@workspace_option
@perf_db_option
@click.argument("engine_args", nargs=-1, type=click.UNPROCESSED)
def offline(model, tp, pp, dp, ep, nodelist, gpus_per_node, input_len, output_len,
            dataset_path, dataset_dir, num_prompts, seed, nsys, viztracer_file,
            torch_profile_dir, out_dir,
            dry_run, fmt, workspace, perf_db, engine_args):
    """Measure vLLM's offline engine (no API server) under torchrun, one process per GPU.

    Extra options are engine arguments in vLLM's spelling (--max-model-len 4096,
    --load-format dummy, --enforce-eager). Prints a table like `vllm bench serve`'s and
    writes OUT/result.json (merged per-request samples of every DP rank, with provenance).
    """
    from pyservecli import api
    from pyservecli.bench.offline import format_report

    if dataset_dir is not None:
        from pyservecli.bench.suites import DATASET_FILES

        if dataset_path:
            raise PyserveError("give --dataset-path FILE or --dataset-dir DIR, not both")
        dataset_path = str(dataset_dir / DATASET_FILES["sharegpt"])
    plan = api.plan_offline(
        model, tp=tp, pp=pp, dp=dp, ep=ep, nodelist=nodelist, gpus_per_node=gpus_per_node,
        input_len=input_len, output_len=output_len, dataset_path=dataset_path,
        num_prompts=num_prompts, seed=seed, viztracer=viztracer_file,
        torch_profile_dir=torch_profile_dir, nsys=nsys, engine_args=engine_args, out=out_dir,
        workspace=workspace)
    if dry_run:
        if fmt == "json":
            click.echo(json.dumps(plan.as_dict(), indent=2))
        else:
            t = plan.topology
            click.echo(f"job {plan.job_id}: {t.nodes} node(s), {plan.procs_per_node} "
                       f"process(es) per node; TP {t.tp} PP {t.pp} DP {t.dp} EP {t.ep}")
            for rank, argv in enumerate(plan.node_argv):
                click.echo(f"node {rank} {plan.nodes[rank]}: {shlex.join(map(str, argv))}")
        return
    result = api.run_offline(plan, say=lambda m: click.echo(m, err=True),
                             perf_db=api.perf_store_path(workspace, perf_db))
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_report(result))
        click.echo(f"result: {plan.out_dir / 'result.json'}")
