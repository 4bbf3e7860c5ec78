"""The files of one launch in the workspace: rendered node entrypoints, the srun dispatch
script, logs and the launch record (launch.json, and latest.json for the workspace)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyservecli import __version__
from pyservecli.plan.backends import NODE_RANK_PLACEHOLDER, get_backend
from pyservecli.plan.launch import LaunchPlan
from pyservecli.run.render import render, shjoin
from pyservecli.run.runtimes import NodeContainer, forwarded_names, get_runtime

if TYPE_CHECKING:
    from pyservecli.run.container import ContainerSpec
    from pyservecli.run.launcher import LaunchOptions


@dataclass
class JobFiles:
    log_dir: Path
    script_dir: Path
    record: Path
    heartbeat: Path
    node_scripts: list[Path] = field(default_factory=list)
    dispatch: Path | None = None
    containers: list[NodeContainer] = field(default_factory=list)  # --image: one per node

    def log(self, host: str) -> Path:
        return self.log_dir / f"{host}.log"

    def exit_file(self, host: str) -> Path:
        return self.log_dir / f"{host}.exit"


def node_stop_grace(grace: float) -> int:
    """Seconds a node script gives its server to stop before killing it: a little less than
    the launcher gives the node (``grace``), so that a server that hangs in its shutdown (one
    waiting for a dead peer) is killed by the node, which then still reaps its processes and
    removes its socket directory, before the launcher kills the node script itself."""
    return max(1, int(grace - min(10.0, grace / 5)))


def bin_dir() -> str:
    """Where this Python's console scripts live, so `vllm` and `ray` resolve on the nodes."""
    return str(Path(sys.executable).parent)


# The launcher touches its heartbeat file every HEARTBEAT_INTERVAL_S. A node on the launcher's
# own host stops its server when the launcher's PID ends; a node elsewhere when the file has
# not been touched for HEARTBEAT_TIMEOUT_S: long enough that a launcher starved on a loaded
# login node (50 s seen at load 30 on 2 cores) is not taken for a dead one.
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TIMEOUT_S = 120


def _pid_namespace() -> str:
    """This process's PID namespace ("pid:[4026531836]"): a node script sees the launcher's
    PID only from the same one (not from inside a container)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def heartbeat_timeout() -> int:
    """HEARTBEAT_TIMEOUT_S, or PYSERVE_HEARTBEAT_TIMEOUT_S (seconds, at least 5) when set."""
    value = os.environ.get("PYSERVE_HEARTBEAT_TIMEOUT_S", "")
    return max(5, int(value)) if value.isdigit() else HEARTBEAT_TIMEOUT_S


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (0600), atomically: a reader sees the old
    content or the new, never a part."""
    # A name of this writer's own: two launches may share a workspace (latest.json).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def secrets_script(env: dict[str, str]) -> str:
    """Shell lines that export ``env`` (sourced by a node script; values never on argv)."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def write_job_files(plan: LaunchPlan, options: LaunchOptions) -> JobFiles:
    log_dir = options.workspace / "logs" / plan.launch_id
    files = JobFiles(log_dir=log_dir, script_dir=log_dir / "scripts",
                     record=log_dir / "launch.json", heartbeat=log_dir / "launcher.heartbeat")
    files.script_dir.mkdir(parents=True, exist_ok=True)
    write_private(log_dir / "plan.json", plan.to_json() + "\n")
    files.heartbeat.touch()
    api_key_file = str(options.api_key_file.resolve()) if options.api_key_file else None
    spec = options.container
    # Inside a container the image's own Python and PATH serve; on the host, this Python's.
    python = "python3" if spec else sys.executable
    backend = get_backend(plan.topology.backend)
    for node in plan.nodes:
        # The tags last: they are what stop and reap look for (make_plan refuses them in --env).
        env = {**node.env, "PYSERVE_JOB_ID": plan.launch_id, "PYSERVE_NODE_RANK": str(node.rank)}
        if not spec:
            env = {"PATH": f"{bin_dir()}:{os.environ.get('PATH', '')}", **env}
        setup = backend.head_setup(plan.topology, plan.head_ip, plan.ports, python) \
            if node.rank == 0 else []
        secrets_file = None
        if plan.secret_env:
            secrets_file = files.script_dir / f"secrets-{node.rank}.env"
            write_private(secrets_file, secrets_script(
                {k: v.replace(NODE_RANK_PLACEHOLDER, str(node.rank))
                 for k, v in plan.secret_env.items()}))
        script = render(
            "node.sh.j2", job_id=plan.launch_id, rank=node.rank, host=node.host, env=env,
            secrets_file=str(secrets_file) if secrets_file else None,
            heartbeat=str(files.heartbeat), heartbeat_timeout=heartbeat_timeout(),
            launcher_pid=os.getpid(), launcher_host=socket.gethostname(),
            launcher_pidns=_pid_namespace(),
            stop_grace=node_stop_grace(options.stop_grace),
            api_key_file=api_key_file, exit_file=str(files.exit_file(node.host)),
            log_file=str(files.log(node.host)),
            telemetry_file=str(files.log_dir / f"gpu-{node.host}.csv"),
            argv=node.argv, display=shjoin(node.argv), setup=setup, backend=backend.name,
            cache_base=str(options.cache_dir) if options.cache_dir else None,
            cachedir=[python, "-m", "pyservecli.workers.cachedir", str(options.cache_dir)],
            stop_signal=plan.stop_signal,
            reap=[python, "-m", "pyservecli.workers.reap", plan.launch_id, str(node.rank)],
        )
        path = files.script_dir / f"node-{node.rank}.sh"
        path.write_text(script)
        path.chmod(0o700)
        if spec:
            path = write_container_script(plan, options, files, node, path, api_key_file)
        files.node_scripts.append(path)
    if plan.in_slurm:
        entry = files.node_scripts[0].name.rsplit("-", 1)[0]  # "node", or "container"
        files.dispatch = files.script_dir / "dispatch.sh"
        files.dispatch.write_text(render("dispatch.sh.j2", job_id=plan.launch_id,
                                         script_dir=str(files.script_dir),
                                         entry=entry))
    return files


def write_record(plan: LaunchPlan, files: JobFiles, options: LaunchOptions, **state) -> None:
    record = {
        "pyserve_version": __version__,
        "job_id": plan.job_id,
        "launch_id": plan.launch_id,
        "model": plan.model,
        "served_model_name": plan.served_model_name,
        "endpoint": plan.endpoint,
        "log_dir": str(files.log_dir),
        "launcher_pid": os.getpid(),
        "launcher_host": socket.gethostname(),
        "heartbeat": str(files.heartbeat),
        # The GPUs a local launch was given; `pyserve bench` samples power on these only.
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "plan": plan.as_dict(),
        "image": image_record(options.container),
        # A fleet's server: the fleet's record (fleet-ID.json) stands for it in status and stop.
        "fleet_server": not options.workspace_record,
        **state,
    }
    text = json.dumps(record, indent=2) + "\n"
    write_private(files.record, text)
    if options.workspace_record:
        write_private(options.workspace / "latest.json", text)


def image_record(spec: ContainerSpec | None) -> dict | None:
    """What a launch record says of ``--image``, or None."""
    return None if spec is None else {"tag": spec.tag, "tarball": spec.tarball,
                                      "image_file": spec.image_file, "runtime": spec.runtime}


def write_container_script(plan: LaunchPlan, options: LaunchOptions, files: JobFiles, node,
                           node_script: Path, api_key_file: str | None) -> Path:
    """The host-side entrypoint that runs ``node_script`` in the image (``--image``), or the
    node script itself where the srun step is the container (pyxis)."""
    runtime = get_runtime(options.container.runtime)
    container = node_container(plan, options, node, node_script, api_key_file, files)
    files.containers.append(container)
    script = runtime.entry_script(container)
    if script is None:
        return node_script
    path = files.script_dir / f"container-{node.rank}.sh"
    path.write_text(script)
    path.chmod(0o755)
    return path


def node_container(plan: LaunchPlan, options: LaunchOptions, node, node_script: Path,
                   api_key_file: str | None, files: JobFiles) -> NodeContainer:
    return NodeContainer(
        spec=options.container, job_id=plan.launch_id, rank=node.rank, host=node.host,
        workspace=options.workspace, model_dir=plan.model_dir, api_key_file=api_key_file,
        gpus=plan.has_gpus, forwarded=tuple(forwarded_names(dict(os.environ))),
        node_script=str(node_script), log_file=str(files.log(node.host)),
        exit_file=str(files.exit_file(node.host)))
