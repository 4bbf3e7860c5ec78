"""The ``pyserve`` command line. Imports only the light dependencies at start-up."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from pyservecli import DEFAULT_WORKSPACE, __version__, default_workspace
from pyservecli.errors import PyserveError


def workspace_option(func):
    return click.option(
        "--workspace", type=click.Path(file_okay=False, path_type=Path),
        default=default_workspace,
        show_default=f"$PYSERVE_WORKSPACE or ./{DEFAULT_WORKSPACE}",
        help="Where logs, rendered scripts and launch records go.")(func)


def perf_db_option(func):
    return click.option(
        "--perf-db", type=click.Path(dir_okay=False, path_type=Path),
        help="The performance store (SQLite) measured points go to and the planner reads "
        "[default: $PYSERVE_PERF_DB, else WORKSPACE/perf.db].")(func)


def renamed_option(old: str, new: str, dest: str, **option_kwargs):
    """Keep ``old``, the option's earlier name, for one release: hidden from --help, it sets
    ``dest`` as ``new`` does and prints a one-line note (#26: one name per concept)."""
    hidden = "renamed_" + old.strip("-").replace("-", "_")

    def decorator(func):
        @functools.wraps(func)
        def command(*args, **kwargs):
            value = kwargs.pop(hidden, None)
            if value is not None:
                click.echo(f"pyserve: note: {old} is now {new}; {old} goes in the next "
                           "release", err=True)
                kwargs[dest] = value
            return func(*args, **kwargs)

        return click.option(old, hidden, hidden=True, default=None, **option_kwargs)(command)

    return decorator


def repeats_option(func):
    return click.option(
        "--repeats", type=click.IntRange(1, 20), default=1, show_default=True,
        help="Run each point N times on fresh prompts: results give the median and the "
        "spread (min - max), and say when a difference lies inside it.")(func)


KEY_FILE_HELP = ("A file holding the server's API key (as given to `pyserve launch "
                 "--api-key-file`); sent as a bearer token, never on a command line.")


def read_key(path: Path | None) -> str | None:
    """The key a client sends, read and checked as the launch reads the server's."""
    if path is None:
        return None
    from pyservecli import api

    return api.read_api_key(path)


class PyserveGroup(click.Group):
    """Every failure ends as one line, ``pyserve: error: ...``, and exit status 2: a
    PyserveError says what to fix; a file-system error names the file; anything else is named
    as unexpected (PYSERVE_DEBUG=1 shows the traceback). A usage error (unknown option, bad
    value) is one such line too, pointing at the command's --help instead of printing the usage.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            fail(f"{exc.format_message()}{hint}")
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except PyserveError as exc:
            fail(str(exc))
        except OSError as exc:
            if os.environ.get("PYSERVE_DEBUG"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if os.environ.get("PYSERVE_DEBUG"):
                raise
            if isinstance(exc, RecursionError) and "decoding" in str(exc):
                # json's decoder recursing into a file of [[[[...: the file is at fault
                fail(f"a JSON file is nested too deeply to read ({exc})")
            fail(f"unexpected {type(exc).__name__}: {exc} (PYSERVE_DEBUG=1 shows where)")


def fail(message: str) -> None:
    click.echo(f"pyserve: error: {' '.join(message.split()) if message else 'failed'}",
               err=True)
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


def table_format_option(func):
    """--format for a command that prints a table: text (rich), json or csv for scripts."""
    return click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]),
                        default="text", show_default=True,
                        help="text: a table; json / csv: the same rows for scripts.")(func)


def emit_rows(rows: list[dict], fmt: str) -> None:
    """Rows as JSON (a list of objects) or CSV (a header line, then one line per row)."""
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    import csv
    import io

    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    click.echo(buffer.getvalue(), nl=False)


def print_summary(rows: list[dict], out: Path, model_column: bool = False,
                  command: str = "bench", fmt: str = "text") -> None:
    if fmt != "text":
        emit_rows(rows, fmt)
        return
    from rich.console import Console
    from rich.table import Table

    columns = ("suite", "point", "status", "output_tok_s", "ttft_p50_ms", "tpot_p50_ms",
               "interactivity_tok_s_user", "watts_per_gpu", "note")
    if any((row.get("repeats") or 1) > 1 for row in rows):  # --repeats: the median's spread
        rows = [{**row, "repeats_min_max": "" if row.get("output_tok_s_min") is None else
                 f"{row['output_tok_s_min']}-{row['output_tok_s_max']}"} for row in rows]
        columns = (*columns[:4], "repeats", "repeats_min_max", *columns[4:])
    if model_column:  # several models behind one endpoint: one summary.csv in each's folder
        columns = ("model", *columns)
        out = out / "*"
    table = Table(title=f"pyserve {command} -> {out}/summary.csv")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    # Not a terminal (make logs, sbatch output): as wide as the table needs, never cut to 80.
    Console(width=None if sys.stdout.isatty() else 400).print(table)


# The commands register themselves on ``main`` when their modules are imported.
from pyservecli.cli import measure, perf, plan, serve, tools  # noqa: E402, F401
