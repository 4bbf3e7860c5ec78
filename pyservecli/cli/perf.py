"""``pyserve perf``: the performance store every measured point goes to and the planner reads."""

from __future__ import annotations

from pathlib import Path

import click

from pyservecli.cli import emit_rows, main, perf_db_option, table_format_option, workspace_option


@main.group(epilog="""
\b
Examples:
  pyserve perf import docs/results/2026-11-30-2xh200-out-of-sample
  pyserve perf import ./vllm-results --model-config ./Qwen3-8B --tp 2 --gpu H200 --gpus 2
  pyserve perf list --gpu H200
  pyserve perf show ./Qwen3-8B
  pyserve perf export --out points.csv
  PYSERVE_PERF_DB=/shared/team/perf.db pyserve plan ./Qwen3-8B   # one store for a team
""")
def perf():
    """The performance store: measured points by model shape, GPU, topology and load.

    `bench`, `sweep`, `plan --measure` and `offline` add every good result to it; `pyserve
    plan` and `pyserve launch` (no parallel flags) read it, with the GPU results that ship
    with pyserve, before they estimate anything.
    """


def _store(workspace: Path, perf_db: Path | None):
    from pyservecli import api
    from pyservecli.bench.perfstore import PerfStore

    return PerfStore(api.perf_store_path(workspace, perf_db))


@perf.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model-config", metavar="DIR|FILE|NAME", help="The model's config.json (a "
              "model directory, the file, or a built-in shape name) when the results do not "
              "name a model pyserve can find (plain `vllm bench serve` JSON).")
@click.option("--tp", type=click.IntRange(1, 4096), help="Topology of plain results.")
@click.option("--pp", type=click.IntRange(1, 4096))
@click.option("--dp", type=click.IntRange(1, 4096))
@click.option("--ep/--no-ep", default=None)
@click.option("--gpu", help="GPU of plain results (H200, H100, ...).")
@click.option("--gpus", type=click.IntRange(1, 65536), help="GPUs serving (plain results).")
@workspace_option
@perf_db_option
def import_(directory, model_config, tp, pp, dp, ep, gpu, gpus, workspace, perf_db):
    """Add every benchmark result under DIRECTORY (pyserve's result folders, `pyserve
    offline` results, plain `vllm bench serve` JSON with --model-config and the topology)."""
    from pyservecli.bench.perfstore import Given, find_model_config, import_dir, read_model_config

    config = None
    if model_config:
        config = read_model_config(model_config)
    given = Given(config=config, tp=tp, pp=pp, dp=dp, ep=ep, gpu=gpu, gpus=gpus)
    points, skipped = import_dir(directory, given=given, find_config=find_model_config)
    store = _store(workspace, perf_db)
    added = store.add(points)
    for path, why in skipped:
        click.echo(f"skipped {path}: {why}", err=True)
    click.echo(f"{added} point(s) added to {store.path}; {len(skipped)} file(s) skipped")


def _rows(points) -> list[list[str]]:
    head = ["shape", "model", "gpu", "gpus", "topology", "load", "tok/s", "TTFT p50/p99",
            "TPOT p50/p99", "vllm", "source"]
    rows = [head]
    for p in points:
        load = f"{p.isl}/{p.osl} " + (f"c{p.concurrency}" if p.concurrency else "")
        load += f" r{p.rate:g}" if p.rate is not None else ""
        rows.append([p.shape[:8], Path(p.model).name or p.model, p.gpu, str(p.gpus),
                     p.topology_label,
                     load, f"{p.output_tok_s:,.0f}", _pair(p.ttft_p50_ms, p.ttft_p99_ms, 0),
                     _pair(p.tpot_p50_ms, p.tpot_p99_ms, 2), p.vllm or "-", p.source])
    return rows


def _pair(a, b, digits: int) -> str:
    def one(v):
        return "-" if v is None else f"{v:,.{digits}f}"
    return f"{one(a)}/{one(b)}"


def _echo_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _filtered(store, model: str | None, gpu: str | None, seed: bool):
    from pyservecli.bench.perfstore import all_points

    shape = None
    if model:
        shape = _shape_of(model).fingerprint
    points = all_points(store if store.path.is_file() else None, shape, gpu) if seed else \
        store.points(shape, gpu)
    return points


def _shape_of(model: str):
    from pyservecli.bench.perfstore import shape_of_model

    return shape_of_model(model)


@perf.command("list")
@click.option("--model", help="Only this model's shape (a directory, a cached hub id, a "
              "built-in shape).")
@click.option("--gpu", help="Only this GPU kind (H200, H100, ...).")
@click.option("--seed/--no-seed", default=False, show_default=True,
              help="Include the points that ship with pyserve.")
@table_format_option
@workspace_option
@perf_db_option
def list_(model, gpu, seed, fmt, workspace, perf_db):
    """The stored points, oldest first."""
    from pyservecli.bench.perfstore import as_row

    points = _filtered(_store(workspace, perf_db), model, gpu, seed)
    if fmt != "text":
        emit_rows([as_row(p) for p in points], fmt)
        return
    if not points:
        click.echo("no points stored" + (" for that filter" if model or gpu else ""))
        return
    _echo_table(_rows(points))


@perf.command("show")
@click.argument("model")
@workspace_option
@perf_db_option
def show(model, workspace, perf_db):
    """MODEL's shape (fingerprint and the fields behind it) and its points, the seed's too."""
    shape = _shape_of(model)
    click.echo(f"shape {shape.fingerprint} ({shape.family}): {shape.describe()}")
    points = _filtered(_store(workspace, perf_db), model, None, True)
    if points:
        _echo_table(_rows(points))
    else:
        click.echo("no points stored for this shape")


@perf.command("export")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV file [default: standard output].")
@click.option("--seed/--no-seed", default=False, show_default=True,
              help="Include the points that ship with pyserve.")
@workspace_option
@perf_db_option
def export(out, seed, workspace, perf_db):
    """Every stored point as CSV (one row per point, the store's columns)."""
    from pyservecli.bench.perfstore import write_csv

    text = write_csv(_filtered(_store(workspace, perf_db), None, None, seed))
    if out:
        from pyservecli.bench.perfstore import write_private_file

        write_private_file(out, text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)
