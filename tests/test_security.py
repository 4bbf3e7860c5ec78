"""Hostile and careless input, driven through the real CLI, rendered scripts and launcher (with
a stand-in `vllm` that serves the OpenAI API: tests/fake_vllm.py). Each case: a clear error
(one `pyserve: error:` line, exit 2) or the safe behaviour, nothing executed, nothing lost."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from pyservecli.run.render import render

from .conftest import run_pyserve
from .engine import need_module

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def fake_bin(tmp_path) -> Path:
    """A directory whose `vllm` is the stand-in server."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    vllm = bin_dir / "vllm"
    vllm.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_vllm.py'} \"$@\"\n")
    vllm.chmod(0o755)
    return bin_dir


def launcher_argv(bin_dir: Path, *args: str) -> list[str]:
    """`pyserve ARGS` with the engine looked up in ``bin_dir`` instead of this Python's."""
    code = ("import sys; import pyservecli.run.jobfiles as j, pyservecli.run.launcher as l; "
            f"j.bin_dir = l.bin_dir = lambda: {str(bin_dir)!r}; "
            "from pyservecli.cli import main; main(sys.argv[1:], prog_name='pyserve')")
    return [sys.executable, "-c", code, *args]


def free_port() -> int:
    from .engine import free_port as engine_free_port

    return engine_free_port()


def start_launch(tmp_path, workspace, port, *extra, env=None, gpus_per_node=1):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    argv = launcher_argv(fake_bin(tmp_path), "launch", str(model), "--gpus-per-node",
                         str(gpus_per_node), "--port", str(port), "--workspace", str(workspace),
                         *extra)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})},
                            cwd=ROOT)
    return proc


def wait_ready(proc, timeout=60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return line.split()[1].removesuffix("/v1")
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"no READY: {proc.stderr.read()}")


def answers(base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def stop(proc, timeout=60):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tree = subprocess.run(["ps", "-eo", "pid,ppid,sid,stat,wchan:20,args"],
                                  capture_output=True, text=True).stdout
            tree = "\n".join(line for line in tree.splitlines()
                             if "kworker" not in line and " 0 " not in line[:20])
            proc.kill()
            raise AssertionError(f"launcher did not stop: {proc.stderr.read()}\n{tree}") from None


def assert_clean_error(result, message):
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out, out
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("pyserve: error:"), out
    assert message in result.stderr, out


# ---- 1. fail-closed API keys ------------------------------------------------------------------

def test_an_empty_key_file_is_refused_before_anything_starts(tmp_path):
    key = tmp_path / "key"
    key.write_text(" \r\n")
    result = run_pyserve("launch", "Qwen/Qwen3-8B", "--gpus-per-node", "1", "--workspace",
                         str(tmp_path / "ws"), "--api-key-file", str(key))
    assert_clean_error(result, "is empty")
    assert not (tmp_path / "ws" / "logs").exists()
    missing = run_pyserve("launch", "Qwen/Qwen3-8B", "--gpus-per-node", "1", "--workspace",
                          str(tmp_path / "ws"), "--api-key-file", str(tmp_path / "nope"))
    assert_clean_error(missing, "cannot read --api-key-file")


@pytest.mark.parametrize("content", ["two\nlines\n", "has a space\n", "tab\there", "k" * 5000,
                                     "caf\u00e9"])
def test_a_key_that_cannot_be_a_bearer_token_is_refused_by_launch_and_clients(tmp_path,
                                                                              content):
    """A second line, a space, a control character, non-ASCII or a key past 4,096 characters
    would break (or be cut in) the Authorization header: refused by launch before anything
    starts, and by the clients before any request, in one line that never shows the key."""
    key = tmp_path / "key"
    key.write_text(content)
    launch = run_pyserve("launch", "Qwen/Qwen3-8B", "--gpus-per-node", "1", "--workspace",
                         str(tmp_path / "ws"), "--api-key-file", str(key))
    health = run_pyserve("health", "--host", "127.0.0.1", "--port", "1", "--api-key-file",
                         str(key))
    for result in (launch, health):
        assert_clean_error(result, "the key must be one word of printable ASCII characters")
        assert content.strip()[:20] not in result.stderr
    assert not (tmp_path / "ws" / "logs").exists()


def render_node(tmp_path, api_key_file, **extra) -> Path:
    heartbeat = tmp_path / "hb"
    heartbeat.touch()
    context = dict(job_id="j", rank=0, host="h", env={"PATH": f"{fake_bin(tmp_path)}:/usr/bin:/bin",
                   "FAKE_VLLM_ENV": str(tmp_path / "env.json")},
                   api_key_file=api_key_file, exit_file=str(tmp_path / "h.exit"),
                   log_file=str(tmp_path / "h.log"), argv=["vllm", "serve", "m", "--port",
                                                           str(free_port())],
                   display="vllm serve m", setup=[], backend="single",
                   reap=["true"], stop_signal="TERM", secrets_file=None, cache_base=None,
                   heartbeat=str(heartbeat), heartbeat_timeout=45)
    context.update(extra)
    script = tmp_path / "node.sh"
    script.write_text(render("node.sh.j2", **context))
    return script


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_the_node_script_stops_when_the_key_is_missing_or_empty(tmp_path, content):
    key = tmp_path / "key"
    if content is not None:
        key.write_text(content)
    script = render_node(tmp_path, str(key))
    result = subprocess.run(["bash", str(script)], timeout=30)
    assert result.returncode == 1
    log = (tmp_path / "h.log").read_text()
    assert "RuntimeError:" in log and ("empty" in log or "cannot read" in log)
    assert not (tmp_path / "env.json").exists()  # the server never started
    assert (tmp_path / "h.exit").read_text().strip() == "1"


def test_the_node_reads_the_key_as_the_launcher_does(tmp_path):
    key = tmp_path / "key"
    key.write_text("  sk-abc123\r\n")
    script = render_node(tmp_path, str(key))
    proc = subprocess.Popen(["bash", str(script)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "env.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        env = json.loads((tmp_path / "env.json").read_text())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert env["VLLM_API_KEY"] == "sk-abc123"
    assert "sk-abc123" not in script.read_text()


def test_a_wrong_key_is_named_401_unauthorized():
    from pyservecli.run.readiness import probe_ready

    from .standin_openai import MODEL, standin_server

    with standin_server(api_key="sk-right") as base:
        ok, why = probe_ready(base, MODEL, "sk-wrong", timeout=5)
    assert not ok and why == "/v1/models answered 401 Unauthorized"


# ---- 2. nothing a user typed is executed ------------------------------------------------------

@pytest.mark.parametrize("nodelist, message", [
    ("h$(touch {marker})", "is not valid"),
    ("good,h\nx", "is not valid"),
    ("a..b", "is not valid"),
    ("gpu[0-99999999]", "more than 65536 hosts"),
    ("", "names no host"),
])
def test_hostile_node_lists_are_refused(tmp_path, nodelist, message):
    marker = tmp_path / "X"
    result = run_pyserve("launch", "Qwen/Qwen3-8B", "--nodelist", nodelist.format(marker=marker),
                         "--gpus-per-node", "8", "--dry-run", timeout=30)
    assert_clean_error(result, message)
    assert not marker.exists()


def test_rendered_scripts_never_expand_a_value(tmp_path):
    """Values are validated upstream; the templates are safe on their own too."""
    marker = tmp_path / "X"
    hostile = f"h$(touch {marker})`touch {marker}`"
    script = render_node(tmp_path, None, host=hostile, job_id=f"j\n touch {marker}",
                         argv=["true"])
    subprocess.run(["bash", str(script)], timeout=30)
    assert "starting: vllm serve m" in (tmp_path / "h.log").read_text()
    assert not marker.exists()
    from pyservecli.run.jobfiles import write_container_script  # noqa: F401 (import check)

    container = render("container.sh.j2", cli="docker", host_limits=True, job_id="j", rank=0,
                       host=hostile, tag=f"reg/x:1$(touch {marker})", name="c", tarball=None,
                       load=["false"], pull=["false"], options=[], node_script="/n.sh",
                       log_file=str(tmp_path / "c.log"), exit_file=str(tmp_path / "c.exit"))
    (tmp_path / "c.sh").write_text(container)
    env = {"PATH": f"{fake_bin(tmp_path)}:/usr/bin:/bin"}
    (fake_bin(tmp_path) / "docker").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin(tmp_path) / "docker").chmod(0o755)
    subprocess.run(["bash", str(tmp_path / "c.sh")], env=env, timeout=30)
    assert not marker.exists()
    assert "could not pull reg/x:1$(touch" in (tmp_path / "c.log").read_text()


# ---- 3. secrets stay off command lines and out of records -------------------------------------

@pytest.mark.parametrize("flag", ["--api_key", "--api-ke", "--api-key=sk-x1", "--API_KEY"])
def test_secret_flag_spellings_are_refused(tmp_path, flag):
    result = run_pyserve("launch", "Qwen/Qwen3-8B", "--gpus-per-node", "1", "--dry-run", flag,
                         "sk-x1")
    if flag == "--API_KEY":  # vLLM's flags are case-sensitive: not the key flag, passed on
        assert result.returncode == 0
        return
    assert_clean_error(result, "use --api-key-file")
    assert "sk-x1" not in result.stdout + result.stderr


@pytest.mark.parametrize("flag", ["--data_parallel_address", "--data-parallel-addr",
                                  "--master_port", "--head"])
def test_computed_flag_spellings_are_refused(flag):
    result = run_pyserve("launch", "Qwen/Qwen3-8B", "--gpus-per-node", "1", "--dry-run", flag,
                         "1")
    assert_clean_error(result, "is set by pyserve")


def test_secret_env_values_are_redacted_in_the_dry_run():
    result = run_pyserve("launch", "Qwen/Qwen3-8B", "--gpus-per-node", "1", "--dry-run",
                         "--env", "HF_TOKEN=hf_s3cret", "--env", "NCCL_DEBUG=INFO",
                         "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "hf_s3cret" not in result.stdout + result.stderr
    node = json.loads(result.stdout)["nodes"][0]
    assert node["env"] == {"NCCL_DEBUG": "INFO", "HF_TOKEN": "<redacted>"}


def test_secret_env_reaches_the_server_through_a_private_file_only(tmp_path):
    workspace = tmp_path / "ws"
    proc = start_launch(tmp_path, workspace, free_port(), "--env", "HF_TOKEN=hf_s3cret",
                        env={"FAKE_VLLM_ENV": str(tmp_path / "env.json")})
    try:
        wait_ready(proc)
        served_env = json.loads((tmp_path / "env.json").read_text())
    finally:
        stop(proc)
    assert served_env["HF_TOKEN"] == "hf_s3cret"
    [log_dir] = (workspace / "logs").iterdir()
    secrets = list((log_dir / "scripts").glob("secrets-*.env"))
    assert len(secrets) == 1 and stat.S_IMODE(secrets[0].stat().st_mode) == 0o600
    for path in [*log_dir.rglob("*"), workspace / "latest.json"]:
        if path.is_file() and path not in secrets:
            assert "hf_s3cret" not in path.read_text(errors="replace"), path
    for record in (log_dir / "launch.json", log_dir / "plan.json", workspace / "latest.json"):
        assert stat.S_IMODE(record.stat().st_mode) == 0o600, record


# ---- 4-6. launches never touch each other; a killed launcher leaves nothing serving ----------

def test_two_local_launches_in_one_workspace_stop_independently(tmp_path):
    """Two launches side by side on this host, sharing a workspace (no SLURM job: the name
    said "in one allocation", which this test never had; #28)."""
    workspace = tmp_path / "ws"
    env = {"SLURM_JOB_ID": ""}  # both local, same workspace
    first = start_launch(tmp_path, workspace, free_port(), env=env)
    second = start_launch(tmp_path, workspace, free_port(), env=env)
    try:
        base1, base2 = wait_ready(first), wait_ready(second)
        ids = {json.loads(p.read_text())["launch_id"]
               for p in (workspace / "logs").glob("*/launch.json")}
        assert len(ids) == 2  # own log directory, env tag and container name each
        stop(first)
        assert not answers(base1)
        assert answers(base2)
    finally:
        stop(first)
        stop(second)


def test_a_killed_launcher_takes_its_server_down_and_status_says_so(tmp_path):
    workspace = tmp_path / "ws"
    proc = start_launch(tmp_path, workspace, free_port(),
                        env={"PYSERVE_HEARTBEAT_TIMEOUT_S": "5"})
    base = wait_ready(proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and nothing else: nodes run in their own
    proc.wait()                          # session
    status = run_pyserve("status", "--workspace", str(workspace), "--format", "json")
    info = json.loads(status.stdout)
    assert info["state"] == "launcher gone (was ready)" and info["launcher_alive"] is False
    deadline = time.monotonic() + 40
    while answers(base) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not answers(base)
    [log] = (workspace / "logs").glob("*/*.log")
    assert "no word from the launcher" in log.read_text()


def test_pyserve_stop_stops_a_recorded_launch(tmp_path):
    workspace = tmp_path / "ws"
    proc = start_launch(tmp_path, workspace, free_port())
    base = wait_ready(proc)
    try:
        result = run_pyserve("stop", "--workspace", str(workspace))
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "pyserve: stopped"  # not "stopped (stopped)"
        # stop returns once the launcher has exited: status right after says it is gone (#26).
        info = json.loads(run_pyserve("status", "--workspace", str(workspace), "--format",
                                      "json").stdout)
        assert (info["state"], info["launcher_alive"]) == ("stopped", False)
        assert proc.wait(timeout=60) == 0
        assert not answers(base)
        assert json.loads((workspace / "latest.json").read_text())["state"] == "stopped"
        again = run_pyserve("stop", "--workspace", str(workspace))
        assert again.returncode == 0 and "already ended" in again.stdout
    finally:
        stop(proc)


def test_an_ipv6_only_listener_holds_its_port(tmp_path):
    from pyservecli.run.portprobe import is_port_free

    with socket.socket(socket.AF_INET6) as holder:
        holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        holder.bind(("::", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not is_port_free(port)
        result = run_pyserve("launch", "Qwen/Qwen3-8B", "--gpus-per-node", "1", "--port",
                             str(port), "--workspace", str(tmp_path / "ws"))
    assert_clean_error(result, f"port {port} is already in use")


# ---- 8-9. nothing lost -----------------------------------------------------------------------

class FailingClient:
    """Stands in for `vllm bench serve` exiting non-zero (the server died mid-rerun)."""

    def run(self, argv, log_path):
        log_path.write_text("ServerDisconnectedError\n")
        return 1


def test_a_failed_rerun_keeps_the_good_result(tmp_path):
    from pyservecli.bench.runner import ServerInfo, _run_points
    from pyservecli.bench.suites import points_for

    [point] = points_for([], isl=8, osl=4, concurrency=1, num_prompts=2)
    good = {"completed": 2, "output_throughput": 9.0, "pyserve": {"status": "ok"}}
    path = tmp_path / point.suite / point.result_name
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(good))
    [result] = _run_points([point], ServerInfo("http://127.0.0.1:1", "m", None), tmp_path,
                           FailingClient(), {}, None, None, False, False, lambda _m: None)
    assert result.status == "failed" and "kept the earlier result" in result.note
    assert json.loads(path.read_text()) == good
    assert (path.parent / f"{point.name}.failed.json").is_file()
    # The same with --repeats: every repeat failed, the good median file stays.
    [result] = _run_points([point], ServerInfo("http://127.0.0.1:1", "m", None), tmp_path,
                           FailingClient(), {}, None, None, False, False, lambda _m: None,
                           repeats=3)
    assert result.status == "failed" and "kept the earlier result" in result.note
    assert json.loads(path.read_text()) == good
    failed = json.loads((path.parent / f"{point.name}.failed.json").read_text())
    assert failed["pyserve"]["repeats"]["n"] == 3 and failed["pyserve"]["repeats"]["ok"] == 0


def test_model_create_force_replaces_only_its_own_directories(tmp_path):
    need_module("tokenizers", "vLLM's dependency, `make setup`")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    result = run_pyserve("model", "create", "qwen3-tiny", str(foreign), "--force")
    assert_clean_error(result, "was not made by pyserve")
    assert (foreign / "thesis.tex").read_text() == "years of work"
    ours = tmp_path / "ours"
    assert run_pyserve("model", "create", "qwen3-tiny", str(ours)).returncode == 0
    (ours / "stale").write_text("x")
    assert run_pyserve("model", "create", "qwen3-tiny", str(ours), "--force").returncode == 0
    assert not (ours / "stale").exists() and (ours / "config.json").is_file()


# ---- 10. one error line, never a traceback ---------------------------------------------------

def bad_inputs(tmp: Path):
    (tmp / "corrupt.json").write_text("{not json")
    (tmp / "empty.json").write_text("")
    (tmp / "list.json").write_text("[]")
    (tmp / "readonly").mkdir(mode=0o500)
    (tmp / "cfg-list").mkdir()
    (tmp / "cfg-list" / "config.json").write_text("[1, 2]")
    (tmp / "cfg-str").mkdir()
    (tmp / "cfg-str" / "config.json").write_text('{"num_attention_heads": "32"}')
    (tmp / "dur.json").write_text(json.dumps({"traceEvents": [
        {"ph": "X", "name": "a", "dur": "x"}, {"ph": "X", "name": "b", "dur": 5}]}))
    ws = str(tmp / "ws")
    for name in ("corrupt", "empty", "list"):
        status_ws = tmp / f"ws-{name}"
        status_ws.mkdir()
        (status_ws / "latest.json").write_text((tmp / f"{name}.json").read_text())
    return [
        (["launch", "m", "--gpus-per-node", "1", "--then", "no-such-command-xyz",
          "--workspace", ws], "command 'no-such-command-xyz' not found"),
        (["launch", "m", "--gpus-per-node", "1", "--workspace", str(tmp / "readonly" / "ws")],
         "--workspace"),
        (["status", "--workspace", str(tmp / "ws-corrupt")], "is not a launch record"),
        (["status", "--workspace", str(tmp / "ws-empty")], "is not a launch record"),
        (["status", "--workspace", str(tmp / "ws-list")], "is not a launch record"),
        (["launch", str(tmp / "cfg-list"), "--gpus-per-node", "1", "--dry-run"],
         "is not a model config"),
        (["launch", str(tmp / "cfg-str"), "--gpus-per-node", "1", "--dry-run"],
         "must be a whole number"),
        (["launch", "m", "--tp", "0", "--gpus-per-node", "8", "--dry-run"], "at least 1, got 0"),
        (["launch", "m", "--pp", "0", "--gpus-per-node", "8", "--dry-run"], "at least 1, got 0"),
        (["launch", "m", "--gpus-per-node", "1", "--dry-run", "--env", "NAMÉ=1"],
         "not a valid environment variable name"),
        (["bench", "--host", "127.0.0.1", "--port", "1", "--type", ""], "unknown benchmark"),
        (["trace", "summarize", "/dev/zero"], "is not a regular file"),
        (["plot", str(tmp / "ws-corrupt")], "no valid results"),
    ]


def test_bad_input_gets_one_error_line_never_a_traceback(tmp_path):
    if os.geteuid() == 0:
        os.chmod(tmp_path, 0o755)  # root ignores the read-only directory; see below
    for args, message in bad_inputs(tmp_path):
        if os.geteuid() == 0 and "readonly" in " ".join(args):
            continue  # root may write anywhere: covered by the non-root CI of users
        result = run_pyserve(*args, timeout=60)
        assert_clean_error(result, message)


def test_a_non_numeric_duration_is_skipped_in_a_trace(tmp_path):
    bad_inputs(tmp_path)
    result = run_pyserve("trace", "summarize", str(tmp_path / "dur.json"), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert [op["name"] for op in json.loads(result.stdout)[0]["top"]] == ["b"]


def test_server_answers_that_are_not_the_api_are_clear_errors(tmp_path):
    """/v1/models answering something else, and rich markup in a failing check's detail."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Odd(BaseHTTPRequestHandler):
        status = 200

        def log_message(self, *_a):
            pass

        def do_GET(self):
            body = b"[/bold] not json"
            self.send_response(self.status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = str(server.server_address[1])
    try:
        bench = run_pyserve("bench", "--host", "127.0.0.1", "--port", port, "--isl", "8",
                            "--osl", "4", "--workspace", str(tmp_path / "ws"))
        Odd.status = 500  # the check's detail now quotes the body: markup must show as text
        health = run_pyserve("health", "--host", "127.0.0.1", "--port", port,
                             env={**os.environ, "COLUMNS": "200"})
    finally:
        server.shutdown()
    assert_clean_error(bench, "did not answer an OpenAI model list")
    assert health.returncode == 1 and "Traceback" not in health.stdout + health.stderr
    assert "answered 500: [/bold] not json" in health.stdout


def test_a_node_whose_launcher_is_lost_during_setup_starts_no_server(tmp_path):
    """The launcher died while the head was still in its backend set-up (Ray's): the node
    notices the stale heartbeat and never starts its server."""
    from pyservecli.plan.backends import SetupStep

    script = render_node(tmp_path, None, setup=[SetupStep(["sleep", "3"])], heartbeat_timeout=5)
    os.utime(tmp_path / "hb", (0, 0))  # no word from the launcher since 1970
    result = subprocess.run(["bash", str(script)], timeout=60)
    log = (tmp_path / "h.log").read_text()
    assert result.returncode == 143, log
    assert "no word from the launcher" in log and "stopped before its server started" in log
    assert not (tmp_path / "env.json").exists()  # the stand-in vllm never ran
