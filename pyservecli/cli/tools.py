"""Tools around a server and its traces: health, trace summarize, model."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from pyservecli.bench.health import DEFAULT_TIMEOUT_S
from pyservecli.cli import KEY_FILE_HELP, emit_rows, main, read_key, table_format_option
from pyservecli.errors import PyserveError


@main.command(epilog="""
\b
Examples:
  pyserve health --host 10.0.0.5
  pyserve health --host 127.0.0.1 --port 8001 --model my-model --api-key-file ~/.key
  pyserve health --host 127.0.0.1 --check chat --check json_schema --format json
""")
@click.option("--host", required=True, help="Server host or IP.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--model", help="Served model name [default: every model the endpoint lists].")
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help=KEY_FILE_HELP)
@click.option("--check", "only", multiple=True, help="Run only these checks (repeatable).")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds per request.")
@table_format_option
def health(host, port, model, api_key_file, only, timeout, fmt):
    """Check a running server's OpenAI API: exit 1 if any check fails.

    Checks: models, completion, batch prompt, chat, sampling params, streaming, logprobs, stop
    sequences, echo, n=2, and structured outputs (json_schema, regex, choice, grammar).
    """
    from pyservecli import api
    from pyservecli.bench.health import models_to_check, validate_checks

    if not (timeout > 0 and math.isfinite(timeout)):
        raise PyserveError(f"--timeout must be a positive number of seconds, got {timeout}")
    base = f"http://{host}:{port}"
    key = read_key(api_key_file)
    # A router in front of several models lists them all: each gets the checks.
    validate_checks(list(only))
    listed = models_to_check(base, key, timeout)  # nothing answering: one line, exit 2
    models = [model] if model else listed
    results = [r for m in models for r in api.health(base, model=m, api_key=key,
                                                     timeout=timeout, only=list(only) or None)]
    failed = [r for r in results if not r.passed]
    if fmt != "text":
        emit_rows([r.__dict__ for r in results], fmt)
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        several = len(models) > 1
        table = Table(title=f"pyserve health {base}")
        for column in (("model",) if several else ()) + ("check", "result", "detail", "s"):
            table.add_column(column)
        for r in results:
            # The detail quotes the server's words: shown as text, never read as rich markup.
            table.add_row(*((escape(r.model or "-"),) if several else ()), r.name,
                          "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
                          escape(r.detail), f"{r.seconds:.2f}")
        console = Console()
        console.print(table)
        console.print(f"health: {len(results) - len(failed)} of {len(results)} checks passed")
    sys.exit(1 if failed else 0)


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
    from pyservecli.bench.trace import (
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
    from pyservecli import api

    click.echo(api.create_model(name, out_dir, force=force))


@model.command("list")
def model_list():
    """List the built-in model configurations."""
    from pyservecli import api

    for name in api.builtin_models():
        click.echo(name)
