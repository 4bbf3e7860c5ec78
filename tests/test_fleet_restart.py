"""A fleet's servers dying and coming back, with the real launcher and vllm-router in front of
stand-in servers (tests/fake_vllm.py: the OpenAI API, no engine), so the supervision itself is
tested in seconds. The engine versions are in tests/test_engine_fleet.py."""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from .conftest import run_pyserve
from .engine import must_have, processes_mentioning
from .test_security import answers, fake_bin, free_port, start_launch, stop, wait_ready

pytestmark = pytest.mark.engine  # vllm-router comes with the engine extra


def start_fleet(tmp_path, *args, env=None):
    """A fleet of stand-in servers on 2 "GPUs" behind the real router; (launcher, model, URL)."""
    router = Path(sys.executable).parent / "vllm-router"
    if not router.exists():
        if must_have():
            raise AssertionError("vllm-router is not installed (make setup installs it)")
        pytest.skip("vllm-router not installed (make setup)")
    if not (fake_bin(tmp_path) / "vllm-router").exists():
        (fake_bin(tmp_path) / "vllm-router").symlink_to(router)
    port = free_port()
    proc = start_launch(tmp_path, tmp_path / "ws", port, *args, env=env, gpus_per_node=2)
    wait_ready(proc)
    return proc, str(tmp_path / "model"), f"http://127.0.0.1:{port}"


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def record(tmp_path) -> dict:
    try:
        return json.loads((tmp_path / "ws" / "latest.json").read_text())
    except (OSError, ValueError):
        return {}


def admin_url(tmp_path) -> str:
    """The router's management API: on loopback, behind no gate (the launcher's only)."""
    return f"http://127.0.0.1:{record(tmp_path)['roles']['router']['admin_port']}"


def replica_field(tmp_path, index: int, key: str):
    """A field of replica ``index`` in the workspace's latest record, None if not there."""
    replicas = record(tmp_path).get("roles", {}).get("replicas", [])
    return replicas[index].get(key) if len(replicas) > index else None


def kill_server_on(url: str) -> None:
    port = url.rsplit(":", 1)[1]
    victims = [pid for pid, cmd in processes_mentioning("fake_vllm.py")
               if f"--port {port} " in cmd + " "]
    assert victims, f"no stand-in server on port {port}"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)


def complete(base: str, model: str) -> int:
    try:
        return requests.post(f"{base}/v1/completions", timeout=10, json={
            "model": model, "prompt": "hello", "max_tokens": 4}).status_code
    except requests.RequestException:
        return 0


def test_a_prefill_server_that_dies_is_restarted_and_taken_back_by_the_pd_router(tmp_path):
    """vllm-router cannot add a server to a P/D router while it runs: the dead prefill server is
    left listed, restarted on its address, and the router's health check takes it back."""
    proc, model, base = start_fleet(tmp_path, "--prefill", "1", "--decode", "1", "--restart")
    try:
        assert complete(base, model) == 200
        prefill = record(tmp_path)["roles"]["replicas"][0]
        assert prefill["role"] == "prefill" and prefill["deaths"] == 0
        kill_server_on(prefill["url"])

        def restarted():
            now = record(tmp_path).get("roles", {}).get("replicas", [{}])[0]
            return now.get("deaths") == 1 and now.get("state") == "serving"

        wait_for(restarted, 120, "the prefill server to be restarted")
        workers = requests.get(f"{admin_url(tmp_path)}/workers", timeout=5).json()["workers"]
        assert {w["url"]: w["is_healthy"] for w in workers} == {
            prefill["url"]: True, record(tmp_path)["roles"]["replicas"][1]["url"]: True}
        assert wait_for(lambda: complete(base, model) == 200, 60, "a completion")
        assert proc.poll() is None
    finally:
        stop(proc)
    said = proc.stderr.read()
    assert "prefill 0" in said and "died" in said, said
    assert "left to the router's health check" in said, said
    assert "prefill 0 restarted and back in rotation" in said, said
    assert processes_mentioning(str(tmp_path / "fakebin")) == []


def test_a_pd_fleet_without_restart_stops_when_its_only_decode_server_dies(tmp_path):
    proc, model, base = start_fleet(tmp_path, "--prefill", "1", "--decode", "1")
    try:
        kill_server_on(record(tmp_path)["roles"]["replicas"][1]["url"])
        code = proc.wait(timeout=120)
    finally:
        stop(proc)
    said = proc.stderr.read()
    assert code != 0
    assert "every decode server of" in said and "died; stopping" in said, said
    assert record(tmp_path)["state"] == "failed"


def test_pyserve_stop_stops_a_fleet_and_status_shows_every_role(tmp_path):
    proc, model, base = start_fleet(tmp_path, "--replicas", "2")
    try:
        urls = [r["url"] for r in record(tmp_path)["roles"]["replicas"]]
        status = run_pyserve("status", "--workspace", str(tmp_path / "ws"))
        assert status.returncode == 0, status.stderr
        assert "router" in status.stdout and all(url in status.stdout for url in urls)
        by_id = run_pyserve("status", record(tmp_path)["launch_id"], "--workspace",
                            str(tmp_path / "ws"))
        assert by_id.returncode == 0 and "router" in by_id.stdout, by_id.stderr
        stopped = run_pyserve("stop", "--workspace", str(tmp_path / "ws"))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "stopped" in stopped.stdout
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    assert record(tmp_path)["state"] == "stopped"
    for url in [base, *urls]:
        with pytest.raises(requests.RequestException):
            requests.get(f"{url}/health", timeout=3)
    assert processes_mentioning(str(tmp_path / "fakebin")) == []
    again = run_pyserve("stop", "--workspace", str(tmp_path / "ws"))
    assert again.returncode == 0 and "already ended" in again.stdout


def test_a_killed_fleet_launcher_leaves_nothing_serving(tmp_path):
    """SIGKILL gives the launcher no chance to clean up: the router, tethered to it, ends at
    once; the replicas' nodes see its heartbeat stop and end their servers."""
    proc, _model, base = start_fleet(tmp_path, "--replicas", "2",
                                     env={"PYSERVE_HEARTBEAT_TIMEOUT_S": "5"})
    try:
        urls = [r["url"] for r in record(tmp_path)["roles"]["replicas"]]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # Sooner than any node could notice the heartbeat (5 s here): the router's own end.
        wait_for(lambda: not answers(base), 4, "the router to end")

        wait_for(lambda: not any(answers(url) for url in urls), 60, "every server to end")
        status = run_pyserve("status", "--workspace", str(tmp_path / "ws"))
        assert "launcher gone" in status.stdout, status.stdout + status.stderr
        wait_for(lambda: processes_mentioning(str(tmp_path / "fakebin")) == [], 30,
                 "no process of the fleet left")
    finally:
        stop(proc)


def test_a_replica_that_keeps_dying_is_restarted_three_times_then_left_dead(tmp_path):
    proc, model, base = start_fleet(tmp_path, "--replicas", "2", "--restart")
    # The workspace's latest.json stays the fleet's record while replicas restart (a replica's
    # own launch writes only its launch.json).
    foreign, done = [], threading.Event()

    def watch_latest():
        while not done.is_set():
            seen = record(tmp_path)
            if seen and "roles" not in seen:
                foreign.append(seen.get("launch_id"))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_latest, daemon=True)
    watcher.start()
    try:
        url = record(tmp_path)["roles"]["replicas"][1]["url"]
        for death in range(1, 5):
            wait_for(lambda: replica_field(tmp_path, 1, "state") == "serving",
                     60, f"replica 1 serving before death {death}")
            kill_server_on(url)
            wait_for(lambda d=death: replica_field(tmp_path, 1, "deaths") == d,
                     60, f"death {death} recorded")
        time.sleep(3)
        last = record(tmp_path)["roles"]["replicas"]
        assert [r["state"] for r in last] == ["serving", "dead"]
        assert url not in requests.get(f"{admin_url(tmp_path)}/list_workers",
                                       timeout=5).json()["urls"]
        assert complete(base, model) == 200  # replica 0 still serves
        assert proc.poll() is None
        done.set()
        watcher.join()
        assert foreign == []
    finally:
        done.set()
        stop(proc)
    said = proc.stderr.read()
    assert said.count("replica 1 restarted and back in rotation") == 3, said
    assert "replica 1 died 4 times; not restarted again" in said, said



def test_prometheus_targets_follow_the_fleet_serving_servers_only(tmp_path):
    """WORKSPACE/prometheus/FLEET.json (Prometheus file_sd) lists each serving server with its
    role and the router's loopback exporter; a dead server leaves the list, and the file goes
    when the fleet stops (nothing dead is scraped)."""
    proc, _model, _base = start_fleet(tmp_path, "--replicas", "2")
    try:
        fleet_id = record(tmp_path)["launch_id"]
        targets = tmp_path / "ws" / "prometheus" / f"{fleet_id}.json"
        urls = [r["url"] for r in record(tmp_path)["roles"]["replicas"]]
        groups = json.loads(targets.read_text())
        servers = [g for g in groups if g["labels"]["pyserve_role"] == "replica"]
        assert sorted(g["targets"][0] for g in servers) == sorted(
            u.removeprefix("http://") for u in urls)
        router = [g for g in groups if g["labels"]["pyserve_role"] == "router"]
        metrics_port = record(tmp_path)["roles"]["router"]["metrics_port"]
        assert [g["targets"] for g in router] == [[f"127.0.0.1:{metrics_port}"]]
        assert router[0]["labels"]["pyserve_scope"] == "local"
        assert all(g["labels"]["__metrics_path__"] == "/metrics" and
                   g["labels"]["pyserve_launch"] == fleet_id for g in groups)
        assert targets.stat().st_mode & 0o777 == 0o644  # for the site's Prometheus user

        kill_server_on(urls[1])

        def one_server_left():
            listed = json.loads(targets.read_text())
            return [g["targets"][0] for g in listed
                    if g["labels"]["pyserve_role"] == "replica"] == [
                urls[0].removeprefix("http://")]

        wait_for(one_server_left, 30, "the dead server to leave the scrape targets")
        stopped = run_pyserve("stop", "--workspace", str(tmp_path / "ws"))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)
    assert not targets.exists()


def test_every_servers_phases_are_said_as_they_happen(tmp_path):
    """#26 item 6: replica 0 starts 4 s late. The launcher waits on it first, and meanwhile says
    replica 1's phases as its log shows them, not all at once after replica 0 is READY."""
    proc, _model, _base = start_fleet(tmp_path, "--replicas", "2",
                                      env={"FAKE_VLLM_START_DELAY": "0:4"})
    stop(proc)
    said = proc.stderr.read().splitlines()
    up = [i for i, line in enumerate(said)
          if line.startswith("[replica 1] [") and line.endswith("API server up")]
    ready = [i for i, line in enumerate(said) if "pyserve: replica 0 READY" in line]
    assert up and ready and up[0] < ready[0], "\n".join(said)
    assert sum(line.startswith("[replica 1] [") and line.endswith("API server up")
               for line in said) == 1  # said once, not again when its own wait begins
