"""pyserve's own cost as the node count grows (#27): on the namespace SLURM test cluster
(tests/cluster, one slurmd per network namespace) with the stand-in server (tests/fake_vllm.py:
READY at once, the real HTTP API), so that what is measured is pyserve's work, not vLLM's.

    sudo .venv/bin/python scripts/scale_bench.py [--nodes 2,4,8,16,32] [--modes dp,pp,replicas]
                                                 [--out docs/results/DATE-scale]

For each node count N: tests/cluster/up.sh with PYSERVE_CLUSTER_NODES=N (one "GPU" per node),
then for each mode, `salloc -N N pyserve launch` of a config-only model (Qwen3-8B's shape):

- ``dp``: ``--dp N`` (one server, a DP rank per node: head + N-1 headless nodes, mp backend);
- ``pp``: ``--pp N`` (mp backend, one pipeline stage per node);
- ``replicas``: ``--replicas N`` (N servers behind vllm-router on this host).

Measured per launch: seconds from `salloc` to READY, minus the stand-in's own start (measured
once here); launcher CPU seconds at READY; files pyserve wrote per node; seconds from
`pyserve stop` to the launcher's exit; then, in a second launch, seconds from killing the
stand-in on the last node to the launcher ending (a launch fails when a rank dies; a fleet
without --restart takes the replica out and serves on, so for it: seconds until the record says
dead). Writes RESULTS/scale.json and prints a table. Not a test: figures, for docs/benchmarks.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "tests" / "cluster"
FAKE = ROOT / "tests" / "fake_vllm.py"
STATE = "/run/pyserve-cluster"


def sh(*argv: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done


def fake_bin(work: Path) -> Path:
    bin_dir = work / "fakebin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    vllm = bin_dir / "vllm"
    vllm.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    vllm.chmod(0o755)
    router = Path(sys.executable).parent / "vllm-router"
    if router.exists() and not (bin_dir / "vllm-router").exists():
        (bin_dir / "vllm-router").symlink_to(router)
    return bin_dir


def launcher(bin_dir: Path, *args: str) -> list[str]:
    """`pyserve ARGS` whose nodes find the stand-in `vllm` first on their PATH."""
    code = ("import sys; import pyservecli.run.jobfiles as j, pyservecli.run.launcher as l; "
            f"j.bin_dir = l.bin_dir = lambda: {str(bin_dir)!r}; "
            "from pyservecli.cli import main; main(sys.argv[1:], prog_name='pyserve')")
    return [sys.executable, "-c", code, *args]


def stand_in_start_s(work: Path) -> float:
    """Seconds the stand-in takes from exec to its startup line (subtracted from READY)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(FAKE), "serve", "m", "--port", "18999"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if "startup complete" in line:
            break
    took = time.monotonic() - started
    proc.terminate()
    proc.wait()
    return took


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / ticks


def launcher_pid(salloc: int, timeout: float = 30) -> int | None:
    """The pyserve process salloc started (its child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{salloc}/task/{salloc}/children").read_text().split()
        except OSError:
            return None
        if children:
            return int(children[0])
        time.sleep(0.05)
    return None


def mode_args(mode: str, nodes: int) -> list[str]:
    return {"dp": ["--dp", str(nodes)], "pp": ["--tp", "1", "--pp", str(nodes)],
            "replicas": ["--replicas", str(nodes)]}[mode]


def start(env: dict, bin_dir: Path, model: Path, ws: Path, mode: str, nodes: int, port: int):
    argv = ["salloc", "-N", str(nodes), "--gpus-per-node=1", "--job-name=pyserve-scale",
            *launcher(bin_dir, "launch", str(model), *mode_args(mode, nodes), "--workspace",
                      str(ws), "--port", str(port), "--ready-timeout", "600",
                      "--gpu-memory", "80")]
    log = open(ws.parent / f"{ws.name}.stderr", "w")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)
    return proc, log


def wait_ready(proc, timeout: float = 600) -> float:
    started = time.monotonic()
    for line in proc.stdout:
        if line.startswith("READY "):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            break
    raise RuntimeError("no READY")


def record(ws: Path) -> dict:
    try:
        return json.loads((ws / "latest.json").read_text())
    except (OSError, ValueError):
        return {}


def last_node_server(ws: Path, nodes: int) -> list[int]:
    """PIDs of stand-in servers of the launch in ``ws`` on its last node (by the tags the node
    scripts give their processes)."""
    rec = record(ws)
    ids = {rec.get("launch_id")} | {r.get("launch_id") for r in
                                    (rec.get("roles") or {}).get("replicas", [])}
    rank = str(nodes - 1)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            if b"fake_vllm.py" not in cmd:
                continue
            env = dict(kv.split("=", 1) for kv in Path(f"/proc/{entry}/environ").read_text(
                errors="replace").split("\0") if "=" in kv)
        except OSError:
            continue
        if rec.get("roles"):  # a fleet: the last replica's server
            last = rec["roles"]["replicas"][-1]["launch_id"]
            if env.get("PYSERVE_JOB_ID") == last:
                found.append(int(entry))
        elif env.get("PYSERVE_JOB_ID") in ids and env.get("PYSERVE_NODE_RANK") == rank:
            found.append(int(entry))
    return found


def measure(env, bin_dir, model, work: Path, mode: str, nodes: int, own_start: float) -> dict:
    row: dict = {"nodes": nodes, "mode": mode}
    ws = work / f"{mode}-{nodes}"
    proc, log = start(env, bin_dir, model, ws, mode, nodes, 18100)
    try:
        pid = launcher_pid(proc.pid)
        ready = wait_ready(proc)
        row["ready_s"] = round(ready, 2)
        row["overhead_s"] = round(ready - own_start, 2)
        row["launcher_cpu_s"] = round(cpu_seconds(pid), 2) if pid else None
        # The launch's own files (scripts, logs, records, heartbeats), not the shared caches.
        files = sum(len(f) for _, _, f in os.walk(ws / "logs"))
        row["files_per_node"] = round(files / nodes, 1)
        stop_at = time.monotonic()
        sh(*launcher(bin_dir, "stop", "--workspace", str(ws)), env=env, check=False)
        proc.wait(timeout=300)
        row["stop_s"] = round(time.monotonic() - stop_at, 2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
        log.close()
    ws2 = work / f"{mode}-{nodes}-kill"
    proc, log = start(env, bin_dir, model, ws2, mode, nodes, 18100)
    try:
        wait_ready(proc)
        victims = last_node_server(ws2, nodes)
        if not victims:
            row["death_s"] = None
        else:
            killed = time.monotonic()
            for victim in victims:
                os.kill(victim, signal.SIGKILL)
            deadline = killed + 120
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                rec = record(ws2)
                if mode == "replicas" and rec.get("roles") and \
                        rec["roles"]["replicas"][-1].get("state") == "dead":
                    break
                time.sleep(0.1)
            row["death_s"] = round(time.monotonic() - killed, 2)
    finally:
        if proc.poll() is None:
            sh(*launcher(bin_dir, "stop", "--workspace", str(ws2)), env=env, check=False)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="2,4,8,16,32")
    parser.add_argument("--modes", default="dp,pp,replicas")
    parser.add_argument("--out", type=Path, default=Path("/tmp/pyserve-scale"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/pyserve-scale-work"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("scale_bench: needs root (network namespaces, slurmd)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from pyservecli.models.dummy import create_model_dir

    # Qwen3-8B's shape: 36 layers, so PP N up to 32 is a valid plan; one 80 GB GPU holds it.
    model = args.work / "qwen3-8b"
    if not model.exists():
        create_model_dir("qwen3-8b", model)
    bin_dir = fake_bin(args.work)
    own_start = stand_in_start_s(args.work)
    rows = []
    for nodes in [int(n) for n in args.nodes.split(",")]:
        sh("bash", str(CLUSTER / "down.sh"), check=False)
        up_env = {**os.environ, "PYSERVE_CLUSTER_NODES": str(nodes)}
        up = sh("bash", str(CLUSTER / "up.sh"), env=up_env)
        conf = next(w.split("=", 1)[1] for w in up.stdout.split() if w.startswith("SLURM_CONF="))
        env = {**os.environ, "SLURM_CONF": conf, "PYTHONUNBUFFERED": "1",
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for mode in args.modes.split(","):
            row = measure(env, bin_dir, model, args.work, mode, nodes, own_start)
            rows.append(row)
            print(json.dumps(row), flush=True)
    sh("bash", str(CLUSTER / "down.sh"), check=False)
    (args.out / "scale.json").write_text(json.dumps(
        {"stand_in_start_s": round(own_start, 3), "rows": rows}, indent=2) + "\n")
    print(f"{'nodes':>5} {'mode':9} {'READY s':>8} {'overhead':>8} {'CPU s':>6} "
          f"{'files/node':>10} {'stop s':>7} {'death s':>7}")
    for r in rows:
        print(f"{r['nodes']:>5} {r['mode']:9} {r['ready_s']:>8} {r['overhead_s']:>8} "
              f"{r['launcher_cpu_s']!s:>6} {r['files_per_node']:>10} {r['stop_s']:>7} "
              f"{r['death_s']!s:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
