"""Turn a launch request into a complete plan: topology, head endpoint and per-node commands.

``make_plan`` does every check that can be done before anything starts; ``--dry-run`` prints its
result and the launcher executes it. The JSON shape is a contract other tools rely on:

    {"topology": {"nodes", "gpus_per_node", "tp", "pp", "dp", "dp_local", "ep", "backend"},
     "head": {"host", "ip", "port"},
     "nodes": [{"host", "rank", "argv": [...], "env": {...}}]}
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import cluster as cluster_mod
from .backends import NodeCommand, node_commands
from .errors import PyserveError
from .modelconfig import check_model_fits, load_config, resolve_model_dir
from .ports import Ports, allocate
from .topology import plan_topology
from .vllm_args import merge_setting, option_value, split_parallel_flags


@dataclass
class LaunchRequest:
    model: str
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: bool | None = None
    backend: str | None = None
    port: int = 8000
    nodelist: str | None = None
    gpus_per_node: int | None = None
    vllm_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    nsys_dir: Path | None = None  # wrap each node's vllm serve in `nsys profile`, reports here


@dataclass
class LaunchPlan:
    topology: object
    head_host: str
    head_ip: str
    ports: Ports
    nodes: list[NodeCommand]
    job_id: str
    in_slurm: bool
    model: str
    served_model_name: str
    model_dir: Path | None
    gpu_source: str
    stop_signal: str = "TERM"  # what a node entrypoint sends its server to stop it

    def as_dict(self) -> dict:
        return {
            "topology": self.topology.as_dict(),
            "head": {"host": self.head_host, "ip": self.head_ip, "port": self.ports.api},
            "nodes": [
                {"host": n.host, "rank": n.rank, "argv": list(n.argv), "env": dict(n.env)}
                for n in self.nodes
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    @property
    def endpoint(self) -> str:
        return f"http://{self.head_ip}:{self.ports.api}/v1"


def resolve_ip(host: str) -> str:
    """The IPv4 address of ``host``; the name itself when it does not resolve here."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def make_plan(
    request: LaunchRequest,
    env: Mapping[str, str] | None = None,
    is_free: Callable[[int], bool] | None = None,
    resolve: Callable[[str], str] = resolve_ip,
    run=None,
) -> LaunchPlan:
    flags, passthrough = split_parallel_flags(request.vllm_args)
    tp = merge_setting("tp", request.tp, flags.tp) or 1
    pp = merge_setting("pp", request.pp, flags.pp) or 1
    dp = merge_setting("dp", request.dp, flags.dp)
    ep = bool(merge_setting("ep", request.ep, flags.ep))

    model_dir = resolve_model_dir(request.model)
    found = cluster_mod.detect(env, request.nodelist, request.gpus_per_node, run=run)
    topology = plan_topology(len(found.nodes), found.gpus_per_node, tp=tp, pp=pp, dp=dp, ep=ep,
                             backend=request.backend)
    if model_dir is not None:
        check_model_fits(load_config(model_dir), topology, name=request.model)

    ports = allocate(found.job_id, request.port, is_free=is_free)
    head_host = found.nodes[0]
    head_ip = resolve(head_host)
    node_env = dict(request.env)
    for key in node_env:
        if not key.replace("_", "").isalnum() or key[0].isdigit():
            raise PyserveError(f"--env name {key!r} is not a valid environment variable name")
    commands = node_commands(topology, str(model_dir or request.model), found.nodes, head_ip,
                             ports, passthrough, node_env)
    if topology.nodes > 1:
        # Pin vLLM's own address choice to the node's name resolution, not its first NIC.
        for command in commands:
            address = resolve(command.host)
            if address != command.host:  # only a resolved address, never a bare name
                command.env.setdefault("VLLM_HOST_IP", address)
    if request.nsys_dir is not None:
        from .profiling import nsys_prefix

        for command in commands:
            report = Path(request.nsys_dir) / f"{found.job_id}-node{command.rank}"
            command.argv[:0] = nsys_prefix(report)
    served = option_value(passthrough, "--served-model-name") or str(model_dir or request.model)
    return LaunchPlan(
        topology=topology,
        head_host=head_host,
        head_ip=head_ip,
        ports=ports,
        nodes=commands,
        job_id=found.job_id,
        in_slurm=found.in_slurm,
        model=request.model,
        served_model_name=served,
        model_dir=model_dir,
        gpu_source=found.gpu_source,
        # nsys finalises its report on SIGINT; on SIGTERM it can die without writing it.
        stop_signal="INT" if request.nsys_dir is not None else "TERM",
    )
