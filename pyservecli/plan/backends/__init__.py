"""Backends: how the ranks of a topology are started across nodes, one module each.

* single: one node, plain ``vllm serve`` with every parallel flag.
* rpc:    DP ranks over nodes through vLLM's own RPC coordination (headless workers).
* mp:     one replica spread over nodes (``--nnodes/--node-rank``), headless non-zero ranks.
* ray:    ``ray start`` on every node, one ``vllm serve`` with Ray on the head.

Each implements ``base.Backend``; ``node_commands`` turns a topology into per-node commands.
Pure: a topology in, argv lists out.
"""

from __future__ import annotations

from pyservecli.errors import PyserveError
from pyservecli.plan.backends.base import Backend, NodeCommand, SetupStep, Shape
from pyservecli.plan.backends.mp import Mp
from pyservecli.plan.backends.ray import Ray
from pyservecli.plan.backends.rpc import Rpc
from pyservecli.plan.backends.single import Single

BACKENDS: dict[str, Backend] = {b.name: b for b in (Single(), Rpc(), Mp(), Ray())}

# In --env values, replaced by each node's rank (e.g. VLLM_CPU_OMP_THREADS_BIND={node_rank}).
NODE_RANK_PLACEHOLDER = "{node_rank}"

__all__ = ["BACKENDS", "NODE_RANK_PLACEHOLDER", "Backend", "NodeCommand", "SetupStep", "Shape",
           "get_backend", "node_commands"]


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise PyserveError(f"unknown backend {name!r}; choose one of "
                           f"{', '.join(BACKENDS)}") from None


def node_commands(topology, model: str, hosts, head_ip: str, ports, vllm_args=(),
                  env: dict[str, str] | None = None) -> list[NodeCommand]:
    """One command per node, head (rank 0) first. ``vllm_args`` go on every vLLM command."""
    backend = get_backend(topology.backend)
    commands = []
    for rank, host in enumerate(hosts):
        argv = backend.node_argv(topology, model, rank, head_ip, ports, list(vllm_args))
        node_env = {key: value.replace(NODE_RANK_PLACEHOLDER, str(rank))
                    for key, value in (env or {}).items()}
        commands.append(NodeCommand(host=host, rank=rank, argv=argv, env=node_env))
    return commands
