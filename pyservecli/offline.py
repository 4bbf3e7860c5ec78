"""``pyserve offline``: raw engine speed without the API server, one torchrun per node.

Planning is pure (``plan_offline``): the same topology rules and model checks as
``pyserve launch``, one process per GPU of the plan (TP x PP x DP across the nodes), torchrun's
rendezvous on the head at a port from the job's window. Each rank runs
``pyservecli.offline_worker``; this module also holds what the ranks share (prompt builders)
and what the parent does afterwards (``merge_samples``, the report).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import cluster as cluster_mod
from .errors import PyserveError
from .modelconfig import check_model_fits, load_config, resolve_model_dir
from .plan import resolve_ip
from .ports import job_window
from .profiling import nsys_prefix
from .topology import Topology, plan_topology


@dataclass
class OfflineRequest:
    model: str
    tp: int = 1
    pp: int = 1
    dp: int | None = None
    ep: bool = False
    nodelist: str | None = None
    gpus_per_node: int | None = None
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
    from .vllm_args import engine_kwargs, merge_setting, split_parallel_flags

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


def plan_offline(request: OfflineRequest, out_dir: Path | None, workspace: Path = Path("."),
                 env: Mapping[str, str] | None = None,
                 resolve: Callable[[str], str] = resolve_ip, run=None,
                 python: str = sys.executable) -> OfflinePlan:
    if request.dataset_path is None and (request.input_len is None or request.output_len is None):
        raise PyserveError("give --input-len and --output-len (random prompts), "
                           "or --dataset-path FILE (ShareGPT JSON)")
    if request.dataset_path is not None:
        if request.input_len is not None:
            raise PyserveError("--input-len comes from the dataset with --dataset-path; drop it")
        if not Path(request.dataset_path).is_file():
            raise PyserveError(f"dataset file {request.dataset_path} does not exist "
                               "(pyserve downloads nothing; pass a local ShareGPT JSON)")
    for name in ("input_len", "output_len", "num_prompts"):
        value = getattr(request, name)
        if value is not None and value < 1:
            raise PyserveError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    model_dir = resolve_model_dir(request.model)
    found = cluster_mod.detect(env, request.nodelist, request.gpus_per_node, run=run)
    topology = plan_topology(len(found.nodes), found.gpus_per_node, tp=request.tp,
                             pp=request.pp, dp=request.dp, ep=request.ep)
    out_dir = Path(out_dir or workspace / "offline" / found.job_id).resolve()
    if model_dir is not None:
        check_model_fits(load_config(model_dir), topology, name=request.model)
    if topology.world_size % topology.nodes:
        raise PyserveError(f"{topology.world_size} ranks cannot be split evenly over "
                           f"{topology.nodes} nodes")
    # One process per GPU of the plan: TP x PP x DP, PP included, spread evenly over the nodes.
    procs_per_node = topology.world_size // topology.nodes
    head_ip = "127.0.0.1" if topology.nodes == 1 else resolve(found.nodes[0])
    master_port = job_window(found.job_id)[4]  # launch uses the first ports of the window
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
        address = resolve(found.nodes[rank]) if topology.nodes > 1 else None
        # As for launch: pin vLLM's and gloo's address to the node's resolved address.
        node_env.append({"VLLM_HOST_IP": address} if address and address != found.nodes[rank]
                        else {})
        argv = [python, "-m", "torch.distributed.run", f"--nnodes={topology.nodes}",
                f"--nproc-per-node={procs_per_node}", f"--node-rank={rank}",
                f"--master-addr={head_ip}", f"--master-port={master_port}",
                "-m", "pyservecli.offline_worker", str(out_dir / "config.json")]
        if request.nsys:
            argv = nsys_prefix(out_dir / f"nsys-node{rank}") + argv
        node_argv.append(argv)
    return OfflinePlan(topology=topology, job_id=found.job_id, in_slurm=found.in_slurm,
                       nodes=list(found.nodes), head_ip=head_ip, master_port=master_port,
                       procs_per_node=procs_per_node, out_dir=out_dir, config=config,
                       node_argv=node_argv, node_env=node_env)


# ---- prompts (run inside the ranks; every DP rank builds the same list and takes its share) --

def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "get_added_vocab", None)
    if added:
        ids.update(added().values())
    return ids


def random_token_prompts(tokenizer, count: int, input_len: int, output_len: int,
                         seed: int = 0) -> list[dict]:
    """``count`` distinct prompts of exactly ``input_len`` tokens, drawn from the ordinary
    (non-special) vocabulary. The reference's "random" prompts were one sequence repeated;
    each prompt here starts from its own offset into the vocabulary and its own random stream."""
    vocab = len(tokenizer)
    special = _special_ids(tokenizer)
    allowed = [i for i in range(vocab) if i not in special]
    rng = random.Random(seed)
    prompts, seen = [], set()
    while len(prompts) < count:
        ids = [allowed[rng.randrange(len(allowed))] for _ in range(input_len)]
        key = tuple(ids)
        if key in seen:  # only possible for tiny vocabularies or lengths
            if len(seen) >= len(allowed) ** input_len:
                raise PyserveError(f"cannot make {count} distinct prompts of {input_len} tokens")
            continue
        seen.add(key)
        prompts.append({"prompt_token_ids": ids, "output_len": output_len})
    return prompts


def sharegpt_prompts(path: str, tokenizer, count: int, max_model_len: int,
                     output_len: int | None, seed: int = 0) -> list[dict]:
    """The first human turn of each conversation; output length from the reply that follows
    (or ``output_len``); pairs that do not fit ``max_model_len`` are dropped."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PyserveError(f"cannot read dataset {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PyserveError(f"dataset {path} is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise PyserveError(f"dataset {path}: expected a list of conversations (ShareGPT)")
    random.Random(seed).shuffle(data)
    prompts = []
    for entry in data:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not turns:
            continue
        human = next((i for i, t in enumerate(turns) if t.get("from") == "human"), None)
        if human is None:
            continue
        prompt_ids = tokenizer.encode(turns[human].get("value", ""))
        reply = turns[human + 1].get("value", "") if human + 1 < len(turns) else ""
        out_len = output_len or len(tokenizer.encode(reply))
        if len(prompt_ids) < 4 or out_len < 4 or len(prompt_ids) + out_len > max_model_len:
            continue
        prompts.append({"prompt_token_ids": prompt_ids, "output_len": out_len})
        if len(prompts) == count:
            break
    if not prompts:
        raise PyserveError(f"dataset {path}: no conversation fits max-model-len {max_model_len}")
    return prompts


# ---- merging (the parent, after every rank has finished) --------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _stats(values: list[float], scale: float = 1000.0) -> dict:
    if not values:
        return {}
    return {"mean": sum(values) / len(values) * scale,
            **{f"p{q}": percentile(values, q) * scale for q in (50, 90, 99)}}


def merge_samples(rank_files: list[dict]) -> dict:
    """One result from every DP rank's per-request samples: each request once, percentiles of
    the merged samples (never means of per-rank means), TPOT and ITL kept apart."""
    requests: dict[str, dict] = {}
    for rank_file in rank_files:
        for sample in rank_file["samples"]:
            requests.setdefault(sample["id"], sample)
    samples = list(requests.values())
    if not samples:
        raise PyserveError("no rank reported any finished request")
    start = min(f["wall_start"] for f in rank_files)
    end = max(f["wall_start"] + f["duration_s"] for f in rank_files)
    duration = end - start
    output_tokens = sum(s["output_len"] for s in samples)
    input_tokens = sum(s["input_len"] for s in samples)
    tpots = [(s["e2e_s"] - s["ttft_s"]) / (s["output_len"] - 1)
             for s in samples if s["output_len"] > 1]
    itls = [gap for s in samples for gap in s["itl_s"]]
    return {
        "completed": len(samples),
        "dp_ranks": len(rank_files),
        "duration_s": duration,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(samples) / duration,
        "output_throughput": output_tokens / duration,
        "total_token_throughput": (input_tokens + output_tokens) / duration,
        "ttft_ms": _stats([s["ttft_s"] for s in samples]),
        "tpot_ms": _stats(tpots),
        "itl_ms": _stats(itls),
        "e2el_ms": _stats([s["e2e_s"] for s in samples]),
        "input_lens": sorted({s["input_len"] for s in samples}),
        "output_lens": sorted({s["output_len"] for s in samples}),
        "distinct_prompts": len({s["prompt_sha1"] for s in samples}),
    }


def format_report(result: dict) -> str:
    """A table in the layout of `vllm bench serve`'s."""
    def row(label, value, fmt="{:.2f}"):
        return f"{label:<40}{fmt.format(value) if value is not None else 'n/a':>10}"

    lines = ["{s:{c}^{n}}".format(s=" Offline Benchmark Result ", n=50, c="="),
             row("Successful requests:", result["completed"], "{}"),
             row("DP ranks:", result["dp_ranks"], "{}"),
             row("Benchmark duration (s):", result["duration_s"]),
             row("Total input tokens:", result["total_input_tokens"], "{}"),
             row("Total generated tokens:", result["total_output_tokens"], "{}"),
             row("Request throughput (req/s):", result["request_throughput"]),
             row("Output token throughput (tok/s):", result["output_throughput"]),
             row("Total Token throughput (tok/s):", result["total_token_throughput"])]
    for key, title in (("ttft_ms", "Time to First Token"),
                       ("tpot_ms", "Time per Output Token (excl. 1st token)"),
                       ("itl_ms", "Inter-token Latency"), ("e2el_ms", "End-to-end Latency")):
        lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        short = key.split("_")[0].upper()
        for stat in ("mean", "p50", "p90", "p99"):
            name = "Median" if stat == "p50" else stat.capitalize() if stat == "mean" \
                else stat.upper()
            lines.append(row(f"{name} {short} (ms):", result[key].get(stat)))
    lines.append("=" * 50)
    return "\n".join(lines)


def read_rank_files(out_dir: Path, dp: int) -> list[dict]:
    files = [out_dir / f"samples-dp{k}.json" for k in range(dp)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise PyserveError(f"ranks did not report: {', '.join(missing)} missing in {out_dir}")
    return [json.loads(f.read_text()) for f in files]


def node_main(plan_path: str) -> int:
    """Inside ``srun`` on each node: exec this node's torchrun (picked by SLURM_NODEID)."""
    import os

    from .cluster import interface_holding

    plan = json.loads(Path(plan_path).read_text())
    node = plan["nodes"][int(os.environ["SLURM_NODEID"])]
    os.environ.update(node["env"])
    host_ip = node["env"].get("VLLM_HOST_IP")
    if host_ip and not os.environ.get("GLOO_SOCKET_IFNAME"):
        # gloo otherwise binds to whatever the host name resolves to, often loopback.
        interface = interface_holding(host_ip)
        if interface:
            os.environ["GLOO_SOCKET_IFNAME"] = interface
            print(f"pyserve: GLOO_SOCKET_IFNAME={interface} (holds {host_ip})", flush=True)
    os.execvp(node["argv"][0], node["argv"])
    return 127



def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "starting"
    return lines[-1][-150:] if lines else "starting"


def srun_argv(plan: OfflinePlan, plan_path: Path) -> list[str]:
    """One srun step, one task per node; each task execs its node's torchrun."""
    from .procs import srun_per_node

    return [*srun_per_node(plan.nodes, "--kill-on-bad-exit=1"), sys.executable, "-m",
            "pyservecli.offline", str(plan_path)]


def execute(plan: OfflinePlan, say: Callable[[str], None], nsys: bool = False) -> dict:
    """Run every rank, wait, merge; returns the result (also written to result.json)."""
    import os
    import signal
    import time

    from .procs import start_command
    from .profiling import NSYS_FINALIZE_GRACE_S
    from .provenance import offline_provenance

    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("samples-dp*.json"):
        stale.unlink()
    (out / "config.json").write_text(json.dumps(plan.config, indent=2) + "\n")
    plan_path = out / "plan.json"
    plan_path.write_text(json.dumps(plan.as_dict(), indent=2) + "\n")
    env = dict(os.environ, PYSERVE_JOB_ID=plan.job_id, PYTHONUNBUFFERED="1")
    argv = srun_argv(plan, plan_path) if plan.in_slurm else plan.node_argv[0]
    log = out / "offline.log"
    say(f"pyserve offline: {plan.topology.world_size} rank(s) on {len(plan.nodes)} node(s), "
        f"{plan.procs_per_node} per node; log {log}")
    proc = start_command("offline", argv, log, env)
    grace = NSYS_FINALIZE_GRACE_S if nsys else 60.0
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)
        say("pyserve offline: stopping every rank")
        proc.stop(grace=grace)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    next_report = started + 30
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            if time.monotonic() >= next_report:
                next_report += 30
                say(f"[{time.monotonic() - started:7.1f}s] {_last_line(log)}")
        code = proc.poll()
        if proc.leftovers():
            proc.stop(grace=grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        raise PyserveError("stopped before the ranks finished; partial results not merged")
    if code != 0:
        from .readiness import last_error

        tail = last_error(log.read_text(errors="replace").splitlines()) or "(see the log)"
        raise PyserveError(f"the ranks exited with status {code}: {tail}; log {log}")
    result = merge_samples(read_rank_files(out, plan.topology.dp))
    result["config"] = {k: v for k, v in plan.config.items() if k != "out_dir"}
    result["provenance"] = offline_provenance(plan.node_argv, plan.topology.as_dict(),
                                              plan.job_id)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    raise SystemExit(node_main(sys.argv[1]))
