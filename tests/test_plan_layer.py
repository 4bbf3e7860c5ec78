"""The pure plan layer called directly: a ``Cluster`` in, a checked plan out (no detection, no
sockets, no subprocess). Each backend's per-node commands are asserted exactly."""

import pytest

from pyservecli.errors import PyserveError
from pyservecli.plan.backends import BACKENDS, get_backend, node_commands
from pyservecli.plan.hosts import Cluster
from pyservecli.plan.launch import LaunchRequest, make_plan
from pyservecli.plan.offline import OfflineRequest, plan_offline
from pyservecli.plan.placement import place
from pyservecli.plan.ports import Ports, job_window, offline_rendezvous_port
from pyservecli.plan.topology import plan_topology

ADDRESSES = {"gpu1": "10.9.0.1", "gpu2": "10.9.0.2"}
PORTS = Ports(api=8000, dp_rpc=30001, master=30002, ray=30003)


def two_nodes(gpus=8, job="777") -> Cluster:
    return Cluster(nodes=("gpu1", "gpu2"), gpus_per_node=gpus, job_id=job, in_slurm=True,
                   gpu_source="test")


def resolve(host: str) -> str:
    return ADDRESSES.get(host, host)


def test_placement_pins_each_node_address_only_across_nodes():
    placed = place("Qwen/Qwen3-30B-A3B-FP8", two_nodes(), tp=8, ep=True, resolve=resolve)
    t = placed.topology
    assert (t.nodes, t.tp, t.dp, t.dp_local, t.ep, t.backend) == (2, 8, 2, 1, 16, "rpc")
    assert placed.head_ip == "10.9.0.1" and placed.model_dir is None
    assert placed.node_env("gpu2") == {"VLLM_HOST_IP": "10.9.0.2"}
    one = Cluster(nodes=("gpu1",), gpus_per_node=8, job_id="1", in_slurm=False, gpu_source="t")
    assert place("m", one, tp=2, resolve=resolve).node_env("gpu1") == {}
    # A name that does not resolve is never pinned as an "address".
    assert place("m", two_nodes(), tp=8, resolve=lambda h: h).host_ips == {}


def test_placement_checks_a_local_model_against_the_topology(config_dir):
    model = config_dir("qwen3-8b")  # 32 attention heads
    with pytest.raises(PyserveError, match="TP 3"):
        place(str(model), Cluster(("n",), 3, "1", False, "t"), tp=3, resolve=resolve)


def test_make_plan_takes_ports_the_head_says_are_free():
    taken = set(job_window("777")[:2])
    plan = make_plan(LaunchRequest(model="m", tp=8), two_nodes(), is_free=lambda p: p not in taken,
                     resolve=resolve)
    window = job_window("777")
    assert (plan.ports.dp_rpc, plan.ports.master, plan.ports.ray) == tuple(window[2:5])
    with pytest.raises(PyserveError, match="port 8000 is already in use"):
        make_plan(LaunchRequest(model="m", tp=8), two_nodes(), is_free=lambda p: p != 8000,
                  resolve=resolve)


def test_make_plan_env_nsys_and_served_name(tmp_path):
    request = LaunchRequest(model="m", tp=8, env={"BIND": "cpu{node_rank}"},
                            vllm_args=["--served-model-name", "mine"], nsys_dir=tmp_path)
    plan = make_plan(request, two_nodes(), is_free=lambda _p: True, resolve=resolve)
    assert [n.env for n in plan.nodes] == [{"BIND": "cpu0", "VLLM_HOST_IP": "10.9.0.1"},
                                           {"BIND": "cpu1", "VLLM_HOST_IP": "10.9.0.2"}]
    assert plan.nodes[1].argv[:2] == ["nsys", "profile"]
    assert f"--output={tmp_path}/777-node1" in plan.nodes[1].argv
    assert plan.stop_signal == "INT" and plan.served_model_name == "mine"
    assert plan.has_gpus and plan.endpoint == "http://10.9.0.1:8000/v1"


def commands(backend, tp, pp=1, dp=None, gpus=8):
    topology = plan_topology(2, gpus, tp=tp, pp=pp, dp=dp, backend=backend)
    return [c.argv for c in node_commands(topology, "M", ["gpu1", "gpu2"], "10.9.0.1", PORTS,
                                          ["--x", "1"])]


def test_rpc_node_commands():
    head, worker = commands("rpc", tp=4, dp=4)
    serve = ["vllm", "serve", "M"]
    assert head == [*serve, "--port", "8000", "--tensor-parallel-size", "4",
                    "--data-parallel-size", "4", "--data-parallel-size-local", "2",
                    "--data-parallel-address", "10.9.0.1", "--data-parallel-rpc-port", "30001",
                    "--x", "1"]
    assert worker == [*serve, "--tensor-parallel-size", "4", "--data-parallel-size", "4",
                      "--data-parallel-size-local", "2", "--data-parallel-start-rank", "2",
                      "--data-parallel-address", "10.9.0.1", "--data-parallel-rpc-port", "30001",
                      "--headless", "--x", "1"]


def test_mp_node_commands():
    head, worker = commands("mp", tp=8, pp=2)
    assert head == ["vllm", "serve", "M", "--port", "8000", "--tensor-parallel-size", "8",
                    "--pipeline-parallel-size", "2", "--nnodes", "2", "--node-rank", "0",
                    "--master-addr", "10.9.0.1", "--master-port", "30002", "--x", "1"]
    assert worker == ["vllm", "serve", "M", "--tensor-parallel-size", "8",
                      "--pipeline-parallel-size", "2", "--nnodes", "2", "--node-rank", "1",
                      "--master-addr", "10.9.0.1", "--master-port", "30002", "--headless",
                      "--x", "1"]


def test_ray_node_commands_and_head_setup():
    head, worker = commands("ray", tp=8, dp=2)
    assert head == ["vllm", "serve", "M", "--port", "8000", "--tensor-parallel-size", "8",
                    "--data-parallel-size", "2", "--data-parallel-backend", "ray", "--x", "1"]
    assert worker == ["ray", "start", "--address", "10.9.0.1:30003", "--block"]
    topology = plan_topology(2, 8, tp=8, dp=2, backend="ray")
    steps = get_backend("ray").head_setup(topology, "10.9.0.1", PORTS, "py")
    assert steps[0].argv == ["ray", "start", "--head", "--node-ip-address", "10.9.0.1",
                             "--port", "30003"]
    assert steps[1].argv[:3] == ["py", "-m", "pyservecli.workers.raywait"]
    assert steps[1].argv[steps[1].argv.index("--nodes") + 1] == "2"
    assert get_backend("ray").tools == ("vllm", "ray")


def test_single_node_commands_have_every_parallel_flag():
    topology = plan_topology(1, 8, tp=2, dp=4, ep=True)
    [command] = node_commands(topology, "M", ["h"], "127.0.0.1", PORTS)
    assert topology.backend == "single"
    assert command.argv == ["vllm", "serve", "M", "--port", "8000", "--tensor-parallel-size",
                            "2", "--enable-expert-parallel", "--data-parallel-size", "4"]
    for name in ("single", "rpc", "mp"):
        assert BACKENDS[name].head_setup(topology, "h", PORTS, "py") == []


@pytest.mark.parametrize("backend,tp,message", [
    ("single", 4, "runs on one node"),
    ("single", 16, "places whole replicas on one node"),
    ("rpc", 16, "places whole replicas on one node"),
    ("mp", 4, "spreads one replica over several nodes"),
    ("nope", 4, "unknown backend 'nope'"),
])
def test_each_backend_refuses_what_it_cannot_run(backend, tp, message):
    with pytest.raises(PyserveError, match=message):
        plan_topology(2, 8, tp=tp, backend=backend)


def test_offline_plan_uses_the_same_placement_and_its_own_rendezvous_port(tmp_path):
    request = OfflineRequest(model="m", tp=2, input_len=8, output_len=4)
    plan = plan_offline(request, two_nodes(gpus=4), tmp_path / "out", tmp_path, resolve=resolve,
                        python="py")
    assert plan.procs_per_node == 4 and plan.topology.dp == 4
    assert plan.master_port == offline_rendezvous_port("777") == job_window("777")[4]
    assert plan.head_ip == "10.9.0.1"
    assert plan.node_env == [{"VLLM_HOST_IP": "10.9.0.1"}, {"VLLM_HOST_IP": "10.9.0.2"}]
    with pytest.raises(PyserveError, match="does not fit"):
        plan_offline(OfflineRequest(model="m", tp=4, dp=4, input_len=8, output_len=4),
                     two_nodes(gpus=4), tmp_path, tmp_path, resolve=resolve)


def test_taken_ports_on_the_head_are_replanned_and_the_api_port_refused(tmp_path, monkeypatch):
    """Inside SLURM only the head can say which ports are taken (jobs whose windows meet, two
    launches in one allocation): the launcher asks it (srun ... portcheck) and re-plans."""
    from pyservecli.run.launcher import check_head_ports

    plan = make_plan(LaunchRequest(model="m", tp=8), two_nodes(), is_free=lambda _p: True,
                     resolve=resolve, launch_suffix="abc")
    window = list(job_window("777"))
    taken = window[:3]  # the three ports the plan chose
    srun = tmp_path / "srun"
    srun.write_text("#!/bin/sh\necho " + " ".join(map(str, taken)) + "\nexit 3\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    replanned = check_head_ports(plan)
    assert {replanned.ports.dp_rpc, replanned.ports.master, replanned.ports.ray} == \
        set(window[3:6])
    assert replanned.launch_id == plan.launch_id == "777-abc"
    assert "--data-parallel-rpc-port" in replanned.nodes[0].argv
    assert str(window[3]) in replanned.nodes[0].argv
    srun.write_text("#!/bin/sh\necho 8000\nexit 3\n")
    with pytest.raises(PyserveError, match="port 8000 is already in use on gpu1"):
        check_head_ports(plan)
