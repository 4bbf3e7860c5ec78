"""Fleets tried as a hostile user and off the happy path: the router's management API, keys in
every router mode, faults during a stop, ports of launches side by side. The real launcher and
vllm-router in front of stand-in servers (tests/fake_vllm.py), so each runs in seconds; the
CPU-engine versions of keyed P/D and two keyed models are in tests/test_engine_fleet.py."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from .engine import must_have, processes_mentioning
from .test_fleet_restart import admin_url, complete, kill_server_on, record, wait_for
from .test_security import ROOT, fake_bin, free_port, launcher_argv, stop, wait_ready

pytestmark = pytest.mark.engine  # vllm-router comes with the engine extra
KEY = "s3cret-key-for-tests"


class HeaderLog:
    """A listener that records every request's path and Authorization header: what an attacker
    who got a worker registered would see."""

    def __init__(self):
        self.seen: list[tuple[str, str | None]] = []
        log = self.seen

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a):
                pass

            def _answer(self):
                log.append((self.path, self.headers.get("Authorization")))
                body = json.dumps({"object": "list", "data": [{"id": "evil"}],
                                   "choices": [{"text": "forged", "index": 0}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def models(tmp_path, *names) -> list[Path]:
    dirs = []
    for name in names:
        model = tmp_path / name
        model.mkdir(exist_ok=True)
        (model / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
        dirs.append(model)
    return dirs


def launch(tmp_path, *args, gpus_per_node=2, env=None, port=None):
    """``pyserve launch ARGS`` with the stand-in engine and the real router; (process, base)."""
    router = Path(sys.executable).parent / "vllm-router"
    if not router.exists():
        if must_have():
            raise AssertionError("vllm-router is not installed (make setup installs it)")
        pytest.skip("vllm-router not installed (make setup)")
    link = fake_bin(tmp_path) / "vllm-router"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(router)
    port = port or free_port()
    argv = launcher_argv(fake_bin(tmp_path), "launch", *args, "--gpus-per-node",
                         str(gpus_per_node), "--port", str(port), "--workspace",
                         str(tmp_path / "ws"))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    return proc, f"http://127.0.0.1:{port}"


def key_file(tmp_path) -> Path:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


def keyed(key=KEY) -> dict:
    return {"Authorization": f"Bearer {key}"} if key is not None else {}


def post(base, path, model, key=KEY):
    try:
        return requests.post(f"{base}{path}", headers=keyed(key), timeout=30, json={
            "model": model, "prompt": "hello", "max_tokens": 2})
    except requests.RequestException as exc:
        raise AssertionError(f"{path}: {exc}") from None


def listeners_of(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP listener owned by ``pid`` or a process it started."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        owners = [int(pid) for pid in re.findall(r"pid=(\d+)", line)]
        if any(pid in ancestors(owner) for owner in owners):
            address, _, port = fields[3].rpartition(":")
            found.add((address.strip("[]"), int(port)))
    return found


def ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return seen


ADMIN_ATTACKS = [
    ("POST", "/add_worker?url={evil}", None),
    ("POST", "/workers", {"url": "{evil}"}),
    ("POST", "/remove_worker?url={victim}", None),
    ("DELETE", "/workers/{victim_quoted}", None),
    ("GET", "/list_workers", None),
    ("GET", "/workers", None),
    ("POST", "/flush_cache", None),
    ("GET", "/get_loads", None),
    ("POST", "/v1/../add_worker?url={evil}", None),
    ("POST", "/%61dd_worker?url={evil}", None),
    ("POST", "//add_worker?url={evil}", None),
]


def attack(base, evil, victim):
    """Every management route through the public port, with and without the key; the
    answers' status codes."""
    from urllib.parse import quote

    codes = []
    for method, path, body in ADMIN_ATTACKS:
        path = path.format(evil=evil, victim=victim, victim_quoted=quote(victim, safe=""))
        if body:
            body = {k: v.format(evil=evil) for k, v in body.items()}
        for key in (None, KEY):
            # A raw socket: requests would normalise the dot segments away before sending.
            codes.append((method, path, raw_status(base, method, path, body, key)))
    return codes


def raw_status(base, method, path, body, key) -> int:
    host, port = base.removeprefix("http://").split(":")
    data = json.dumps(body).encode() if body else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close",
            f"Content-Length: {len(data)}", "Content-Type: application/json"]
    if key:
        head.append(f"Authorization: Bearer {key}")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        reply = sock.recv(4096).decode(errors="replace")
    return int(reply.split()[1])


@pytest.mark.parametrize("mode", ["replicas", "models", "pd"])
def test_no_client_reaches_the_routers_management_api_or_the_key(tmp_path, mode):
    """Item 1 of #23 in every router mode: the management routes are not served on the public
    port (a key-less client added a worker and received the key); requests without the key are
    refused, with it served; the router's admin and metrics ports listen on loopback only,
    the servers too (one host), and the attacker's listener never hears from the fleet."""
    evil = HeaderLog()
    a, b = models(tmp_path, "a", "b")
    args = {"replicas": [str(a), "--replicas", "2"],
            "models": ["--serve", str(a), "--serve", str(b)],
            "pd": [str(a), "--prefill", "1", "--decode", "1"]}[mode]
    proc, base = launch(tmp_path, *args, "--api-key-file", str(key_file(tmp_path)))
    try:
        wait_ready(proc)
        info = record(tmp_path)
        victim = info["roles"]["replicas"][0]["url"]
        codes = attack(base, evil.url, victim)
        assert all(code == 404 for *_, code in codes), codes
        served = [r["model"] for r in info["roles"]["replicas"]]
        for model in dict.fromkeys(served):
            assert post(base, "/v1/completions", model, key=None).status_code == 401
            assert post(base, "/v1/completions", model, key="wrong").status_code == 401
            answer = post(base, "/v1/completions", model)
            assert answer.status_code == 200 and answer.json()["model"] == model, answer.text
        assert requests.get(f"{base}/v1/models", timeout=10).status_code == 401
        assert requests.get(f"{base}/health", timeout=10).status_code == 200
        # The router still lists exactly the fleet's servers.
        listed = requests.get(f"{admin_url(tmp_path)}/workers", timeout=5).json()["workers"]
        assert sorted(w["url"] for w in listed) == sorted(r["url"] for r in
                                                           info["roles"]["replicas"])
        router = info["roles"]["router"]
        sockets = listeners_of(proc.pid)
        assert ("0.0.0.0", router["port"]) in sockets, sockets
        for address, port in sockets:
            if port != router["port"]:
                assert address == "127.0.0.1", (address, port, sockets)
        assert {router["admin_port"], router["metrics_port"]} <= {p for _, p in sockets}
    finally:
        stop(proc)
        evil.close()
    assert evil.seen == []
    said = proc.stderr.read()
    assert KEY not in said and KEY not in json.dumps(record(tmp_path))
    for log in (tmp_path / "ws" / "logs").rglob("*.log"):
        assert KEY not in log.read_text(errors="replace"), log


def test_keyed_pd_is_ready_and_every_request_carries_the_key(tmp_path):
    """Item 3: P/D with --api-key-file never became READY (the router sent an empty key)."""
    a, = models(tmp_path, "a")
    proc, base = launch(tmp_path, str(a), "--prefill", "1", "--decode", "1", "--api-key-file",
                        str(key_file(tmp_path)), "--ready-timeout", "60")
    try:
        wait_ready(proc)
        assert post(base, "/v1/completions", str(a)).status_code == 200
        assert post(base, "/v1/chat/completions", str(a), key=None).status_code == 401
    finally:
        stop(proc)


def test_two_keyed_models_are_each_routed_by_name(tmp_path):
    """Item 4: with a key the router's discovery got 401 and filed both servers under
    "unknown"; requests were round-robined regardless of model."""
    a, b = models(tmp_path, "a", "b")
    proc, base = launch(tmp_path, "--serve", str(a), "--serve", str(b), "--api-key-file",
                        str(key_file(tmp_path)))
    try:
        wait_ready(proc)
        listed = requests.get(f"{base}/v1/models", headers=keyed(), timeout=10).json()
        assert sorted(listed["models"]) == sorted([str(a), str(b)]), listed
        for _ in range(3):
            for model in (str(a), str(b)):
                answer = post(base, "/v1/completions", model)
                assert answer.status_code == 200 and answer.json()["model"] == model
        from .conftest import run_pyserve

        status = run_pyserve("status", "--workspace", str(tmp_path / "ws")).stdout
        assert f"models             {a}, {b}" in status, status
        assert f"replica 0 of {a}" in status and f"replica 0 of {b}" in status, status
    finally:
        stop(proc)


def test_env_cannot_set_the_names_pyserve_owns(tmp_path):
    """Item 2: --env PYSERVE_JOB_ID=<another launch> made stopping one launch kill the other's
    server."""
    from .conftest import run_pyserve

    a, = models(tmp_path, "a")
    for pair, words in (("PYSERVE_JOB_ID=123-abc", "pyserve sets PYSERVE_* names itself"),
                        ("PYSERVE_NODE_RANK=0", "pyserve sets PYSERVE_* names itself"),
                        ("VLLM_API_KEY=x", "--api-key-file")):
        result = run_pyserve("launch", str(a), "--env", pair, "--dry-run", "--nodelist", "h",
                             "--gpus-per-node", "1")
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_stop_stops_a_fleet_after_a_replica_died(tmp_path):
    """Item 5: the record then said "serving", which stop did not count as live."""
    a, = models(tmp_path, "a")
    proc, base = launch(tmp_path, str(a), "--replicas", "2")
    try:
        wait_ready(proc)
        kill_server_on(record(tmp_path)["roles"]["replicas"][1]["url"])
        wait_for(lambda: record(tmp_path)["roles"]["replicas"][1]["state"] == "dead", 30,
                 "replica 1 dead")
        assert record(tmp_path)["state"] == "ready"
        assert complete(base, str(a)) == 200
        from .conftest import run_pyserve

        status = run_pyserve("status", "--workspace", str(tmp_path / "ws"))
        assert "launcher_alive     True" in status.stdout, status.stdout
        result = run_pyserve("stop", "--workspace", str(tmp_path / "ws"))
        assert result.returncode == 0 and "stopped" in result.stdout + result.stderr, result
        proc.wait(timeout=60)
    finally:
        stop(proc)
    assert record(tmp_path)["state"] == "stopped"
    assert processes_mentioning(str(tmp_path / "fakebin")) == []


def test_a_signal_during_a_failed_fleets_cleanup_does_not_abandon_it(tmp_path):
    """Item 7: SIGTERM while a fleet that failed was stopping its servers gave "unexpected
    StopRequested" and left servers running with the record at "starting"."""
    a, = models(tmp_path, "a")
    # A router that cannot start: the fleet fails once its servers are READY; each server then
    # takes 4 s to stop, and the launcher is signalled meanwhile.
    router = fake_bin(tmp_path) / "vllm-router"
    router.write_text("#!/bin/sh\necho 'router: cannot start' >&2\nexit 3\n")
    router.chmod(0o755)
    proc, base = launch(tmp_path, str(a), "--replicas", "2",
                        env={"FAKE_VLLM_TERM_DELAY": "4",
                             "FAKE_VLLM_TERM_LOG": str(tmp_path / "terms")})
    try:
        wait_for(lambda: (tmp_path / "terms").exists(), 60, "the cleanup to start")
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGTERM):
            os.kill(proc.pid, sig)
            time.sleep(0.3)
        proc.wait(timeout=60)
    finally:
        stop(proc)
    said = proc.stderr.read()
    assert proc.returncode == 2 and "pyserve: error:" in said, said
    assert "StopRequested" not in said and "Traceback" not in said, said
    assert record(tmp_path)["state"] == "failed"
    assert processes_mentioning(str(tmp_path / "fakebin")) == []


def test_a_fleet_stops_its_servers_at_once(tmp_path):
    """Item 11: servers were stopped one after another, each with its own grace."""
    a, = models(tmp_path, "a")
    terms = tmp_path / "terms"
    proc, base = launch(tmp_path, str(a), "--replicas", "3", gpus_per_node=3,
                        env={"FAKE_VLLM_TERM_DELAY": "3", "FAKE_VLLM_TERM_LOG": str(terms)})
    try:
        wait_ready(proc)
    finally:
        stop(proc)
    times = sorted(float(line.split()[1]) for line in terms.read_text().splitlines())
    assert len(times) == 3 and times[-1] - times[0] < 3, times  # each well inside another's


def test_the_router_is_restarted_with_restart_and_ends_the_fleet_without(tmp_path):
    """Item 8: killing the router stopped every healthy replica, even with --restart."""
    a, = models(tmp_path, "a")
    proc, base = launch(tmp_path, str(a), "--replicas", "2", "--restart")
    try:
        wait_ready(proc)
        os.kill(record(tmp_path)["roles"]["router"]["pid"], signal.SIGKILL)
        wait_for(lambda: record(tmp_path)["roles"]["router"].get("deaths") == 1, 60,
                 "the router's restart")
        wait_for(lambda: complete(base, str(a)) == 200, 60, "a completion after the restart")
        assert proc.poll() is None
    finally:
        stop(proc)
    assert "restarting the router" in proc.stderr.read()

    proc, base = launch(tmp_path, str(a), "--replicas", "2")
    wait_ready(proc)
    os.kill(record(tmp_path)["roles"]["router"]["pid"], signal.SIGKILL)
    proc.wait(timeout=60)
    said = proc.stderr.read()
    assert proc.returncode == 1 and "the router (status" in said, said
    assert processes_mentioning(str(tmp_path / "fakebin")) == []


def test_stop_names_a_live_fleet_when_the_latest_launch_failed(tmp_path):
    """Item 10: a second fleet that failed in the same workspace made `pyserve stop` answer
    "already ended (failed)" while the first kept serving."""
    from .conftest import run_pyserve

    a, = models(tmp_path, "a")
    proc, base = launch(tmp_path, str(a), "--replicas", "2")
    try:
        wait_ready(proc)
        first = record(tmp_path)
        # A second fleet on the first one's port fails before it starts anything...
        second, _ = launch(tmp_path, str(a), "--replicas", "2",
                           port=int(base.rsplit(":", 1)[1]))
        second.wait(timeout=60)
        assert second.returncode == 2
        # ... and one that failed later left latest.json: as a later failure would.
        latest = tmp_path / "ws" / "latest.json"
        latest.write_text(json.dumps({**first, "launch_id": "999-failed", "state": "failed"}))
        result = run_pyserve("stop", "--workspace", str(tmp_path / "ws"))
        assert result.returncode == 2 and first["launch_id"] in result.stderr, result.stderr
        for server in first["roles"]["replicas"]:  # the fleet stands for its servers
            assert server["launch_id"] not in result.stderr, result.stderr
        found = run_pyserve("status", first["job_id"], "--workspace", str(tmp_path / "ws"))
        assert first["launch_id"] in found.stdout, found.stdout + found.stderr
        result = run_pyserve("stop", first["launch_id"], "--workspace", str(tmp_path / "ws"))
        assert result.returncode == 0, result.stderr
        proc.wait(timeout=60)
    finally:
        stop(proc)


def test_a_late_heartbeat_does_not_stop_a_node_whose_launcher_lives(tmp_path):
    """Item 6: a READY 1P1D fleet stopped itself under load (the decode node saw no heartbeat
    for 50 s while its launcher, starved, still ran). On the launcher's host the node asks the
    launcher's PID; a gone PID stops it at once."""
    from .test_security import render_node

    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        script = render_node(tmp_path, None, heartbeat_timeout=5, launcher_pid=sleeper.pid,
                             launcher_host=socket.gethostname(),
                             launcher_pidns=os.readlink("/proc/self/ns/pid"))
        os.utime(tmp_path / "hb", (time.time() - 600, time.time() - 600))
        node = subprocess.Popen(["bash", str(script)], start_new_session=True)
        try:
            time.sleep(8)  # past the timeout: the node serves on
            assert node.poll() is None, (tmp_path / "h.log").read_text()
            assert "serving on" in (tmp_path / "h.log").read_text()
            sleeper.kill()
            node.wait(timeout=30)
        finally:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    finally:
        sleeper.kill()
    log = (tmp_path / "h.log").read_text()
    assert f"PID {sleeper.pid}" in log and "has ended" in log, log


def test_a_node_in_another_pid_namespace_goes_by_the_heartbeat(tmp_path):
    """A node script inside a container (--image; host network, so the host's name, but a PID
    namespace of its own) cannot see the launcher's PID: it must go by the heartbeat, not take
    the launcher for gone."""
    from .test_security import render_node

    script = render_node(tmp_path, None, heartbeat_timeout=5, launcher_pid=2 ** 22 - 1,
                         launcher_host=socket.gethostname(), launcher_pidns="pid:[1]")
    node = subprocess.Popen(["bash", str(script)], start_new_session=True)
    try:
        for _ in range(16):  # 8 s, past the watcher's first looks: the launcher beats
            os.utime(tmp_path / "hb")
            time.sleep(0.5)
        assert node.poll() is None, (tmp_path / "h.log").read_text()
        os.utime(tmp_path / "hb", (time.time() - 600, time.time() - 600))
        node.wait(timeout=30)
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
    log = (tmp_path / "h.log").read_text()
    assert "no word from the launcher (on" in log and "has ended" not in log, log
