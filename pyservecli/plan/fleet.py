"""Replicas behind a router: the allocation split into N independent vLLM servers, each a normal
launch plan of its own share of the GPUs, and vLLM's router (``vllm-router``) in front. Pure.

A replica's share is the allocation's GPUs / N: a share no larger than a node packs replicas on
nodes (each pinned to its GPUs with CUDA_VISIBLE_DEVICES), a share of whole nodes gives each
replica its own nodes. Inside its share the usual rules apply (``make_plan``: automatic or
explicit TP/PP/DP/EP, model checks). Each replica has its own API port and internal ports; none
is shared with a sibling on the same host. The router runs where pyserve runs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pyservecli.errors import PyserveError
from pyservecli.plan.hosts import Cluster
from pyservecli.plan.launch import LaunchPlan, LaunchRequest, make_plan
from pyservecli.plan.placement import FindConfig
from pyservecli.plan.vllm_args import option_given, option_value

ROUTER_POLICIES = ("round_robin", "power_of_two", "cache_aware", "random", "consistent_hash")
# How often the router checks its workers itself (pyserve also takes a dead replica out as
# soon as its launcher sees it end).
ROUTER_HEALTH_INTERVAL_S = 5
MAX_REPLICAS = 256


@dataclass(frozen=True)
class RouterPlan:
    """vllm-router on loopback (``admin_port``: its management API, for the launcher only) and
    pyserve's gate in front on the public ``port`` (workers/gate.py: the OpenAI API only, the
    key checked)."""

    host: str  # where it runs: the launching host's address (the endpoint's host)
    port: int  # the public port: pyserve's gate
    metrics_port: int  # Prometheus exporter (the router always starts one), loopback only
    policy: str
    worker_urls: tuple[str, ...]
    admin_port: int = 0  # the router itself, on 127.0.0.1
    listen: str = "0.0.0.0"  # the gate's interface (--router-host)
    # Several models: the router's inference-gateway mode, which routes by the request's
    # "model"; its workers are registered through its API once it runs (POST /workers).
    igw: bool = False
    # Prefill/decode disaggregation: the router sends each request to a prefill server (one
    # output token), then to a decode server that pulls the KV cache from it over NIXL.
    prefill_urls: tuple[str, ...] = ()
    decode_urls: tuple[str, ...] = ()

    @property
    def pd(self) -> bool:
        return bool(self.prefill_urls)

    @property
    def endpoint(self) -> str:
        return f"http://{self.public_host}:{self.port}/v1"

    @property
    def public_host(self) -> str:
        """The endpoint's host: the launching host's address, or the one --router-host names."""
        return self.host if self.listen in ("0.0.0.0", "::") else self.listen

    @property
    def local_url(self) -> str:
        """The gate as the launcher reaches it (READY is probed the way clients come in)."""
        host = "127.0.0.1" if self.listen in ("0.0.0.0", "::") else self.listen
        return f"http://{host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def gate_argv(self, key_file: str | None) -> list[str]:
        argv = ["--listen", self.listen, "--port", str(self.port), "--upstream",
                self.admin_url]
        return argv + (["--key-file", key_file] if key_file else [])

    def argv(self) -> list[str]:
        argv = ["vllm-router", "--host", "127.0.0.1", "--port", str(self.admin_port),
                "--prometheus-host", "127.0.0.1",
                "--prometheus-port", str(self.metrics_port), "--policy", self.policy,
                "--health-check-interval-secs", str(ROUTER_HEALTH_INTERVAL_S)]
        if self.igw:
            return argv + ["--enable-igw"]
        if self.pd:
            argv.append("--vllm-pd-disaggregation")
            for url in self.prefill_urls:
                argv += ["--prefill", url]
            for url in self.decode_urls:
                argv += ["--decode", url]
            return argv
        return argv + ["--worker-urls", *self.worker_urls]

    def as_dict(self) -> dict:
        return {"host": self.host, "port": self.port, "listen": self.listen,
                "admin_port": self.admin_port, "metrics_port": self.metrics_port,
                "policy": self.policy,
                "mode": "igw" if self.igw else "pd" if self.pd else "regular",
                "workers": list(self.worker_urls), "argv": self.argv()}


@dataclass
class FleetPlan:
    router: RouterPlan
    replicas: list[LaunchPlan]
    job_id: str  # the allocation's
    fleet_id: str  # this fleet's: job id + launch suffix (replicas add r0, r1, ...)
    roles: list[str] = field(default_factory=list)  # per replica: replica | prefill | decode

    @property
    def endpoint(self) -> str:
        return self.router.endpoint

    @property
    def served_model_name(self) -> str:
        return self.replicas[0].served_model_name

    def role(self, index: int) -> str:
        return self.roles[index] if self.roles else "replica"

    def worker_url(self, index: int) -> str:
        """Where the router reaches server ``index``."""
        return worker_url(self.replicas[index])

    def label(self, index: int) -> str:
        """How logs, status and errors name server ``index``: "replica 1", "prefill 0",
        "decode 0" (numbered within its role), "replica 0 of MODEL" with several models."""
        return _server_label([self.role(i) for i in range(len(self.replicas))],
                             [r.request or r for r in self.replicas], index)

    @property
    def models(self) -> list[str]:
        """Every served model name, in the order of the --serve lines."""
        return list(dict.fromkeys(r.served_model_name for r in self.replicas))

    @property
    def gpus(self) -> int:
        return sum(r.topology.world_size for r in self.replicas)

    def as_dict(self) -> dict:
        return {"fleet_id": self.fleet_id, "router": self.router.as_dict(),
                "models": self.models,
                "replicas": [{"role": self.role(i), "index": i,
                              "model": r.served_model_name, "url": worker_url(r),
                              **r.as_dict()} for i, r in enumerate(self.replicas)]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


def worker_url(plan: LaunchPlan) -> str:
    """Where the router reaches a replica: its head's address (or the one address its server
    listens on, ``--host``) and API port."""
    host = option_value(plan.nodes[0].argv, "--host") if plan.nodes else None
    if not host or host in ("0.0.0.0", "::"):
        host = plan.head_ip
    return f"http://{host}:{plan.ports.api}"


@dataclass(frozen=True)
class Share:
    """One replica's part of the allocation."""

    nodes: tuple[str, ...]
    gpus_per_node: int | None
    devices: str | None  # CUDA_VISIBLE_DEVICES for a replica packed with others on a node


def split(cluster: Cluster, replicas: int) -> list[Share]:
    """The allocation's GPUs in ``replicas`` equal shares, or PyserveError naming the numbers."""
    if not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise PyserveError(f"--replicas must be a whole number from 1 to {MAX_REPLICAS}, "
                           f"got {replicas!r}")
    nodes, per_node = cluster.nodes, cluster.gpus_per_node
    if per_node is None:
        # The CPU engine: one replica per node, or several sharing one node's cores.
        if replicas % len(nodes) and len(nodes) % replicas:
            raise PyserveError(f"{replicas} replicas do not split {len(nodes)} node(s) evenly")
        if replicas >= len(nodes):
            return [Share((nodes[i * len(nodes) // replicas],), None, None)
                    for i in range(replicas)]
        size = len(nodes) // replicas
        return [Share(nodes[i * size:(i + 1) * size], None, None) for i in range(replicas)]
    total = len(nodes) * per_node
    if total % replicas:
        raise PyserveError(f"{replicas} replicas do not split {len(nodes)} node(s) x {per_node} "
                           f"GPUs = {total} evenly")
    share = total // replicas
    if share <= per_node and per_node % share:
        raise PyserveError(f"a replica's {share} GPUs do not divide a node's {per_node}")
    if share > per_node and share % per_node:
        raise PyserveError(f"a replica's {share} GPUs are not whole nodes of {per_node}")
    return carve(cluster, [share] * replicas)


@dataclass(frozen=True)
class ServeGroup:
    """One model of a fleet: its request (model, topology, vLLM args), how many replicas, and
    how many of the allocation's GPUs they share (None: an equal share)."""

    request: LaunchRequest
    replicas: int = 1
    gpus: int | None = None
    role: str = "replica"  # replica | prefill | decode


def carve(cluster: Cluster, sizes: list[int]) -> list[Share]:
    """Consecutive GPUs of the allocation for replicas of these sizes, in order: a replica of
    a node or less stays on one node, a larger one takes whole nodes."""
    nodes, per_node = cluster.nodes, cluster.gpus_per_node
    if per_node is None:  # the CPU engine: replicas take the nodes in turn
        return [Share((nodes[i % len(nodes)],), None, None) for i in range(len(sizes))]
    total = len(nodes) * per_node
    if sum(sizes) > total:
        raise PyserveError(f"the models ask for {sum(sizes)} GPUs; the allocation has "
                           f"{len(nodes)} node(s) x {per_node} = {total}")
    shares, cursor = [], 0
    for size in sizes:
        node, first = divmod(cursor, per_node)
        if size <= per_node:
            if first + size > per_node:
                raise PyserveError(f"a replica of {size} GPUs would straddle node {nodes[node]} "
                                   f"(GPU {first} onwards); give --gpus that fill nodes in "
                                   "order")
            devices = ",".join(str(d) for d in range(first, first + size))
            shares.append(Share((nodes[node],), size, devices))
        else:
            if first or size % per_node:
                raise PyserveError(f"a replica of {size} GPUs must take whole nodes of "
                                   f"{per_node}, starting at a node")
            shares.append(Share(nodes[node:node + size // per_node], per_node, None))
        cursor += size
    return shares


def make_fleet(request: LaunchRequest, cluster: Cluster, replicas: int,
               is_free: Callable[[int], bool], resolve: Callable[[str], str],
               launch_suffix: str = "", policy: str = "round_robin",
               find_config: FindConfig | None = None,
               router_host: str = "127.0.0.1",
               listen: str = "0.0.0.0",
               is_free_here: Callable[[int], bool] | None = None,
               groups: list[ServeGroup] | None = None) -> FleetPlan:
    """``replicas`` launch plans of ``request`` over equal shares of ``cluster`` and the router
    in front on ``request.port``; or, with ``groups`` (several models), each group's replicas
    over its share, behind the router in inference-gateway mode. ``is_free``: whether a port is
    free where the router and replicas run (see ``make_plan``); ``listen``: the interface of
    the public port (``--router-host``)."""
    if policy not in ROUTER_POLICIES:
        raise PyserveError(f"--router-policy {policy!r}: choose from {', '.join(ROUTER_POLICIES)}")
    if groups:
        shares, requests_, roles = _group_shares(cluster, groups)
    else:
        shares = split(cluster, replicas)
        requests_ = [request] * len(shares)
        roles = ["replica"] * len(shares)
    pd = "prefill" in roles
    if len(shares) > MAX_REPLICAS:
        raise PyserveError(f"{len(shares)} servers in one fleet; at most {MAX_REPLICAS}")
    if not 1 <= request.port <= 65535:
        raise PyserveError(f"--port must be between 1 and 65535, got {request.port}")
    here = is_free_here or is_free
    if not here(request.port):
        raise PyserveError(f"port {request.port} is already in use on this host; choose another "
                           "--port")
    # The fleet's own window: the free ports after --port, in order (every server's API port,
    # NIXL side channel, then the router's admin and metrics ports), each probed and none
    # given twice; a server's internal ports come from its own job window (make_plan).
    taken: set[int] = {request.port}
    cursor = request.port

    def free(port: int) -> bool:
        return port not in taken and is_free(port)

    def next_port(probe: Callable[[int], bool] = is_free) -> int:
        nonlocal cursor
        cursor = _next_free(cursor + 1, lambda port: port not in taken and probe(port))
        taken.add(cursor)
        return cursor

    plans = []
    servers_on = Counter(node for share in shares for node in share.nodes)
    for index, (share, one) in enumerate(zip(shares, requests_, strict=True)):
        api = next_port()
        env = dict(one.env)
        if cluster.gpus_per_node is None and any(servers_on[n] > 1 for n in share.nodes):
            # vLLM's CPU engine pins its threads to the host's cores ("auto"): servers sharing
            # a host then pin onto the same cores, and their busy loops starve each other's
            # helper threads; a P/D request waited out the whole 30 s NIXL lease each time on
            # 2 cores (1.3-4 s unpinned). Left to the OS unless --env says otherwise.
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        extra_args: list[str] = []
        if roles[index] in ("prefill", "decode"):
            if option_given(one.vllm_args, "--kv-transfer-config",
                                                 shortest=len("--kv-transfer")):
                raise PyserveError("--kv-transfer-config is set by pyserve for --prefill/--decode "
                                   "(NIXL, one producer or consumer per server); leave it out")
            for name in ("VLLM_NIXL_SIDE_CHANNEL_HOST", "VLLM_NIXL_SIDE_CHANNEL_PORT"):
                if name in env:
                    raise PyserveError(f"--env {name}: pyserve plans each P/D server's NIXL "
                                       "side channel itself; leave it out")
            # NIXL's side channel: where the decode servers ask a prefill server for its KV
            # blocks. One port per server; the host is the server's own address.
            env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = resolve(share.nodes[0])
            env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(next_port())
            extra_args = ["--kv-transfer-config", kv_transfer_config(
                roles[index], gpus=cluster.gpus_per_node is not None)]
        if not cluster.in_slurm and not option_given(one.vllm_args, "--host"):
            # Router and servers on this one host: the servers listen on loopback only, and
            # the gate's port is the fleet's one way in.
            extra_args += ["--host", "127.0.0.1"]
        if share.devices is not None:
            if "CUDA_VISIBLE_DEVICES" in env:
                raise PyserveError("replicas are given their GPUs; do not set "
                                   "CUDA_VISIBLE_DEVICES with --env")
            env["CUDA_VISIBLE_DEVICES"] = share.devices
        sub = replace(cluster, nodes=share.nodes, gpus_per_node=share.gpus_per_node,
                      job_id=f"{cluster.job_id}.r{index}")
        try:
            plan = make_plan(replace(one, port=api, env=env,
                                     vllm_args=[*one.vllm_args, *extra_args]), sub,
                             lambda port, api=api: port == api or free(port), resolve,
                             launch_suffix=f"{launch_suffix}r{index}" if launch_suffix
                             else f"r{index}", find_config=find_config)
        except PyserveError as exc:
            # The topology rules speak of "the allocation"; here that is one server's share.
            raise PyserveError(f"{_server_label(roles, requests_, index)} is planned on its "
                               f"share ({_share_words(share)}): {exc}") from None
        plans.append(plan)
        taken.update({plan.ports.api, plan.ports.dp_rpc, plan.ports.master, plan.ports.ray})
    names = {p.served_model_name for p in plans}
    if groups and not pd and len(names) < len(groups):
        raise PyserveError("two --serve lines serve the same model name; give each its own "
                           "--served-model-name")
    admin = next_port(here)  # the router's, on the launching host
    metrics = next_port(here)
    urls = [worker_url(p) for p in plans]
    router = RouterPlan(host=router_host, port=request.port, metrics_port=metrics,
                        admin_port=admin, listen=listen,
                        policy=policy, worker_urls=tuple(urls),
                        igw=bool(groups) and not pd and len(names) > 1,
                        prefill_urls=tuple(u for u, r in zip(urls, roles, strict=True)
                                           if r == "prefill"),
                        decode_urls=tuple(u for u, r in zip(urls, roles, strict=True)
                                          if r == "decode"))
    return FleetPlan(router=router, replicas=plans, job_id=cluster.job_id,
                     fleet_id=f"{cluster.job_id}-{launch_suffix}" if launch_suffix
                     else cluster.job_id, roles=roles)


def _server_label(roles: list[str], requests_: list[LaunchRequest], index: int) -> str:
    role = roles[index]
    number = sum(1 for r in roles[:index] if r == role)
    if role == "replica" and len({r.model for r in requests_}) > 1:
        same = sum(1 for r in requests_[:index] if r.model == requests_[index].model)
        return f"replica {same} of {requests_[index].model}"
    return f"{role} {number}"


def _share_words(share: Share) -> str:
    if share.gpus_per_node is None:
        return f"{len(share.nodes)} node(s), CPU engine"
    return f"{len(share.nodes)} node(s) x {share.gpus_per_node} GPUs"


def kv_transfer_config(role: str, gpus: bool) -> str:
    """vLLM's --kv-transfer-config for a prefill (KV producer) or decode (KV consumer) server
    with NIXL; without GPUs (the CPU engine) the KV buffer is host memory."""
    config = {"kv_connector": "NixlConnector",
              "kv_role": "kv_producer" if role == "prefill" else "kv_consumer"}
    if not gpus:
        config["kv_buffer_device"] = "cpu"
    return json.dumps(config, separators=(",", ":"))


def pd_groups(request: LaunchRequest, prefill: int, decode: int,
              prefill_tp: int | None = None, decode_tp: int | None = None,
              total_gpus: int | None = None) -> list[ServeGroup]:
    """``--prefill N --decode M``: two groups of the same model; each server's GPUs are its
    role's TP when given, else equal shares of the allocation."""
    for name, value in (("--prefill", prefill), ("--decode", decode)):
        if not isinstance(value, int) or value < 1:
            raise PyserveError(f"{name} must be at least 1, got {value!r}")
    if (prefill_tp is None) != (decode_tp is None):
        raise PyserveError("give both --prefill-tp and --decode-tp, or neither")
    per_server = None
    if total_gpus is not None and prefill_tp is None:
        if total_gpus % (prefill + decode):
            raise PyserveError(f"{prefill} prefill + {decode} decode servers do not split "
                               f"{total_gpus} GPUs evenly; give --prefill-tp/--decode-tp")
        per_server = total_gpus // (prefill + decode)
    groups = []
    for role, count, tp in (("prefill", prefill, prefill_tp), ("decode", decode, decode_tp)):
        one = replace(request, tp=tp if tp is not None else request.tp)
        gpus = None if total_gpus is None else count * (tp if tp is not None else per_server)
        groups.append(ServeGroup(request=one, replicas=count, gpus=gpus, role=role))
    return groups


def _group_shares(cluster: Cluster, groups: list[ServeGroup]
                  ) -> tuple[list[Share], list[LaunchRequest], list[str]]:
    per_node = cluster.gpus_per_node
    total = len(cluster.nodes) * (per_node or 1)
    unsized = [g for g in groups if g.gpus is None]
    given = sum(g.gpus for g in groups if g.gpus is not None)
    if per_node is not None and unsized:
        rest = total - given
        if rest <= 0 or rest % len(unsized):
            raise PyserveError(f"{rest} GPUs left do not split evenly over the {len(unsized)} "
                               "--serve line(s) without --gpus")
    sizes, requests_, roles = [], [], []
    for group in groups:
        if not isinstance(group.replicas, int) or group.replicas < 1:
            raise PyserveError(f"--replicas must be at least 1, got {group.replicas!r}")
        share = group.gpus if group.gpus is not None else (
            (total - given) // len(unsized) if per_node is not None else group.replicas)
        if share % group.replicas:
            raise PyserveError(f"{group.request.model}: {share} GPUs do not split over "
                               f"{group.replicas} replicas")
        sizes += [share // group.replicas] * group.replicas
        requests_ += [group.request] * group.replicas
        roles += [group.role] * group.replicas
    return carve(cluster, sizes), requests_, roles


def _next_free(start: int, free: Callable[[int], bool]) -> int:
    for port in range(start, min(start + 1000, 65536)):
        if free(port):
            return port
    raise PyserveError(f"no free port from {start} on for a replica or the router")
