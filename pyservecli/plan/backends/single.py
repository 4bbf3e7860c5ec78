"""single: one node, one plain ``vllm serve`` with every parallel flag (DP included)."""

from __future__ import annotations

from pyservecli.errors import PyserveError
from pyservecli.plan.backends.base import Shape, replica_too_big, serve_argv


class Single:
    name = "single"
    tools = ("vllm",)

    def check(self, shape: Shape) -> None:
        if shape.nodes > 1:
            if shape.one_replica:
                raise PyserveError(replica_too_big(self.name, shape))
            raise PyserveError(f"backend 'single' runs on one node; the allocation has "
                               f"{shape.nodes}")

    def node_argv(self, topology, model, rank, head_ip, ports, extra):
        argv = serve_argv(model, ports.api, topology)
        if topology.dp > 1:
            argv += ["--data-parallel-size", str(topology.dp)]
        return argv + extra

    def head_setup(self, topology, head_ip, ports, python):
        return []
