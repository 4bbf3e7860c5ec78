"""The Python API mirrors the CLI: the same plans, the same refusals, a real server in a `with`."""

import json
import socket

import pytest

from pyservecli import api
from pyservecli.errors import PyserveError
from pyservecli.models.dummy import create_model_dir

from .conftest import run_pyserve
from .engine import CPU_SERVE_ARGS, cpu_engine_env, engine_leftovers, free_port, require_engine

SETTINGS = [
    dict(model="Qwen/Qwen3-30B-A3B-FP8", tp=8, ep=True, nodelist="gpu[1-2]", gpus_per_node=8),
    dict(model="Qwen/Qwen3-8B", dp=2, tp=2, backend="mp", nodelist="n1", gpus_per_node=4,
         env={"NCCL_DEBUG": "INFO"}, vllm_args=["--max-model-len", "4096"]),
    dict(model="Qwen/Qwen3-8B", pp=2, nodelist="a,b", gpus_per_node=1),
]


def without_ports(plan: dict) -> dict:
    """The job window's ports come from the job id, which differs between two plans made a
    moment apart; everything else must match."""
    def mask(argv):
        return [("PORT" if argv[i - 1].endswith(("port", "-rpc-port")) else a)
                for i, a in enumerate(argv)]
    return {"topology": plan["topology"], "head": {**plan["head"]},
            "nodes": [{**n, "argv": mask(n["argv"]),
                       "env": {k: v for k, v in n["env"].items() if "PORT" not in k}}
                      for n in plan["nodes"]]}


@pytest.mark.parametrize("settings", SETTINGS, ids=["tp8-ep", "dp2-tp2-env", "pp2"])
def test_plan_is_the_cli_dry_run_of_the_same_settings(settings):
    settings = dict(settings)
    model = settings.pop("model")
    from_api = json.loads(api.plan(model, **settings).to_json())
    cli = run_pyserve("launch", *api.launch_argv(model, **settings), "--dry-run", "--format",
                      "json")
    assert cli.returncode == 0, cli.stderr
    assert without_ports(from_api) == without_ports(json.loads(cli.stdout))


def test_serve_refuses_a_bad_plan_before_starting_anything(tmp_path):
    with pytest.raises(PyserveError, match="TP 3"):
        with api.serve("Qwen/Qwen3-8B", tp=3, nodelist="n1", gpus_per_node=8,
                       workspace=tmp_path / "ws"):
            pytest.fail("entered the block of a server that cannot exist")
    assert not (tmp_path / "ws").exists()  # no launcher ran: it would have written its logs
    with pytest.raises(PyserveError, match="go together"):
        api.bench("http://127.0.0.1:1", isl=128)
    with pytest.raises(PyserveError, match="unknown check"):
        api.health("http://127.0.0.1:1", only=["models", "nope"])


def test_serve_refuses_a_port_in_use_while_planning(tmp_path, config_dir):
    """The model and topology are fine, but the API port is taken: api.serve refuses while
    planning, in this process, before any launcher runs, and the reason reaches the caller
    (the name once said "the launcher gave up", which no launcher did here; #28)."""
    model = config_dir("qwen3-tiny")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PyserveError, match=f"port {port} is already in use"):
            with api.serve(str(model), gpus_per_node=1, port=port, workspace=tmp_path / "ws"):
                pytest.fail("entered the block of a server that did not start")
    # Refused while planning, in this process: nothing was started or written.
    assert not (tmp_path / "ws").exists()


@pytest.mark.engine
def test_serve_health_bench_then_stopped(tmp_path, monkeypatch):
    require_engine()
    model = create_model_dir("qwen3-tiny", tmp_path / "qwen3-tiny")
    for key, value in cpu_engine_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    port = free_port()
    with api.serve(str(model), vllm_args=CPU_SERVE_ARGS, port=port, gpus_per_node=1,
                   workspace=tmp_path / "ws") as server:
        assert server.port == port and server.base_url.startswith("http://")
        record = server.record()
        assert record["state"] == "ready" and record["plan"]["topology"]["tp"] == 1
        assert record["ready_s"] > 0
        checks = api.health(server.base_url, only=["models", "completion", "chat", "streaming"])
        assert [c.name for c in checks] == ["models", "completion", "chat", "streaming"]
        assert all(c.passed for c in checks), [c.detail for c in checks if not c.passed]
        results = api.bench(server.base_url, isl=32, osl=8, concurrency=2, num_prompts=4,
                            out=tmp_path / "bench", workspace=tmp_path / "ws")
        assert [r.status for r in results] == ["ok"]
        assert results[0].result["completed"] == 4
        assert results[0].result["total_output_tokens"] == 32
        assert (tmp_path / "bench" / "summary.csv").read_text().count("\n") == 2
    # Leaving the block stopped every rank and freed the port.
    assert engine_leftovers(model) == []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_serve_raises_the_cause_found_in_the_failed_nodes_log(tmp_path, config_dir,
                                                               monkeypatch):
    """The launcher runs in this process: a node that dies before READY reaches the caller as
    PyserveError carrying the cause from its log, and the launch record says "failed"."""
    from pyservecli.run import jobfiles, launcher

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    vllm = fake_bin / "vllm"
    vllm.write_text("#!/bin/sh\necho 'INFO starting'\n"
                    "echo 'ValueError: max_model_len 999999 is too long'\nexit 3\n")
    vllm.chmod(0o755)
    monkeypatch.setattr(jobfiles, "bin_dir", lambda: str(fake_bin))
    monkeypatch.setattr(launcher, "bin_dir", lambda: str(fake_bin))
    lines = []
    with pytest.raises(PyserveError) as failure:
        with api.serve(str(config_dir("qwen3-tiny")), gpus_per_node=1, port=free_port(),
                       workspace=tmp_path / "ws", say=lines.append):
            pytest.fail("entered the block of a server that died")
    message = str(failure.value)
    assert "exited with status 3 before READY" in message
    assert "ValueError: max_model_len 999999 is too long" in message
    assert any(line.startswith("pyserve: cause on ") for line in lines)
    record = json.loads((tmp_path / "ws" / "latest.json").read_text())
    assert record["state"] == "failed" and record["exit_status"] == 1
