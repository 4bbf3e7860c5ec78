"""Where we are running: the nodes of the allocation, GPUs per node, the job id.

Reads the environment (a plain mapping, so tests pass their own) and, only as a last resort,
``nvidia-smi -L``. Nothing here starts anything.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping

from pyservecli.errors import PyserveError
from pyservecli.plan.gpus import DEFAULT_GPU, GpuInfo, find_gpu, gpu_of_memory
from pyservecli.plan.hosts import Cluster, check_job_id, expand_hostlist
from pyservecli.plan.topology import check_gpus_per_node


def _count_from_gres(value: str) -> int | None:
    """SLURM_GPUS_PER_NODE / SLURM_GPUS_ON_NODE: '8', 'h100:8', 'gpu:h100:8(x2)'."""
    match = re.match(r"^(?:[A-Za-z0-9_-]+:)*(\d+)(?:\(x\d+\))?$", value.strip())
    return int(match.group(1)) if match else None


def _count_visible_devices(value: str) -> int:
    value = value.strip()
    if not value or value in ("NoDevFiles", "-1"):
        return 0
    return len([v for v in value.split(",") if v.strip()])


def _nvidia_smi_count(run: Callable[..., subprocess.CompletedProcess] | None) -> int | None:
    if run is None:
        if shutil.which("nvidia-smi") is None:
            return None
        run = subprocess.run
    try:
        result = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))


def detect_gpus_per_node(
    env: Mapping[str, str], run: Callable[..., subprocess.CompletedProcess] | None = None
) -> tuple[int | None, str]:
    """GPUs per node, from SLURM_GPUS_ON_NODE, SLURM_GPUS_PER_NODE, CUDA_VISIBLE_DEVICES or
    ``nvidia-smi -L``, in that order. (None, ...) when none of them reports a GPU."""
    for name in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        if env.get(name):
            count = _count_from_gres(env[name])
            if count is None:
                raise PyserveError(f"cannot read a GPU count from {name}={env[name]!r}")
            if count > 0:
                return count, name
    if "CUDA_VISIBLE_DEVICES" in env:
        count = _count_visible_devices(env["CUDA_VISIBLE_DEVICES"])
        return (count or None), "CUDA_VISIBLE_DEVICES"
    count = _nvidia_smi_count(run)
    if count:
        return count, "nvidia-smi -L"
    return None, "no GPU found"


def _nvidia_smi_gpu(run: Callable[..., subprocess.CompletedProcess] | None
                    ) -> tuple[str, float] | None:
    """(name, GiB) of the smallest GPU ``nvidia-smi`` lists here."""
    if run is None:
        if shutil.which("nvidia-smi") is None:
            return None
        run = subprocess.run
    try:
        result = run(["nvidia-smi", "--query-gpu=name,memory.total",
                      "--format=csv,noheader,nounits"], capture_output=True, text=True,
                     timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    found = []
    for line in result.stdout.splitlines():
        name, _, mib = line.rpartition(",")
        try:
            gib = float(mib) / 1024
        except ValueError:
            continue
        if gib >= 1:  # a GPU that reports no memory (a stand-in, a broken driver) says nothing
            found.append((name.strip(), gib))
    return min(found, key=lambda item: item[1]) if found else None


def detect_gpu(env: Mapping[str, str], gpus_per_node: int | None,
               gpu_memory: float | None = None,
               run: Callable[..., subprocess.CompletedProcess] | None = None) -> GpuInfo:
    """The GPU the plan sizes the model for: ``--gpu-memory`` (GiB), else ``nvidia-smi``, else
    the type in SLURM's GPU request (``h100:8``), else, when GPUs were counted or given but
    nothing says how large they are, an 80 GB GPU marked as assumed."""
    local = _nvidia_smi_gpu(run) if gpus_per_node is not None else None
    gres = next((env[k] for k in ("SLURM_GPUS_PER_NODE", "SLURM_GPUS")
                 if env.get(k) and ":" in env[k]), None)
    gres_type = gres.split(":")[-2] if gres and gres.count(":") >= 1 else None
    spec = find_gpu(local[0] if local else gres_type)
    if gpu_memory is not None:
        return GpuInfo(gpu_memory, spec or gpu_of_memory(gpu_memory), "--gpu-memory")
    if gpus_per_node is None:
        return GpuInfo(None, None, "no GPU")
    if local:
        return GpuInfo(local[1], spec, f"nvidia-smi: {local[0]}")
    if spec is not None:
        return GpuInfo(spec.memory_gib, spec, f"SLURM GPU type {gres_type}")
    return GpuInfo(DEFAULT_GPU.memory_gib, None, "assumed: no GPU here tells its size; "
                   "--gpu-memory GiB to say", assumed=True)


def detect(
    env: Mapping[str, str] | None = None,
    nodelist: str | None = None,
    gpus_per_node: int | None = None,
    run: Callable[..., subprocess.CompletedProcess] | None = None,
    gpu_memory: float | None = None,
) -> Cluster:
    """The cluster this launch plans for; ``nodelist`` / ``gpus_per_node`` / ``gpu_memory``
    (GiB per GPU) override detection."""
    env = os.environ if env is None else env
    in_slurm = bool(env.get("SLURM_JOB_ID"))
    if nodelist is not None:  # "" is a mistake, not "this host"
        nodes = tuple(expand_hostlist(nodelist))
    elif in_slurm:
        raw = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not raw:
            raise PyserveError("inside a SLURM job but SLURM_JOB_NODELIST is not set")
        nodes = tuple(expand_hostlist(raw))
        expected = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
        if expected and expected.isdigit() and int(expected) != len(nodes):
            raise PyserveError(
                f"SLURM_JOB_NODELIST names {len(nodes)} nodes but SLURM_JOB_NUM_NODES={expected}"
            )
    else:
        nodes = (socket.gethostname(),)
    if len(set(nodes)) != len(nodes):
        raise PyserveError(f"node list names a host twice: {','.join(nodes)}")
    if gpus_per_node is not None:
        if gpus_per_node < 1:
            raise PyserveError(f"--gpus-per-node must be at least 1, got {gpus_per_node}")
        gpus, source = gpus_per_node, "--gpus-per-node"
    else:
        gpus, source = detect_gpus_per_node(env, run)
    if gpus is not None:
        check_gpus_per_node(gpus, source)
    job_id = check_job_id(env.get("SLURM_JOB_ID")
                          or f"local-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    return Cluster(nodes=nodes, gpus_per_node=gpus, job_id=job_id, in_slurm=in_slurm,
                   gpu_source=source, gpu=detect_gpu(env, gpus, gpu_memory, run))


def interface_holding(address: str, run=subprocess.run) -> str | None:
    """The network interface that holds IPv4 ``address`` (``ip -o -4 addr show``)."""
    try:
        out = run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3].split("/")[0] == address:
            return fields[1]
    return None


def gloo_interface(environ: Mapping[str, str], run=subprocess.run) -> str | None:
    """The interface torch's gloo should bind on this node: the one holding ``VLLM_HOST_IP``
    (gloo otherwise picks whatever the host name resolves to, on many nodes a loopback
    address). None when the user set ``GLOO_SOCKET_IFNAME`` or no address is pinned."""
    if environ.get("GLOO_SOCKET_IFNAME") or not environ.get("VLLM_HOST_IP"):
        return None
    return interface_holding(environ["VLLM_HOST_IP"], run=run)


def resolve_ip(host: str) -> str:
    """The IPv4 address of ``host``; the name itself when it does not resolve here."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host
