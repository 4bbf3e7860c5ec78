"""Parallel topology: how TP, PP, DP and EP map onto nodes and GPUs. Pure functions.

Rules (the reference cheat sheet, made exact):

* EP mode: GPUs = DP x TP and EP = DP x TP (vLLM derives it from the other two).
* PP mode (PP > 1): GPUs = TP x PP, no DP; the mp backend; PP with EP is refused.
* Otherwise GPUs = DP x TP; DP defaults to all GPUs / TP.
* DP_LOCAL = GPUs per node / TP. A TP x PP group larger than a node spans whole nodes with the
  mp (or ray) backend; DP_LOCAL is never 0.

Without GPUs (the CPU engine) each node holds one DP rank of TP workers unless told otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pyservecli.errors import PyserveError
from pyservecli.plan.backends import Shape, get_backend


@dataclass(frozen=True)
class Topology:
    nodes: int
    gpus_per_node: int
    tp: int
    pp: int
    dp: int
    dp_local: int
    ep: int  # expert-parallel size; 0 without expert parallelism
    backend: str

    @property
    def replica_gpus(self) -> int:
        """GPUs of one model replica (one DP rank)."""
        return self.tp * self.pp

    @property
    def spans_nodes(self) -> bool:
        """One replica is spread over several nodes (multi-node TP/PP)."""
        return self.replica_gpus > self.gpus_per_node

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp

    def as_dict(self) -> dict:
        return asdict(self)


# The most GPUs (or, without GPUs, device slots) one node is planned for: 8 on today's GPU
# servers, 16 on the largest; beyond 64 a count is a typo, and planning it would start that
# many engine processes.
MAX_GPUS_PER_NODE = 64


def check_gpus_per_node(count: int, source: str = "--gpus-per-node") -> int:
    if count > MAX_GPUS_PER_NODE:
        raise PyserveError(f"{source}: {count} GPUs per node; pyserve plans at most "
                           f"{MAX_GPUS_PER_NODE}")
    return count


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise PyserveError(f"--{name} must be a whole number of at least 1, got {value!r}")


def plan_topology(
    nodes: int,
    gpus_per_node: int | None,
    tp: int = 1,
    pp: int = 1,
    dp: int | None = None,
    ep: bool = False,
    backend: str | None = None,
) -> Topology:
    """Plan the topology or raise PyserveError naming the numbers that do not fit."""
    _check_positive(nodes=nodes, tp=tp, pp=pp, dp=dp)
    if backend is not None:
        get_backend(backend)  # an unknown name is refused before anything else
    if pp > 1 and ep:
        raise PyserveError(
            f"pipeline parallelism cannot be combined with expert parallelism (--pp {pp} --ep); "
            "use --tp/--dp with --ep, or --pp without --ep"
        )
    if pp > 1 and dp not in (None, 1):
        raise PyserveError(f"--pp {pp} plans TP x PP with no DP; --dp {dp} cannot be added")
    replica = tp * pp
    if gpus_per_node is None:
        gpus_per_node = check_gpus_per_node(_cpu_slots_per_node(nodes, tp, pp, dp, backend),
                                            "TP x PP x DP per node (no GPU found)")
    _check_positive(**{"gpus-per-node": gpus_per_node})
    check_gpus_per_node(gpus_per_node)
    total = nodes * gpus_per_node
    where = f"{nodes} node(s) x {gpus_per_node} GPUs = {total}"

    if pp > 1 or replica > gpus_per_node:
        # One replica (DP 1) spread over the whole allocation: multi-node TP and/or PP.
        if dp not in (None, 1):
            raise PyserveError(
                f"TP x PP = {replica} is larger than a node ({gpus_per_node} GPUs), so each "
                f"replica spans nodes; --dp {dp} across such replicas is not supported"
            )
        if replica != total:
            label = f"TP {tp} x PP {pp} = {replica}" if pp > 1 else f"TP {tp}"
            raise PyserveError(
                f"{label} must use every GPU of the allocation ({where}) when one replica "
                "spans it; change --tp/--pp, or plan fewer with --gpus-per-node/--nodelist"
            )
        dp, dp_local = 1, 1
        one_replica = True
        if backend is None:
            backend = "mp"
    else:
        if gpus_per_node % tp:
            raise PyserveError(f"TP {tp} does not divide the {gpus_per_node} GPUs per node")
        per_node_max = gpus_per_node // tp
        if dp is None:
            dp = nodes * per_node_max
        if dp % nodes or dp // nodes > per_node_max:
            raise PyserveError(
                f"DP {dp} x TP {tp} does not fit {where}: each node holds up to {per_node_max} "
                f"DP rank(s) of TP {tp}, and DP must be a multiple of the {nodes} node(s)"
            )
        dp_local = dp // nodes
        one_replica = False
        if backend is None:
            backend = "single" if nodes == 1 else "rpc"
    get_backend(backend).check(Shape(nodes=nodes, gpus_per_node=gpus_per_node,
                                     replica_gpus=replica, one_replica=one_replica))
    return Topology(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        tp=tp,
        pp=pp,
        dp=dp,
        dp_local=dp_local,
        ep=dp * tp if ep else 0,
        backend=backend,
    )


def _cpu_slots_per_node(nodes: int, tp: int, pp: int, dp: int | None, backend: str | None) -> int:
    """Without GPUs, size each node's device slots from the request itself."""
    replica = tp * pp
    if pp > 1 or backend == "mp":
        if replica % nodes:
            raise PyserveError(f"TP x PP = {replica} cannot be split evenly over {nodes} nodes")
        return replica // nodes
    dp = nodes if dp is None else dp
    if dp % nodes:
        raise PyserveError(f"DP {dp} must be a multiple of the {nodes} node(s)")
    return dp // nodes * tp
