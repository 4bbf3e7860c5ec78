"""pyserve runs on login nodes: no vllm/torch at start-up, help everywhere, scripts in sync."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyservecli.models.dummy import builtin_config

from .conftest import run_pyserve

ROOT = Path(__file__).resolve().parent.parent


def test_cli_paths_import_neither_vllm_nor_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from pyservecli.cli import main\n"
        "r = CliRunner()\n"
        "out = r.invoke(main, ['launch', 'm', '--tp', '8', '--ep', '--nodelist', 'a,b',"
        " '--gpus-per-node', '8', '--dry-run', '--format', 'json'])\n"
        "assert out.exit_code == 0, out.output\n"
        "r.invoke(main, ['health', '--host', '127.0.0.1', '--port', '1', '--timeout', '1'])\n"
        "r.invoke(main, ['status', '--workspace', '/nonexistent'])\n"
        f"out = r.invoke(main, ['plan', '{ROOT}/pyservecli/models/qwen3-8b', '--nodelist', 'a',"
        " '--gpus-per-node', '8', '--gpu-memory', '80'])\n"
        "assert out.exit_code == 0, out.output\n"
        "heavy = [m for m in ('vllm', 'torch', 'ray', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [[], ["launch"], ["plan"], ["health"], ["status"],
                                     ["model", "create"],
                                     ["model", "list"], ["sbatch-script"]])
def test_every_command_has_help_with_examples(command):
    result = run_pyserve(*command, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    if command and command != ["model", "list"]:
        assert "Examples:" in result.stdout


def test_committed_sbatch_script_is_the_rendered_template():
    result = run_pyserve("sbatch-script")
    assert result.returncode == 0
    assert (ROOT / "slurm" / "run.sbatch").read_text() == result.stdout
    assert 'exec pyserve launch "$@"' in result.stdout


def test_status_without_a_launch():
    result = run_pyserve("status", "--workspace", "/nonexistent")
    assert result.returncode == 2
    assert "no launch recorded in /nonexistent" in result.stderr


def test_login_node_install_plans_checks_and_reports(light_pyserve, tmp_path):
    plan = light_pyserve("launch", "Qwen/Qwen3-30B-A3B-FP8", "--tp", "8", "--ep", "--nodelist",
                         "gpu[1-2]", "--gpus-per-node", "8", "--dry-run", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    assert '"ep": 16' in plan.stdout
    health = light_pyserve("health", "--host", "127.0.0.1", "--port", "1", "--timeout", "2")
    assert health.returncode == 2 and "no server answers" in health.stderr
    status = light_pyserve("status", "--workspace", str(tmp_path))
    assert status.returncode == 2 and "no launch recorded" in status.stderr
    # The planner sizes a model on a login node too (no GPU here: the allocation is given).
    model = tmp_path / "qwen3-8b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(builtin_config("qwen3-8b")))
    ranked = light_pyserve("plan", str(model), "--nodelist", "gpu1", "--gpus-per-node", "2",
                           "--gpu-memory", "80", "--format", "json")
    assert ranked.returncode == 0, ranked.stderr
    assert json.loads(ranked.stdout)["candidates"][0]["estimate"]["output_tok_s"] > 0


def test_summary_table_is_not_cut_when_output_is_not_a_terminal(capsys, tmp_path):
    """#26 item 4: in make logs and sbatch output the table was cut to 80 columns."""
    from pyservecli.cli import print_summary

    row = {"suite": "concurrency", "point": "i1024-o256-rinf-c128", "status": "ok",
           "output_tok_s": 8709.42, "ttft_p50_ms": 963.11, "tpot_p50_ms": 10.92,
           "interactivity_tok_s_user": 91.6, "watts_per_gpu": 612.3,
           "note": "prefix cache hit rate 62 %: prompts were cached"}
    print_summary([row], tmp_path / "out", command="sweep")
    text = capsys.readouterr().out
    assert "pyserve sweep -> " in text
    for value in ("i1024-o256-rinf-c128", "interactivity_tok_s_user", "prompts were cached",
                  "8709.42"):
        assert value in text
    assert "…" not in text
