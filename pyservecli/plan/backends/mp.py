"""mp: one replica spread over nodes (``--nnodes/--node-rank/--master-addr/--master-port``);
non-zero ranks ``--headless``. On one node it is a plain ``vllm serve``."""

from __future__ import annotations

from pyservecli.errors import PyserveError
from pyservecli.plan.backends.base import Shape, serve_argv
from pyservecli.plan.backends.single import Single


class Mp:
    name = "mp"
    tools = ("vllm",)

    def check(self, shape: Shape) -> None:
        if not shape.one_replica and shape.nodes > 1:
            raise PyserveError(
                "backend 'mp' spreads one replica over several nodes; for DP across nodes use "
                "--backend rpc or ray"
            )

    def node_argv(self, topology, model, rank, head_ip, ports, extra):
        if topology.nodes == 1:
            return Single().node_argv(topology, model, rank, head_ip, ports, extra)
        head = rank == 0
        argv = serve_argv(model, ports.api if head else None, topology)
        argv += ["--nnodes", str(topology.nodes), "--node-rank", str(rank),
                 "--master-addr", head_ip, "--master-port", str(ports.master)]
        return argv + ([] if head else ["--headless"]) + extra

    def head_setup(self, topology, head_ip, ports, python):
        return []
