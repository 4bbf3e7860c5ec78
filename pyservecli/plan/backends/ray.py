"""ray: ``ray start`` on every node, then one ``vllm serve --data-parallel-backend ray`` on the
head (``--distributed-executor-backend ray`` when a replica spans nodes). The head starts the
Ray head and waits until every node has joined before its server starts."""

from __future__ import annotations

from pyservecli.plan.backends.base import SetupStep, Shape, serve_argv

# How long the head waits for every node's `ray start` to join.
RAY_JOIN_TIMEOUT_S = 600


class Ray:
    name = "ray"
    tools = ("vllm", "ray")

    def check(self, shape: Shape) -> None:
        return None  # Ray places DP ranks and multi-node replicas alike

    def node_argv(self, topology, model, rank, head_ip, ports, extra):
        if rank != 0:
            return ["ray", "start", "--address", f"{head_ip}:{ports.ray}", "--block"]
        argv = serve_argv(model, ports.api, topology)
        if topology.dp > 1:
            argv += ["--data-parallel-size", str(topology.dp), "--data-parallel-backend", "ray"]
        if topology.spans_nodes:
            argv += ["--distributed-executor-backend", "ray"]
        return argv + extra

    def head_setup(self, topology, head_ip, ports, python):
        head = SetupStep(["ray", "start", "--head", "--node-ip-address", head_ip,
                          "--port", str(ports.ray)],
                         failure="RuntimeError: ray start --head failed on the head node")
        wait = SetupStep([python, "-m", "pyservecli.workers.raywait", "--address",
                          f"{head_ip}:{ports.ray}", "--nodes", str(topology.nodes),
                          "--timeout", str(RAY_JOIN_TIMEOUT_S)])
        return [head, wait]
