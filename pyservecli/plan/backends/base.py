"""What every backend provides (``Backend``) and the pieces they share.

A backend owns everything about one way of starting ranks across nodes: which topologies it
accepts, each node's command, what the head runs before its server (``head_setup``), and the
tools a node needs. Adding a backend is one module here, registered in ``__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pyservecli.plan.ports import Ports
    from pyservecli.plan.topology import Topology


@dataclass(frozen=True)
class NodeCommand:
    host: str
    rank: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SetupStep:
    """A command the head runs before its server; the launch fails with ``failure`` (a line for
    the log) when it exits non-zero. ``failure`` None: the command says why itself."""

    argv: list[str]
    failure: str | None = None


@dataclass(frozen=True)
class Shape:
    """What a backend is asked to accept: the allocation and the size of one replica."""

    nodes: int
    gpus_per_node: int
    replica_gpus: int  # TP x PP
    one_replica: bool  # PP > 1 or TP x PP > a node: one replica spread over the allocation


class Backend(Protocol):
    name: str
    tools: tuple[str, ...]  # commands every node needs on PATH (outside a container)

    def check(self, shape: Shape) -> None:
        """Raise PyserveError, naming the numbers, when this backend cannot run ``shape``."""

    def node_argv(self, topology: Topology, model: str, rank: int, head_ip: str, ports: Ports,
                  extra: list[str]) -> list[str]:
        """Node ``rank``'s command (rank 0 is the head); ``extra`` goes on every vLLM command."""

    def head_setup(self, topology: Topology, head_ip: str, ports: Ports,
                   python: str) -> list[SetupStep]:
        """Commands the head node runs, in order, before its server starts."""


def serve_argv(model: str, api_port: int | None, topology: Topology) -> list[str]:
    """``vllm serve MODEL [--port P]`` with the replica's own parallel flags."""
    argv = ["vllm", "serve", model]
    if api_port is not None:
        argv += ["--port", str(api_port)]
    argv += ["--tensor-parallel-size", str(topology.tp)]
    if topology.pp > 1:
        argv += ["--pipeline-parallel-size", str(topology.pp)]
    if topology.ep:
        argv.append("--enable-expert-parallel")
    return argv


def replica_too_big(name: str, shape: Shape) -> str:
    return (f"backend {name!r} places whole replicas on one node, but TP x PP = "
            f"{shape.replica_gpus} exceeds {shape.gpus_per_node} GPUs per node; "
            "use --backend mp or ray")
