"""`pyserve top` as a person uses it, against a fleet of stand-in servers (tests/fake_vllm.py
serves vLLM's /metrics names) behind the real vllm-router: the JSON snapshot for scripts, and
the live screen under tmux while a replica dies and is restarted. GPU telemetry comes from a
stand-in nvidia-smi on the nodes' PATH (these machines have no GPU)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import requests

from .conftest import run_pyserve
from .engine import must_have
from .test_fleet_restart import kill_server_on, record, start_fleet, wait_for
from .test_security import fake_bin, stop

pytestmark = pytest.mark.engine  # vllm-router comes with the engine extra

NVIDIA_SMI = """#!/bin/sh
# A stand-in nvidia-smi: the query `pyserve top`'s telemetry asks for, two GPUs.
echo "0, 37, 1024, 81559, 123.45, 45"
echo "1, 0, 12, 81559, [N/A], 40"
"""


def with_gpus(tmp_path):
    smi = fake_bin(tmp_path) / "nvidia-smi"
    smi.write_text(NVIDIA_SMI)
    smi.chmod(0o755)


def complete(base: str, model: str, n: int) -> None:
    for _ in range(n):
        requests.post(f"{base}/v1/completions", timeout=10,
                      json={"model": model, "prompt": "one two three", "max_tokens": 3})


def test_top_once_json_has_every_server_the_routers_view_and_the_gpus(tmp_path):
    with_gpus(tmp_path)
    proc, model, base = start_fleet(tmp_path, "--replicas", "2")
    try:
        complete(base, model, 4)
        fleet = record(tmp_path)
        sender = subprocess.Popen([sys.executable, "-c", (
            "import requests, time\n"
            "end = time.time() + 3\n"
            "while time.time() < end:\n"
            f"    requests.post({base + '/v1/completions'!r}, json={{'model': {model!r}, "
            "'prompt': 'a b', 'max_tokens': 3}, timeout=10)\n")])
        try:
            out = run_pyserve("top", "--once", "--format", "json", "--interval", "1",
                              "--workspace", str(tmp_path / "ws"))
        finally:
            sender.wait(timeout=30)
        assert out.returncode == 0, out.stderr
        snap = json.loads(out.stdout)
        assert snap["launch"] == fleet["launch_id"] and snap["state"] == "ready"
        assert [s["role"] for s in snap["servers"]] == ["replica", "replica"]
        urls = [r["url"] for r in fleet["roles"]["replicas"]]
        assert [s["url"] for s in snap["servers"]] == urls
        for server in snap["servers"]:
            assert server["state"] == "serving" and server["answering"] is True
            assert server["kv_cache"] == 0.25 and server["waiting"] == 0
            assert server["generation_tok_s"] is not None and server["generation_tok_s"] >= 0
            assert server["router"]["healthy"] is True
        # Requests went through the router both ways; tokens flowed between the two reads.
        assert sum(s["router"]["requests"] for s in snap["servers"]) >= 4
        assert sum(s["generation_tok_s"] for s in snap["servers"]) > 0
        assert snap["router"]["answering"] and snap["router"]["active_workers"] == 2
        gpus = snap["gpus"]
        assert len(gpus) == 4  # two stand-in GPUs per replica's node script
        assert {(g["index"], g["util_pct"], g["power_w"]) for g in gpus} == {
            (0, 37.0, 123.45), (1, 0.0, None)}
        refused = run_pyserve("top", "--format", "json", "--workspace", str(tmp_path / "ws"))
        assert refused.returncode == 2 and "--format json goes with --once" in refused.stderr
    finally:
        stop(proc)
    # No telemetry left once the servers stopped.
    assert list((tmp_path / "ws" / "logs").glob("*/gpu-*.csv")) == []


def screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True).stdout


def test_top_under_tmux_shows_a_replica_die_and_come_back(tmp_path):
    if shutil.which("tmux") is None:
        if must_have():
            pytest.fail("tmux is not installed")
        pytest.skip("tmux not installed")
    # Replica 1 (GPU 1) takes 4 s more to start, so its restart stays on the screen a while.
    proc, _model, _base = start_fleet(tmp_path, "--replicas", "2", "--restart",
                                      env={"FAKE_VLLM_START_DELAY": "1:4"})
    session = f"pyserve-top-{tmp_path.name}"[:60]
    try:
        urls = [r["url"] for r in record(tmp_path)["roles"]["replicas"]]
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "220", "-y", "40",
                        # The pane's own size, not a COLUMNS this test process inherited.
                        f"env -u COLUMNS -u LINES {sys.executable} -m pyservecli top "
                        f"--interval 1 --workspace {tmp_path / 'ws'}"], check=True)
        wait_for(lambda: screen(session).count("serving") == 2, 30,
                 "two serving replicas on the screen")
        shown = screen(session)
        assert "pyserve top:" in shown and "2 servers in rotation" in shown
        assert "GPUs: no telemetry" in shown

        kill_server_on(urls[1])
        wait_for(lambda: "dead" in screen(session) or "restarting" in screen(session), 30,
                 "top to show the killed replica")
        wait_for(lambda: screen(session).count("serving") == 2 and
                 "healthy" in screen(session), 60, "top to show the replica restarted")
        rows = [line for line in screen(session).splitlines() if "replica 1" in line]
        assert rows and rows[0].rstrip(" │|").endswith("1"), rows  # deaths: 1
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        stop(proc)
    time.sleep(0.1)
