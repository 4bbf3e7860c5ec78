"""Per-node commands for each backend. Pure functions: a topology in, argv lists out.

* single: one node, plain ``vllm serve`` with every parallel flag.
* rpc:    DP ranks over nodes through vLLM's own ZMQ/RPC coordination; every node but the head
          runs ``--headless`` with its own slice of DP ranks.
* mp:     one replica spread over nodes (``--nnodes/--node-rank/--master-addr/--master-port``);
          non-zero ranks ``--headless``.
* ray:    ``ray start`` on every node, then one ``vllm serve --data-parallel-backend ray`` on the
          head (``--distributed-executor-backend ray`` when a replica spans nodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ports import Ports
from .topology import Topology

# In --env values, replaced by each node's rank (e.g. VLLM_CPU_OMP_THREADS_BIND={node_rank}).
NODE_RANK_PLACEHOLDER = "{node_rank}"


@dataclass(frozen=True)
class NodeCommand:
    host: str
    rank: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _parallel_flags(topology: Topology) -> list[str]:
    flags = ["--tensor-parallel-size", str(topology.tp)]
    if topology.pp > 1:
        flags += ["--pipeline-parallel-size", str(topology.pp)]
    if topology.ep:
        flags.append("--enable-expert-parallel")
    return flags


def _serve(model: str, api_port: int | None, topology: Topology) -> list[str]:
    argv = ["vllm", "serve", model]
    if api_port is not None:
        argv += ["--port", str(api_port)]
    return argv + _parallel_flags(topology)


def ray_worker_argv(head_ip: str, ports: Ports) -> list[str]:
    return ["ray", "start", "--address", f"{head_ip}:{ports.ray}", "--block"]


def ray_head_argv(head_ip: str, ports: Ports) -> list[str]:
    return ["ray", "start", "--head", "--node-ip-address", head_ip, "--port", str(ports.ray)]


def node_commands(
    topology: Topology,
    model: str,
    hosts: list[str] | tuple[str, ...],
    head_ip: str,
    ports: Ports,
    vllm_args: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> list[NodeCommand]:
    """One command per node, head (rank 0) first. ``vllm_args`` go on every vLLM command."""
    env = dict(env or {})
    extra = list(vllm_args)
    commands = []
    for rank, host in enumerate(hosts):
        head = rank == 0
        if topology.backend == "ray":
            if head:
                argv = _serve(model, ports.api, topology)
                if topology.dp > 1:
                    argv += ["--data-parallel-size", str(topology.dp),
                             "--data-parallel-backend", "ray"]
                if topology.spans_nodes:
                    argv += ["--distributed-executor-backend", "ray"]
                argv += extra
            else:
                argv = ray_worker_argv(head_ip, ports)
        elif topology.backend == "mp" and topology.nodes > 1:
            argv = _serve(model, ports.api if head else None, topology)
            argv += ["--nnodes", str(topology.nodes), "--node-rank", str(rank),
                     "--master-addr", head_ip, "--master-port", str(ports.master)]
            argv += ([] if head else ["--headless"]) + extra
        elif topology.backend == "rpc":
            argv = _serve(model, ports.api if head else None, topology)
            argv += ["--data-parallel-size", str(topology.dp),
                     "--data-parallel-size-local", str(topology.dp_local)]
            if topology.nodes > 1:
                if not head:
                    # Never on the head: vLLM reads a start rank on a non-headless server as
                    # "hybrid load balancing" and then refuses the headless workers.
                    argv += ["--data-parallel-start-rank", str(rank * topology.dp_local)]
                argv += ["--data-parallel-address", head_ip,
                         "--data-parallel-rpc-port", str(ports.dp_rpc)]
            argv += ([] if head else ["--headless"]) + extra
        else:  # single, or mp on one node
            argv = _serve(model, ports.api, topology)
            if topology.dp > 1:
                argv += ["--data-parallel-size", str(topology.dp)]
            argv += extra
        node_env = {key: value.replace(NODE_RANK_PLACEHOLDER, str(rank))
                    for key, value in env.items()}
        commands.append(NodeCommand(host=host, rank=rank, argv=argv, env=node_env))
    return commands
