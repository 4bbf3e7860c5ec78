"""Turn a launch request into a complete plan: topology, head endpoint and per-node commands.

``make_plan`` does every check that can be done before anything starts; ``--dry-run`` prints its
result and the launcher executes it. The JSON shape is a contract other tools rely on:

    {"topology": {"nodes", "gpus_per_node", "tp", "pp", "dp", "dp_local", "ep", "backend"},
     "head": {"host", "ip", "port"},
     "nodes": [{"host", "rank", "argv": [...], "env": {...}}],
     "notes": [what the model is, what was chosen and why], "warnings": [...]}
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyservecli.errors import PyserveError
from pyservecli.plan.backends import NodeCommand, node_commands
from pyservecli.plan.hosts import Cluster
from pyservecli.plan.placement import FindConfig, RankAuto, place
from pyservecli.plan.ports import Ports, allocate
from pyservecli.plan.profiling import nsys_prefix
from pyservecli.plan.topology import Topology
from pyservecli.plan.vllm_args import merge_setting, option_value, split_parallel_flags

# An --env value is kept out of every record when its name says it is a secret.
SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
REDACTED = "<redacted>"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_secret_name(name: str) -> bool:
    return any(part in name.upper() for part in SECRET_NAME_PARTS)


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
    topology: Topology
    head_host: str
    head_ip: str
    ports: Ports
    nodes: list[NodeCommand]
    job_id: str  # the allocation's (SLURM's job id, or a local one): ports, squeue, srun
    launch_suffix: str  # what makes this launch's id unique within its allocation
    in_slurm: bool
    model: str
    served_model_name: str
    model_dir: Path | None
    gpu_source: str  # where the GPU count came from (run.cluster), for messages
    has_gpus: bool  # False: the CPU engine (no GPU found); containers get no GPU devices
    stop_signal: str = "TERM"  # what a node entrypoint sends its server to stop it
    # --env values whose names look secret: never in argv, records or output; each node reads
    # them from a 0600 file (as the API key). as_dict shows their names only.
    secret_env: dict[str, str] = field(default_factory=dict)
    request: LaunchRequest | None = None  # what the plan was made from (to re-plan ports)
    cluster: Cluster | None = None
    notes: list[str] = field(default_factory=list)  # what the model is, what was chosen, why
    warnings: list[str] = field(default_factory=list)  # launchable, but likely to fail
    find_config: FindConfig | None = None

    @property
    def launch_id(self) -> str:
        """This launch's own id: process tags, log directory, container names."""
        return f"{self.job_id}-{self.launch_suffix}" if self.launch_suffix else self.job_id

    def with_free_ports(self, is_free: Callable[[int], bool],
                        resolve: Callable[[str], str]) -> LaunchPlan:
        """The same launch (request, allocation, launch id) planned again where ``is_free``
        now says which ports are free (the head's own answer inside SLURM)."""
        return make_plan(self.request, self.cluster, is_free, resolve,
                         launch_suffix=self.launch_suffix, find_config=self.find_config)

    def as_dict(self) -> dict:
        return {
            "topology": self.topology.as_dict(),
            "head": {"host": self.head_host, "ip": self.head_ip, "port": self.ports.api},
            "nodes": [
                {"host": n.host, "rank": n.rank, "argv": list(n.argv),
                 "env": {**n.env, **dict.fromkeys(self.secret_env, REDACTED)}}
                for n in self.nodes
            ],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    @property
    def endpoint(self) -> str:
        return f"http://{self.head_ip}:{self.ports.api}/v1"


# Environment names pyserve owns: never taken from --env.
OWNED_ENV_PREFIX = "PYSERVE_"
KEY_ENV_NAMES = frozenset({"VLLM_API_KEY", "OPENAI_API_KEY"})


def make_plan(request: LaunchRequest, cluster: Cluster, is_free: Callable[[int], bool],
              resolve: Callable[[str], str], launch_suffix: str = "",
              find_config: FindConfig | None = None,
              rank_auto: RankAuto | None = None) -> LaunchPlan:
    """The whole launch, checked; ``cluster`` is the allocation (``run.cluster.detect``) and
    ``is_free`` says whether a port is free on the head (``run.portprobe.is_port_free`` for a
    local launch; a plan for elsewhere passes ``lambda _port: True`` and the head checks its
    own ports at launch); ``resolve`` turns a host name into its address
    (``run.cluster.resolve_ip``). ``launch_suffix`` makes this launch's id unique within its
    allocation (job id + suffix): its processes, logs and containers are tagged with it.
    ``find_config`` finds a hub id's config.json (``run.hfhub.find_config``); without it a hub
    id's size is not checked. ``rank_auto``: re-ranks the automatic choice with measured
    figures (``api.ranked_choice``)."""
    flags, passthrough = split_parallel_flags(request.vllm_args)
    tp = merge_setting("tp", request.tp, flags.tp)
    pp = merge_setting("pp", request.pp, flags.pp)
    placement = place(
        request.model, cluster, tp=tp, pp=pp, dp=merge_setting("dp", request.dp, flags.dp),
        ep=merge_setting("ep", request.ep, flags.ep), backend=request.backend,
        resolve=resolve, serve_args=passthrough, find_config=find_config,
        rank_auto=rank_auto)
    topology = placement.topology
    ports = allocate(cluster.job_id, request.port, is_free=is_free)
    for key in request.env:
        if not ENV_NAME.fullmatch(key):
            raise PyserveError(f"--env name {key!r} is not a valid environment variable name "
                               "(ASCII letters, digits and '_', not starting with a digit)")
        if key.startswith(OWNED_ENV_PREFIX):
            # They tag the launch's processes: another launch's tag would make its stop (and
            # this one's) reach the other's servers.
            raise PyserveError(f"--env {key}: pyserve sets {OWNED_ENV_PREFIX}* names itself")
        if key in KEY_ENV_NAMES:
            raise PyserveError(f"--env {key}: pass the key with --api-key-file (an --env value "
                               "is visible in the plan and to every process of the launch)")
    public = {k: v for k, v in request.env.items() if not is_secret_name(k)}
    secret = {k: v for k, v in request.env.items() if is_secret_name(k)}
    model_path = str(placement.model_dir or request.model)
    launch_id = f"{cluster.job_id}-{launch_suffix}" if launch_suffix else cluster.job_id
    commands = node_commands(topology, model_path, cluster.nodes, placement.head_ip, ports,
                             passthrough, public)
    for command in commands:
        for key, value in placement.node_env(command.host).items():
            command.env.setdefault(key, value)
    if request.nsys_dir is not None:
        for command in commands:
            report = Path(request.nsys_dir) / f"{launch_id}-node{command.rank}"
            command.argv[:0] = nsys_prefix(report)
    served = option_value(passthrough, "--served-model-name") or model_path
    return LaunchPlan(
        topology=topology,
        head_host=cluster.nodes[0],
        head_ip=placement.head_ip,
        ports=ports,
        nodes=commands,
        job_id=cluster.job_id,
        launch_suffix=launch_suffix,
        in_slurm=cluster.in_slurm,
        model=request.model,
        served_model_name=served,
        model_dir=placement.model_dir,
        gpu_source=cluster.gpu_source,
        has_gpus=cluster.gpus_per_node is not None,
        # nsys finalises its report on SIGINT; on SIGTERM it can die without writing it.
        stop_signal="INT" if request.nsys_dir is not None else "TERM",
        secret_env=secret,
        request=request,
        cluster=cluster,
        notes=placement.notes(),
        warnings=list(placement.choice.warnings),
        find_config=find_config,
    )
