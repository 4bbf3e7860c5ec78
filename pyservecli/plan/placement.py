"""Placement: the step ``launch`` and ``offline`` share between a request and their own plans.

Resolve the model (a local directory's config.json is checked against the topology), plan the
topology for the allocation, and find each node's address. Pure (it reads only a local model's
config.json): the allocation comes in as a ``Cluster`` and name resolution as a function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyservecli.plan.hosts import Cluster
from pyservecli.plan.modelconfig import check_model_fits, load_config, resolve_model_dir
from pyservecli.plan.topology import Topology, plan_topology


@dataclass(frozen=True)
class Placement:
    cluster: Cluster
    topology: Topology
    model_dir: Path | None  # None: a hub id (vLLM checks it at start)
    head_ip: str
    # Multi-node plans pin vLLM's (and gloo's) address on each node to the node's own name
    # resolution, not its first NIC: host -> VLLM_HOST_IP. Empty on one node.
    host_ips: dict[str, str] = field(default_factory=dict)

    def node_env(self, host: str) -> dict[str, str]:
        return {"VLLM_HOST_IP": self.host_ips[host]} if host in self.host_ips else {}


def place(model: str, cluster: Cluster, *, tp: int = 1, pp: int = 1, dp: int | None = None,
          ep: bool = False, backend: str | None = None,
          resolve: Callable[[str], str]) -> Placement:
    """Everything that can be refused before anything starts, in the order a user fixes it.
    ``resolve``: a host name to its address (``run.cluster.resolve_ip``)."""
    model_dir = resolve_model_dir(model)
    topology = plan_topology(len(cluster.nodes), cluster.gpus_per_node, tp=tp, pp=pp, dp=dp,
                             ep=ep, backend=backend)
    if model_dir is not None:
        check_model_fits(load_config(model_dir), topology, name=model)
    host_ips = {}
    if topology.nodes > 1:
        for host in cluster.nodes:
            address = resolve(host)
            if address != host:  # only a resolved address, never a bare name
                host_ips[host] = address
    return Placement(cluster=cluster, topology=topology, model_dir=model_dir,
                     head_ip=resolve(cluster.nodes[0]), host_ips=host_ips)
