"""Placement: the step ``launch`` and ``offline`` share between a request and their own plans.

Resolve the model (its config.json, from a local directory or, for a hub id, as ``find_config``
finds it), choose the topology when no parallel setting is given (``plan.auto.choose``), plan it
for the allocation, check the model's splits and memory, and find each node's address. Pure
(it reads only config files): the allocation comes in as a ``Cluster``, name resolution and the
hub look-up as functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyservecli.plan.auto import Choice, check_memory, choose
from pyservecli.plan.hosts import Cluster
from pyservecli.plan.modelconfig import (
    ModelFacts,
    check_model_fits,
    read_facts,
    resolve_model_dir,
)
from pyservecli.plan.topology import Topology, plan_topology
from pyservecli.plan.vllm_args import MemorySettings, memory_settings

# A hub id -> (its config.json or None, where it came from or why not): ``run.hfhub``.
FindConfig = Callable[[str, str | None], tuple[Path | None, str]]
# The automatic choice re-ranked with measured figures (``api.ranked_choice``):
# (facts, cluster, the rules' choice, the serve arguments) -> the choice to launch.
RankAuto = Callable[[ModelFacts, Cluster, Choice, Sequence[str]], Choice]


def _no_lookup(_model: str, _revision: str | None) -> tuple[Path | None, str]:
    return None, "a hub id: checked by vLLM at start"


@dataclass(frozen=True)
class Placement:
    cluster: Cluster
    topology: Topology
    model_dir: Path | None  # None: a hub id
    head_ip: str
    # Multi-node plans pin vLLM's (and gloo's) address on each node to the node's own name
    # resolution, not its first NIC: host -> VLLM_HOST_IP. Empty on one node.
    host_ips: dict[str, str] = field(default_factory=dict)
    facts: ModelFacts | None = None
    choice: Choice = field(default_factory=lambda: Choice(None))

    def node_env(self, host: str) -> dict[str, str]:
        return {"VLLM_HOST_IP": self.host_ips[host]} if host in self.host_ips else {}

    def notes(self) -> list[str]:
        """What pyserve knew and decided, one line each, for --dry-run and the log."""
        lines = [self.facts.summary()] if self.facts is not None else []
        gpu = self.cluster.gpu
        if gpu is not None and gpu.memory_gib is not None:
            lines.append(f"GPU: {gpu.memory_gib:.1f} GiB each ({gpu.source})")
        return lines + self.choice.decisions


def read_model(model: str, settings: MemorySettings,
               find_config: FindConfig | None = None) -> tuple[Path | None, ModelFacts]:
    """The local model directory (None for a hub id) and what its config says, sized with
    ``settings`` (``vllm_args.memory_settings`` of the serve arguments)."""
    model_dir = resolve_model_dir(model)
    if model_dir is not None:
        return model_dir, read_facts(model, model_dir / "config.json",
                                     f"config.json from {model_dir}", settings)
    config_path, source = (find_config or _no_lookup)(model, settings.revision)
    return None, read_facts(model, config_path, source, settings)


def place(model: str, cluster: Cluster, *, tp: int | None = None, pp: int | None = None,
          dp: int | None = None, ep: bool | None = None, backend: str | None = None,
          resolve: Callable[[str], str], serve_args: Sequence[str] = (),
          find_config: FindConfig | None = None, rank_auto: RankAuto | None = None
          ) -> Placement:
    """Everything that can be refused before anything starts, in the order a user fixes it.
    ``resolve``: a host name to its address (``run.cluster.resolve_ip``). With none of
    ``tp``/``pp``/``dp`` given and GPUs in the allocation, the topology is chosen from the
    model's size; explicit settings always win and are checked against it."""
    settings = memory_settings(list(serve_args))
    model_dir, facts = read_model(model, settings, find_config)
    utilization = settings.gpu_memory_utilization
    nodes = len(cluster.nodes)
    choice = Choice(None)
    if tp is None and pp is None and dp is None and cluster.gpus_per_node is not None:
        choice = choose(facts, nodes, cluster.gpus_per_node, cluster.gpu, ep, utilization)
        if choice.shape is not None and ep is None and rank_auto is not None:
            choice = rank_auto(facts, cluster, choice, list(serve_args))
        if choice.shape is not None:
            shape = choice.shape
            tp, pp, ep = shape.tp, shape.pp, shape.ep
            dp = shape.dp if shape.pp == 1 else None
    topology = plan_topology(nodes, cluster.gpus_per_node, tp=1 if tp is None else tp,
                             pp=1 if pp is None else pp, dp=dp,
                             ep=bool(ep), backend=backend)
    if facts.config is not None:
        check_model_fits(facts.config, topology, name=model)
    if choice.shape is None:
        checked = check_memory(facts, topology, cluster.gpu, utilization)
        choice = Choice(None, choice.decisions + checked.decisions, checked.warnings,
                        checked.fit)
    host_ips = {}
    if topology.nodes > 1:
        for host in cluster.nodes:
            address = resolve(host)
            if address != host:  # only a resolved address, never a bare name
                host_ips[host] = address
    return Placement(cluster=cluster, topology=topology, model_dir=model_dir,
                     head_ip=resolve(cluster.nodes[0]), host_ips=host_ips, facts=facts,
                     choice=choice)
