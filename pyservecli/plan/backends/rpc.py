"""rpc: DP ranks over nodes through vLLM's own ZMQ/RPC coordination; every node but the head
runs ``--headless`` with its own slice of DP ranks."""

from __future__ import annotations

from pyservecli.errors import PyserveError
from pyservecli.plan.backends.base import Shape, replica_too_big, serve_argv


class Rpc:
    name = "rpc"
    tools = ("vllm",)

    def check(self, shape: Shape) -> None:
        if shape.one_replica and shape.nodes > 1:
            raise PyserveError(replica_too_big(self.name, shape))

    def node_argv(self, topology, model, rank, head_ip, ports, extra):
        head = rank == 0
        argv = serve_argv(model, ports.api if head else None, topology)
        argv += ["--data-parallel-size", str(topology.dp),
                 "--data-parallel-size-local", str(topology.dp_local)]
        if topology.nodes > 1:
            if not head:
                # Never on the head: vLLM reads a start rank on a non-headless server as
                # "hybrid load balancing" and then refuses the headless workers.
                argv += ["--data-parallel-start-rank", str(rank * topology.dp_local)]
            argv += ["--data-parallel-address", head_ip,
                     "--data-parallel-rpc-port", str(ports.dp_rpc)]
        return argv + ([] if head else ["--headless"]) + extra

    def head_setup(self, topology, head_ip, ports, python):
        return []
