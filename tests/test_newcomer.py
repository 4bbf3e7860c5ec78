"""What a new user trips on (#26): the README's own `pyserve` lines run (or, where they need a
server or GPUs, parse), renamed options keep working with a note, plan says what to do on a
machine without GPUs, --top shortens the table, and small wording."""

import json
import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pyservecli.cli import main
from pyservecli.models.dummy import create_model_dir

ROOT = Path(__file__).resolve().parent.parent
# What the README's example models stand for here: config-only copies of the same shapes.
MODELS = {"./Qwen3-8B": "qwen3-8b", "Qwen/Qwen3-8B": "qwen3-8b", "./tiny": "qwen3-tiny",
          "Qwen/Qwen3-30B-A3B": "qwen3-30b-a3b", "./Qwen3-30B-A3B": "qwen3-30b-a3b"}
# Lines that run here as they are (no server, no GPU): these commands with these flags.
RUNS_HERE = (("plan", "--gpus-per-node"), ("launch", "--dry-run"), ("offline", "--dry-run"),
             ("perf", "show"), ("perf", "list"), ("perf", "export"))
# Lines that run here as a dry run: what they would start, planned on this GPU-less machine.
DRY_RUN_HERE = ("launch",)


class _Ran:
    def __init__(self, result):
        self.returncode = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr


def cli(*args) -> _Ran:
    """The CLI in this process (no interpreter start per call: these tests are many and
    small); exit status, standard output and standard error as a subprocess would give."""
    return _Ran(CliRunner().invoke(main, list(args)))


def readme_commands() -> list[str]:
    """Every `pyserve ...` line of README.rst's literal blocks but synopses ([...], <...>)."""
    lines = []
    in_block = False  # inside a literal block: after a line ending "::", while indented
    for line in (ROOT / "README.rst").read_text().splitlines():
        text = line.strip()
        if text and not line.startswith(" "):
            in_block = False
        if text.endswith("::"):
            in_block = True
            continue
        if not in_block or not text.startswith("pyserve "):
            continue
        command = text.split("  #")[0].strip()
        if re.search(r"[\[<]|\bMODEL\b", command):
            continue
        lines.append(command)
    return lines


def command_of(argv: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a pyserve argv names, and the arguments left for it."""
    command, rest = main, list(argv)
    while isinstance(command, click.Group) and rest:
        # A group's own options come before its subcommand (`pyserve image --runtime podman ls`).
        options = {opt: p for p in command.params for opt in p.opts}
        while rest and rest[0] in options:
            rest = rest[1 if options[rest[0]].is_flag else 2:]
        if not rest or rest[0] not in command.commands:
            break
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


def test_readme_has_examples_to_check():
    assert len(readme_commands()) >= 15


@pytest.mark.parametrize("line", readme_commands())
def test_readme_example(line, tmp_path, monkeypatch):
    """A README line that can run without GPUs runs and exits 0; the others must at least name
    a real command and only its options (a renamed or removed option fails here)."""
    argv = shlex.split(line)[1:]
    command, rest = command_of(argv)
    assert not isinstance(command, click.Group), f"{line}: no such command"
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)
             if not getattr(p, "hidden", False)}
    passthrough = command.context_settings.get("ignore_unknown_options") or any(
        isinstance(p, click.Argument) and p.nargs == -1 for p in command.params)
    for token in rest:
        name = token.split("=")[0]
        if name.startswith("--") and not passthrough:
            assert name in known, f"{line}: {name} is not an option of this command"
        if name.startswith("--") and name in {opt for p in command.params
                                              for opt in p.opts if getattr(p, "hidden", 0)}:
            pytest.fail(f"{line}: {name} is a renamed option's old name")
    runnable = any(argv[0] == verb and flag in argv for verb, flag in RUNS_HERE)
    if not runnable and argv[0] in DRY_RUN_HERE and "--image" not in argv:
        argv.append("--dry-run")
    elif not runnable:
        return
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYSERVE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("PYSERVE_PERF_DB", str(tmp_path / "perf.db"))
    for name, shape in MODELS.items():
        for index, token in enumerate(argv):
            if token == name:
                argv[index] = str(create_model_dir(shape, tmp_path / shape))
            elif token.startswith(name + " "):  # a --serve line
                made = create_model_dir(shape, tmp_path / shape)
                argv[index] = f"{made}{token[len(name):]}"
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, f"{line}\n{result.output}\n{result.exception!r}"


def test_renamed_options_keep_working_with_a_note(tmp_path):
    model = create_model_dir("qwen3-tiny", tmp_path / "tiny")
    old = cli("offline", str(model), "--dp", "2", "--input-len", "32", "--output-len",
                      "16", "--load-format", "dummy", "--dry-run", "--format", "json",
                      "--workspace", str(tmp_path / "ws"))
    new = cli("offline", str(model), "--dp", "2", "--isl", "32", "--osl", "16",
                      "--load-format", "dummy", "--dry-run", "--format", "json",
                      "--workspace", str(tmp_path / "ws"))
    assert old.returncode == new.returncode == 0, old.stderr + new.stderr
    assert "pyserve: note: --input-len is now --isl" in old.stderr
    assert "note" not in new.stderr
    planned = [json.loads(r.stdout) for r in (old, new)]
    for plan in planned:
        plan.pop("job_id", None)
    assert json.dumps(planned[0], sort_keys=True).count('"32"') == json.dumps(
        planned[1], sort_keys=True).count('"32"')
    helped = cli("offline", "--help").stdout
    assert "--isl" in helped and "--input-len" not in helped
    bench = cli("bench", "--help").stdout
    assert "--suite" in bench and "--type" not in bench
    # The old name reaches the same option: an unknown suite is refused by name either way.
    for flag in ("--type", "--suite"):
        refused = cli("bench", "--host", "127.0.0.1", "--port", "1", flag, "nope")
        assert refused.returncode == 2 and "nope" in refused.stderr


def test_plan_without_gpus_names_the_command_that_fixes_it(tmp_path):
    model = create_model_dir("qwen3-8b", tmp_path / "qwen3-8b")
    out = cli("plan", str(model), "--workspace", str(tmp_path / "ws"))
    assert out.returncode == 2
    line = out.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("pyserve: error: no GPU found here")
    assert f"pyserve plan {model} --gpus-per-node 8 --gpu-type H100" in line
    assert "CPU engine" in line  # why `launch --dry-run` here plans CPU rank slots instead


def test_top_shortens_the_plan_table_and_json(tmp_path):
    model = create_model_dir("qwen3-30b-a3b", tmp_path / "moe")
    args = ["plan", str(model), "--gpus-per-node", "2", "--gpu-type", "H200", "--workspace",
            str(tmp_path / "ws")]
    full = json.loads(cli(*args, "--format", "json").stdout)
    short = json.loads(cli(*args, "--top", "2", "--format", "json").stdout)
    assert [c["label"] for c in short["candidates"]] == [c["label"] for c in
                                                          full["candidates"]][:2]
    assert short["left_out"] == len(full["candidates"]) - 2
    text = cli(*args, "--top", "2").stdout
    rows = [line for line in text.splitlines() if re.match(r"^\d+\s+TP", line)]
    assert len(rows) == 2 and "more candidate(s) not shown (--top)" in text
    refused = cli(*args, "--top", "0")
    assert refused.returncode == 2


def test_health_says_what_the_key_file_is():
    for command in ("health", "bench", "sweep"):
        helped = cli(command, "--help").stdout
        assert "--api-key-file" in helped and "bearer token" in " ".join(helped.split())


def test_tables_come_as_csv_for_scripts(tmp_path):
    """#26: wherever a table is printed, --format json|csv gives its rows."""
    import csv
    import io

    model = create_model_dir("qwen3-8b", tmp_path / "qwen3-8b")
    args = ["plan", str(model), "--gpus-per-node", "2", "--gpu-type", "H200", "--workspace",
            str(tmp_path / "ws")]
    data = json.loads(cli(*args, "--format", "json").stdout)
    rows = list(csv.DictReader(io.StringIO(cli(*args, "--format", "csv").stdout)))
    assert [r["topology"] for r in rows] == [c["label"] for c in data["candidates"]]
    assert rows[0]["source"] == data["candidates"][0]["figure"]["source"]
    assert float(rows[0]["output_tok_s"]) == data["candidates"][0]["figure"]["output_tok_s"]
    listed = cli("perf", "list", "--seed", "--format", "csv", "--workspace",
                         str(tmp_path / "ws"))
    points = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert len(points) >= 25 and {"model", "gpu", "output_tok_s"} <= set(points[0])
    for command in ("bench", "sweep", "health"):
        helped = " ".join(cli(command, "--help").stdout.split())
        assert "[text|json|csv]" in helped, command


def test_offline_takes_the_dataset_folder_as_bench_does(tmp_path):
    """#26: `--dataset-dir DIR` means the same in offline as in bench (the ShareGPT file in
    DIR); a missing file is one clear line, and DIR with --dataset-path is refused."""
    model = create_model_dir("qwen3-tiny", tmp_path / "tiny")
    data = tmp_path / "datasets"
    data.mkdir()
    base = ["offline", str(model), "--dp", "2", "--load-format", "dummy", "--dry-run",
            "--format", "json", "--workspace", str(tmp_path / "ws")]
    missing = cli(*base, "--dataset-dir", str(data))
    assert missing.returncode == 2
    assert str(data / "ShareGPT_V3_unfiltered_cleaned_split.json") in missing.stderr
    (data / "ShareGPT_V3_unfiltered_cleaned_split.json").write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "hi there"},
                           {"from": "gpt", "value": "hello"}]}] * 4))
    found = cli(*base, "--dataset-dir", str(data))
    assert found.returncode == 0, found.stderr
    assert "ShareGPT_V3_unfiltered_cleaned_split.json" in found.stdout
    both = cli(*base, "--dataset-dir", str(data), "--dataset-path", "x.json")
    assert both.returncode == 2 and "not both" in both.stderr
