"""``pyserve offline``'s plan: one torchrun per node, one process per GPU of the plan.

Pure. The same placement as ``pyserve launch`` (topology rules, model checks, node addresses),
torchrun's rendezvous on the head at a port from the job's window. Each rank runs
``pyservecli.workers.offline_worker``; ``bench.offline_run`` executes the plan and ``bench.offline``
merges what the ranks measured.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyservecli.errors import PyserveError
from pyservecli.plan.hosts import Cluster
from pyservecli.plan.placement import place
from pyservecli.plan.ports import offline_rendezvous_port
from pyservecli.plan.profiling import nsys_prefix
from pyservecli.plan.topology import Topology


@dataclass
class OfflineRequest:
    model: str
    tp: int = 1
    pp: int = 1
    dp: int | None = None
    ep: bool = False
    input_len: int | None = None
    output_len: int | None = None
    dataset_path: str | None = None
    num_prompts: int = 100
    seed: int = 0
    nsys: bool = False
    viztracer: str | None = None
    torch_profile_dir: str | None = None
    engine_kwargs: dict = field(default_factory=dict)


def make_request(model: str, *, tp: int | None = None, pp: int | None = None,
                 dp: int | None = None, ep: bool | None = None,
                 viztracer: str | Path | None = None,
                 torch_profile_dir: str | Path | None = None, engine_args=(),
                 **settings) -> OfflineRequest:
    """The request of ``pyserve offline`` and ``api.offline``: vLLM's own parallel flags among
    ``engine_args`` (``--tensor-parallel-size 2``) count as the topology, the rest become engine
    keyword arguments; paths are made absolute for the ranks."""
    from pyservecli.plan.vllm_args import engine_kwargs, merge_setting, split_parallel_flags

    flags, rest = split_parallel_flags(list(engine_args))
    return OfflineRequest(
        model=model, tp=merge_setting("tp", tp, flags.tp) or 1,
        pp=merge_setting("pp", pp, flags.pp) or 1, dp=merge_setting("dp", dp, flags.dp),
        ep=bool(merge_setting("ep", ep, flags.ep)),
        viztracer=str(Path(viztracer).resolve()) if viztracer else None,
        torch_profile_dir=str(Path(torch_profile_dir).resolve()) if torch_profile_dir else None,
        engine_kwargs=engine_kwargs(rest), **settings)


@dataclass
class OfflinePlan:
    topology: Topology
    job_id: str
    in_slurm: bool
    nodes: list[str]
    head_ip: str
    master_port: int
    procs_per_node: int
    out_dir: Path
    config: dict
    node_argv: list[list[str]]
    node_env: list[dict[str, str]] = field(default_factory=list)
    nsys: bool = False  # every node's torchrun under nsys (stopped with a long grace)

    def as_dict(self) -> dict:
        return {"topology": self.topology.as_dict(), "job_id": self.job_id,
                "procs_per_node": self.procs_per_node,
                "rendezvous": f"{self.head_ip}:{self.master_port}",
                "out_dir": str(self.out_dir), "config": self.config,
                "nodes": [{"host": h, "rank": r, "argv": a, "env": e} for r, (h, a, e)
                          in enumerate(zip(self.nodes, self.node_argv, self.node_env,
                                           strict=True))]}


def viztracer_template(path: str) -> str:
    """``trace.json`` -> ``trace-rank{rank}.json``: one file per rank, never one shared file."""
    file = Path(path)
    suffix = file.suffix or ".json"
    return str(file.with_name(f"{file.stem}-rank{{rank}}{suffix}"))


def plan_offline(request: OfflineRequest, cluster: Cluster, out_dir: Path | None,
                 workspace: Path, resolve: Callable[[str], str],
                 python: str = sys.executable) -> OfflinePlan:
    if request.dataset_path is None and (request.input_len is None or request.output_len is None):
        raise PyserveError("give --isl and --osl (random prompts), "
                           "or --dataset-path FILE (ShareGPT JSON)")
    if request.dataset_path is not None:
        if request.input_len is not None:
            raise PyserveError("--isl comes from the dataset with --dataset-path; drop it")
        if not Path(request.dataset_path).is_file():
            raise PyserveError(f"dataset file {request.dataset_path} does not exist "
                               "(pyserve downloads nothing; pass a local ShareGPT JSON)")
    for name in ("input_len", "output_len", "num_prompts"):
        value = getattr(request, name)
        if value is not None and value < 1:
            raise PyserveError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    placement = place(request.model, cluster, tp=request.tp, pp=request.pp, dp=request.dp,
                      ep=request.ep, resolve=resolve)
    topology, model_dir, found = placement.topology, placement.model_dir, cluster
    out_dir = Path(out_dir or workspace / "offline" / found.job_id).resolve()
    if topology.world_size % topology.nodes:
        raise PyserveError(f"{topology.world_size} ranks cannot be split evenly over "
                           f"{topology.nodes} nodes")
    # One process per GPU of the plan: TP x PP x DP, PP included, spread evenly over the nodes.
    procs_per_node = topology.world_size // topology.nodes
    head_ip = "127.0.0.1" if topology.nodes == 1 else placement.head_ip
    master_port = offline_rendezvous_port(found.job_id)
    config = {
        "model": str(model_dir or request.model), "tp": topology.tp, "pp": topology.pp,
        "dp": topology.dp, "ep": bool(topology.ep), "seed": request.seed,
        "input_len": request.input_len, "output_len": request.output_len,
        "dataset_path": str(Path(request.dataset_path).resolve()) if request.dataset_path
        else None,
        "num_prompts": request.num_prompts, "out_dir": str(out_dir),
        "viztracer": viztracer_template(request.viztracer) if request.viztracer else None,
        "torch_profile_dir": request.torch_profile_dir,
        "engine_kwargs": request.engine_kwargs,
    }
    node_argv, node_env = [], []
    for rank in range(topology.nodes):
        node_env.append(placement.node_env(found.nodes[rank]))
        argv = [python, "-m", "torch.distributed.run", f"--nnodes={topology.nodes}",
                f"--nproc-per-node={procs_per_node}", f"--node-rank={rank}",
                f"--master-addr={head_ip}", f"--master-port={master_port}",
                "-m", "pyservecli.workers.offline_worker", str(out_dir / "config.json")]
        if request.nsys:
            argv = nsys_prefix(out_dir / f"nsys-node{rank}") + argv
        node_argv.append(argv)
    return OfflinePlan(topology=topology, job_id=found.job_id, in_slurm=found.in_slurm,
                       nodes=list(found.nodes), head_ip=head_ip, master_port=master_port,
                       procs_per_node=procs_per_node, out_dir=out_dir, config=config,
                       node_argv=node_argv, node_env=node_env, nsys=request.nsys)
