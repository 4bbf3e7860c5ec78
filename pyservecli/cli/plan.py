"""``pyserve plan``: the valid topologies for a model on the allocation, ranked, and measured."""

from __future__ import annotations

import json
import sys

import click

from pyservecli.cli import emit_rows, main, perf_db_option, repeats_option, workspace_option
from pyservecli.cli.serve import spec_options
from pyservecli.errors import PyserveError

PLAN_EXAMPLES = """
\b
Examples:
  pyserve plan Qwen/Qwen3-30B-A3B                  # inside an allocation: rank its topologies
  pyserve plan Qwen/Qwen3-235B-A22B --nodelist 'gpu[1-2]' --gpus-per-node 8 --gpu-memory 80
  pyserve plan ./Qwen3-8B --goal latency --max-model-len 8192 --format json
  pyserve plan MODEL --ttft 500 --tpot 30           # rank by throughput within the SLOs
  pyserve plan ./Qwen3-8B --measure --top 3 --load-format dummy   # launch, bench, compare
  pyserve plan ./Qwen3-8B --isl 8192 --ttft 2000 --tpot 20 --measure --only tp1-dp2,1p-tp1-1d-tp1
  PYSERVE_PERF_DB=/shared/perf.db pyserve plan MODEL   # figures measured by the whole team
"""


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
    epilog=PLAN_EXAMPLES,
)
@click.argument("model")
@click.option("--goal", type=click.Choice(["throughput", "latency"]), default="throughput",
              show_default=True, help="What to rank by: output tok/s at --concurrency, or TPOT "
              "at concurrency 1.")
@click.option("--isl", type=int, help="Input tokens per request [default: 1024].")
@click.option("--osl", type=int, help="Output tokens per request [default: 256].")
@click.option("--concurrency", type=int, help="Requests in flight [default: 64 per GPU for "
              "throughput, 1 for latency].")
@click.option("--ttft", "ttft_ms", type=float, metavar="MS", help="TTFT SLO (p99 where "
              "measured): rank by goodput, the most output tok/s at a load that meets every "
              "SLO; with --measure, searched per candidate.")
@click.option("--tpot", "tpot_ms", type=float, metavar="MS", help="TPOT SLO, the same way.")
@spec_options("nodelist", "gpus_per_node", "gpu_memory")
@click.option("--gpu-type", metavar="NAME", help="The GPU the estimates are for (H100, "
              "'H100 PCIe', H200, A100, ...) when detection cannot tell [default: nvidia-smi, "
              "SLURM's GPU type, else by --gpu-memory].")
@click.option("--measure", is_flag=True, help="Launch the top candidates one after another in "
              "this allocation, benchmark each at the goal's point, and compare.")
@click.option("--top", type=click.IntRange(min=1), metavar="N",
              help="Show the N best candidates (the table and --format json); with --measure, "
              "launch them [default: show all; --measure launches 3].")
@click.option("--only", metavar="LABELS", help="--measure: these candidates, comma-separated "
              "labels as --format json names them (tp1-dp2,1p-tp1-1d-tp1), instead of --top.")
@click.option("--num-prompts", type=int, help="Requests per measurement [default: 4 x "
              "concurrency, at least 100].")
@click.option("--out", type=click.Path(file_okay=False), help="Where --measure writes "
              "[default: WORKSPACE/plans/MODEL-NODESxGPUS-GOAL-POINT].")
@click.option("--resume", is_flag=True, help="--measure: skip candidates measured already.")
# What each measured launch takes, declared once with the launch's options.
@spec_options("port", "api_key_file", "env")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text",
              show_default=True, help="csv: one row per candidate (rank, figures, source).")
@repeats_option
@workspace_option
@perf_db_option
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
def plan(model, goal, isl, osl, concurrency, ttft_ms, tpot_ms, nodelist, gpus_per_node,
         gpu_memory, gpu_type, measure, top, only, num_prompts, out, resume, port, api_key_file,
         env, fmt, repeats, workspace, perf_db, vllm_args):
    """Rank the ways to split MODEL over the allocation: memory fit and estimated output tok/s,
    TTFT and TPOT per topology, and what `pyserve launch MODEL` with no flags would choose.

    vLLM flags that change memory (--max-model-len, --dtype, --quantization, --kv-cache-dtype,
    --gpu-memory-utilization) are read; with --measure every flag is passed to each launch.
    """
    from pyservecli import api
    from pyservecli.bench.planreport import table
    from pyservecli.cli.serve import parse_env_pairs

    result = api.plan_topologies(model, goal=goal, isl=isl, osl=osl, concurrency=concurrency,
                                 ttft_ms=ttft_ms, tpot_ms=tpot_ms, nodelist=nodelist,
                                 gpus_per_node=gpus_per_node, gpu_memory=gpu_memory,
                                 vllm_args=vllm_args, workspace=workspace, perf_db=perf_db,
                                 gpu_type=gpu_type)
    if only and not measure:
        raise PyserveError("--only goes with --measure")
    if repeats > 1 and not measure:
        raise PyserveError("--repeats goes with --measure")
    if measure:
        path = api.measure_plan(result, top=top or 3, out=out, resume=resume,
                                num_prompts=num_prompts, nodelist=nodelist,
                                gpus_per_node=gpus_per_node, gpu_memory=gpu_memory,
                                vllm_args=vllm_args, port=port, api_key_file=api_key_file,
                                env=parse_env_pairs(env), workspace=workspace,
                                perf_db=perf_db, repeats=repeats,
                                only=[x.strip() for x in (only or "").split(",") if x.strip()])
        click.echo(f"pyserve: measured plan in {path}", err=True)
    data = result.report()
    if top:
        data = shortened(data, top)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    if fmt == "csv":
        emit_rows([candidate_row(c) for c in data["candidates"]], fmt)
        return
    alloc, load = data["allocation"], data["workload"]
    click.echo(data["model_facts"])
    click.echo(f"allocation: {alloc['nodes']} node(s) x {alloc['gpus_per_node']} GPUs of "
               f"{alloc['gpu_memory_gib']:.1f} GiB ({alloc['gpu_source']}); estimates for "
               f"{alloc['estimates_for']}")
    click.echo(f"goal {goal} at {load['concurrency']} x {load['isl']}/{load['osl']} tokens")
    click.echo(table(data))
    auto = data["automatic_choice"]
    click.echo("pyserve launch with no parallel flags: " + "; ".join(auto["decisions"]))
    sys.stdout.flush()


def shortened(data: dict, top: int) -> dict:
    """The report with its first ``top`` ranked candidates; how many were left out is said."""
    ranked = [c for c in data["candidates"] if c.get("predicted_rank")]
    kept = ranked[:top]
    left = len(data["candidates"]) - len(kept)
    return {**data, "candidates": kept, "left_out": left}


def candidate_row(c: dict) -> dict:
    """One candidate of the report as a flat CSV row."""
    memory, figure = c.get("memory") or {}, c.get("figure") or c.get("estimate") or {}
    measured, goodput = c.get("measured") or {}, c.get("goodput") or {}
    return {"rank": c.get("predicted_rank"), "topology": c["label"], "valid": c["valid"],
            "weights_gib": memory.get("weights_gib"), "kv_tokens": memory.get("kv_tokens"),
            "output_tok_s": figure.get("output_tok_s"), "ttft_ms": figure.get("ttft_ms"),
            "tpot_ms": figure.get("tpot_ms"), "source": figure.get("source"),
            "correction": figure.get("correction"),
            "goodput_tok_s": goodput.get("output_tok_s"),
            "goodput_concurrency": goodput.get("concurrency"),
            "measured_tok_s": measured.get("output_tok_s"), "why": c.get("why", "")}
