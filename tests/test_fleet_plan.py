"""Replicas behind a router, planned: shares of the allocation, ports that never collide,
the router's command, refusals before anything starts."""

import json
import re

import pytest

from pyservecli.errors import PyserveError
from pyservecli.plan.fleet import make_fleet, pd_groups, split
from pyservecli.plan.hosts import Cluster
from pyservecli.plan.launch import LaunchRequest

from .conftest import run_pyserve


def cluster(nodes, per_node, job="42"):
    return Cluster(nodes=tuple(nodes), gpus_per_node=per_node, job_id=job, in_slurm=True,
                   gpu_source="test")


def test_shares_pack_nodes_or_take_whole_nodes():
    packed = split(cluster(["a", "b"], 8), 4)
    assert [(s.nodes, s.gpus_per_node, s.devices) for s in packed] == [
        (("a",), 4, "0,1,2,3"), (("a",), 4, "4,5,6,7"),
        (("b",), 4, "0,1,2,3"), (("b",), 4, "4,5,6,7")]
    whole = split(cluster(["a", "b", "c", "d"], 8), 2)
    assert [(s.nodes, s.devices) for s in whole] == [(("a", "b"), None), (("c", "d"), None)]
    cpu = split(cluster(["a"], None), 2)
    assert [(s.nodes, s.gpus_per_node) for s in cpu] == [(("a",), None), (("a",), None)]
    for nodes, per_node, replicas, message in (
        (["a"], 8, 3, "do not split 1 node(s) x 8 GPUs = 8 evenly"),
        (["a", "b", "c"], 2, 2, "are not whole nodes"),
        (["a"], 8, 0, "--replicas must be"),
    ):
        with pytest.raises(PyserveError, match=re.escape(message)):
            split(cluster(nodes, per_node), replicas)


def test_fleet_ports_never_collide_and_the_router_lists_every_replica():
    fleet = make_fleet(LaunchRequest(model="m", port=9000), cluster(["a", "b"], 8), 4,
                       is_free=lambda _p: True, resolve=lambda h: {"a": "10.0.0.1",
                                                                   "b": "10.0.0.2"}[h],
                       launch_suffix="abc", router_host="10.0.0.1")
    ports = [p for r in fleet.replicas
             for p in (r.ports.api, r.ports.dp_rpc, r.ports.master, r.ports.ray)]
    ports += [fleet.router.port, fleet.router.metrics_port]
    assert len(ports) == len(set(ports))
    assert fleet.router.port == 9000
    urls = [f"http://{r.head_ip}:{r.ports.api}" for r in fleet.replicas]
    assert urls == ["http://10.0.0.1:9001", "http://10.0.0.1:9002", "http://10.0.0.2:9003",
                    "http://10.0.0.2:9004"]
    argv = fleet.router.argv()
    assert argv[:1] == ["vllm-router"] and argv[argv.index("--worker-urls") + 1:] == urls
    assert [r.nodes[0].env["CUDA_VISIBLE_DEVICES"] for r in fleet.replicas] == \
        ["0,1,2,3", "4,5,6,7", "0,1,2,3", "4,5,6,7"]
    assert len({r.launch_id for r in fleet.replicas}) == 4
    assert all(r.topology.tp * r.topology.dp == 4 for r in fleet.replicas)
    assert fleet.gpus == 16 and fleet.fleet_id == "42-abc"


def test_a_taken_port_is_skipped_and_the_router_port_refused():
    taken = {9001, 9002}
    fleet = make_fleet(LaunchRequest(model="m", port=9000), cluster(["a"], 2), 2,
                       is_free=lambda p: p not in taken, resolve=lambda h: "10.0.0.1")
    assert [r.ports.api for r in fleet.replicas] == [9003, 9004]
    with pytest.raises(PyserveError, match="port 9000 is already in use"):
        make_fleet(LaunchRequest(model="m", port=9000), cluster(["a"], 2), 2,
                   is_free=lambda p: p != 9000, resolve=lambda h: "10.0.0.1")


def test_dry_run_shows_every_process(config_dir):
    model = str(config_dir("qwen3-8b"))
    result = run_pyserve("launch", model, "--replicas", "2", "--nodelist", "n1",
                         "--gpus-per-node", "2", "--gpu-memory", "80", "--router-policy",
                         "power_of_two", "--dry-run", "--format", "json")
    assert result.returncode == 0, result.stderr
    fleet = json.loads(result.stdout)
    assert fleet["router"]["policy"] == "power_of_two"
    assert "--policy" in fleet["router"]["argv"]
    assert [r["role"] for r in fleet["replicas"]] == ["replica", "replica"]
    assert all(r["topology"]["tp"] == 1 and r["topology"]["dp"] == 1 for r in fleet["replicas"])
    text = run_pyserve("launch", model, "--replicas", "2", "--nodelist", "n1",
                       "--gpus-per-node", "2", "--dry-run")
    assert text.returncode == 0, text.stderr
    assert text.stdout.count("vllm serve") == 2 and "vllm-router" in text.stdout


def test_replica_options_refused_where_they_mean_nothing(config_dir):
    model = str(config_dir("qwen3-8b"))
    for args, message in (
        (["--restart"], "--restart and --router-policy go with --replicas"),
        (["--replicas", "3", "--gpus-per-node", "2"], "do not split"),
        (["--replicas", "2", "--gpus-per-node", "2", "--env", "CUDA_VISIBLE_DEVICES=0"],
         "do not set CUDA_VISIBLE_DEVICES"),
        (["--replicas", "2", "--gpus-per-node", "2", "--router-policy", "nope"],
         "Invalid value for '--router-policy'"),
        (["--replicas", "0", "--gpus-per-node", "2"], "--replicas must be a whole number"),
        (["--replicas", "2", "--gpus-per-node", "4", "--tp", "4"],
         "replica 0 is planned on its share (1 node(s) x 2 GPUs): TP 4 must use every GPU"),
        (["--prefill", "1", "--decode", "1", "--gpus-per-node", "4", "--tp", "4"],
         "prefill 0 is planned on its share (1 node(s) x 2 GPUs)"),
        (["--serve", f"{model} --tp 2 'unbalanced", "--gpus-per-node", "2"],
         "No closing quotation"),
    ):
        head = [] if "--serve" in args else [model]
        result = run_pyserve("launch", *head, "--nodelist", "n1", *args, "--dry-run")
        assert result.returncode == 2, result.stdout
        assert message in result.stderr
        assert result.stderr.startswith("pyserve: error:"), result.stderr


def test_prefill_decode_plan_has_roles_nixl_and_a_pd_router(config_dir):
    model = str(config_dir("qwen3-8b"))
    result = run_pyserve("launch", model, "--prefill", "1", "--decode", "2", "--nodelist", "n1",
                         "--gpus-per-node", "4", "--prefill-tp", "2", "--decode-tp", "1",
                         "--dry-run", "--format", "json")
    assert result.returncode == 0, result.stderr
    fleet = json.loads(result.stdout)
    roles = [r["role"] for r in fleet["replicas"]]
    assert roles == ["prefill", "decode", "decode"]
    assert [r["topology"]["tp"] for r in fleet["replicas"]] == [2, 1, 1]
    envs = [r["nodes"][0]["env"] for r in fleet["replicas"]]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "2", "3"]
    side = [e["VLLM_NIXL_SIDE_CHANNEL_PORT"] for e in envs]
    assert len(set(side)) == 3
    for replica, role in zip(fleet["replicas"], roles, strict=True):
        argv = replica["nodes"][0]["argv"]
        config = json.loads(argv[argv.index("--kv-transfer-config") + 1])
        assert config == {"kv_connector": "NixlConnector",
                          "kv_role": "kv_producer" if role == "prefill" else "kv_consumer"}
    router = fleet["router"]
    assert router["mode"] == "pd"
    argv = router["argv"]
    assert "--vllm-pd-disaggregation" in argv
    assert argv.count("--prefill") == 1 and argv.count("--decode") == 2
    for args, message in ((["--prefill", "1"], "--prefill and --decode go together"),
                          (["--prefill", "1", "--decode", "1", "--replicas", "2"],
                           "do not combine"),
                          (["--prefill", "1", "--decode", "2"], "do not split 4 GPUs evenly"),
                          (["--prefill", "1", "--decode", "1", "--prefill-tp", "2"],
                           "give both --prefill-tp and --decode-tp")):
        refused = run_pyserve("launch", model, "--nodelist", "n1", "--gpus-per-node", "4",
                              *args, "--dry-run")
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr


def test_sweep_serve_lines_plan_like_launch(config_dir):
    """`pyserve sweep --serve '...'` reads its lines with the launch command's options, the
    new ones included: a plain line plans one server, a --replicas line a fleet."""
    from pyservecli import api
    from pyservecli.cli.serve import parse_launch_line

    model = str(config_dir("qwen3-8b"))
    one = api.prepare_launch(dry_run=True, spec=parse_launch_line(
        f"{model} --tp 2 --nodelist n1 --gpus-per-node 2 --max-model-len 4096"))
    assert not one.is_fleet and one.plan.topology.tp == 2
    fleet = api.prepare_launch(dry_run=True, spec=parse_launch_line(
        f"{model} --replicas 2 --nodelist n1 --gpus-per-node 2"))
    assert fleet.is_fleet and len(fleet.plan.replicas) == 2


def test_the_fleet_stops_when_a_model_or_a_pd_side_has_no_server_left(tmp_path):
    """A dead replica is survived while its model (with P/D: its side) has another server
    serving or restarting; when none is left the endpoint cannot serve it and the fleet stops."""
    from pyservecli.plan.fleet import ServeGroup, pd_groups
    from pyservecli.run.fleet import Fleet
    from pyservecli.run.launcher import LaunchOptions

    def fleet_of(groups):
        plan = make_fleet(LaunchRequest(model="m", port=9000), cluster(["a"], 4), 1,
                          is_free=lambda _p: True, resolve=lambda _h: "10.0.0.1",
                          launch_suffix="x", groups=groups)
        fleet = Fleet(plan, LaunchOptions(workspace=tmp_path), say=lambda _line: None)
        for replica in fleet.replicas:
            replica.state = "serving"
        return fleet

    def states(fleet, *values):
        for replica, value in zip(fleet.replicas, values, strict=True):
            replica.state = value
        return fleet.lost_groups()

    pd = fleet_of(pd_groups(LaunchRequest(model="m", port=9000), 2, 2, total_gpus=4))
    assert pd.plan.roles == ["prefill", "prefill", "decode", "decode"]
    assert states(pd, "dead", "serving", "serving", "dead") is None
    assert states(pd, "dead", "restarting", "dead", "serving") is None
    assert states(pd, "dead", "dead", "serving", "serving") == "every prefill server of m died"
    assert states(pd, "dead", "dead", "dead", "dead") == "every replica has died"
    two = fleet_of([ServeGroup(LaunchRequest(model=name, port=9000), replicas=2)
                    for name in ("a", "b")])
    assert states(two, "dead", "serving", "serving", "dead") is None
    assert states(two, "serving", "serving", "dead", "dead") == "every replica of b died"
    states(two, "restarting", "dead", "dead", "dead")  # none serving: nothing to poll
    with pytest.raises(PyserveError, match="every replica of b died; stopping"):
        two.check_replicas()


@pytest.mark.parametrize("shape", [["MODEL", "--replicas", "2"],
                                   ["MODEL", "--prefill", "1", "--decode", "1"],
                                   ["--serve", "MODEL", "--serve", "MODEL --served-model-name b"]])
def test_nsys_wraps_every_server_of_a_fleet_with_its_own_report_and_images_run_them_all(
        config_dir, tmp_path, shape):
    model = str(config_dir("qwen3-8b"))
    args = [model if a == "MODEL" else a.replace("MODEL", model) for a in shape]
    result = run_pyserve("launch", *args, "--nsys", "--workspace", str(tmp_path),
                         "--nodelist", "n1", "--gpus-per-node", "2", "--gpu-memory", "80",
                         "--dry-run", "--format", "json")
    assert result.returncode == 0, result.stderr
    fleet = json.loads(result.stdout)
    argvs = [r["nodes"][0]["argv"] for r in fleet["replicas"]]
    assert all(argv[:2] == ["nsys", "profile"] and "vllm" in argv for argv in argvs)
    reports = [next(a for a in argv if a.startswith("--output=")) for argv in argvs]
    assert len(set(reports)) == 2
    assert all(r.startswith(f"--output={tmp_path / 'nsys'}/") for r in reports)
    # In containers: the same servers, each node script running in the image.
    image = run_pyserve("launch", *args, "--image", "img:1", "--nodelist", "n1",
                        "--gpus-per-node", "2", "--dry-run")
    assert image.returncode == 0, image.stderr
    assert image.stdout.rstrip().endswith("image img:1, runtime docker")
    # --force would have each server's node script replace the image under the others.
    refused = run_pyserve("launch", *args, "--image", "img:1", "--force", "--nodelist", "n1",
                          "--gpus-per-node", "2", "--dry-run")
    assert refused.returncode == 2
    assert "reload the image once with `pyserve image load TARBALL --force`" in refused.stderr


def test_every_port_of_a_pd_fleet_comes_from_its_window_and_none_twice():
    """#23 item 9: NIXL side channels were --port+100+i, outside the fleet's ports and never
    probed (a fleet started at --port+100 took them); --prefill 100 --decode 100 collided with
    itself. Now: the free ports after --port, in order, each probed."""
    taken = {9003, 9010}  # another launch's
    fleet = make_fleet(LaunchRequest(model="m", port=9000), cluster(["a"], None), 1,
                       is_free=lambda p: p not in taken, resolve=lambda h: "10.0.0.1",
                       groups=pd_groups(LaunchRequest(model="m", port=9000), 100, 100))
    public = {fleet.router.port, fleet.router.admin_port, fleet.router.metrics_port}
    api = [r.ports.api for r in fleet.replicas]
    side = [int(r.nodes[0].env["VLLM_NIXL_SIDE_CHANNEL_PORT"]) for r in fleet.replicas]
    window = sorted(public | set(api) | set(side))
    assert len(window) == 3 + 2 * 200 and not taken & set(window)
    assert window[0] == 9000 and window[-1] == 9000 + len(window) + len(taken) - 1
    internal = [p for r in fleet.replicas for p in (r.ports.dp_rpc, r.ports.master, r.ports.ray)]
    assert not set(internal) & set(window) and not set(internal) & taken
    with pytest.raises(PyserveError, match="at most 256"):
        make_fleet(LaunchRequest(model="m", port=9000), cluster(["a"], None), 1,
                   is_free=lambda p: True, resolve=lambda h: "10.0.0.1",
                   groups=pd_groups(LaunchRequest(model="m", port=9000), 3000, 3000))
    with pytest.raises(PyserveError, match="--kv-transfer-config is set by pyserve"):
        request = LaunchRequest(model="m", port=9000,
                                vllm_args=["--kv-transfer-conf={}"])
        make_fleet(request, cluster(["a"], None), 1, is_free=lambda p: True,
                   resolve=lambda h: "10.0.0.1", groups=pd_groups(request, 1, 1))


def test_cpu_servers_sharing_a_host_are_not_pinned_to_the_same_cores():
    """vLLM's CPU engine pins its threads to the host's cores; two servers on one host pinned
    onto the same cores and a 1P1D request waited the whole 30 s NIXL lease (#28). Servers
    that share a CPU host run unpinned; one alone on its node keeps vLLM's default; --env
    wins; GPU servers are left alone."""
    def binds(fleet):
        return [r.nodes[0].env.get("VLLM_CPU_OMP_THREADS_BIND") for r in fleet.replicas]

    request = LaunchRequest(model="m", port=9000)
    shared = make_fleet(request, cluster(["a"], None), 1, is_free=lambda p: True,
                        resolve=lambda h: "10.0.0.1", groups=pd_groups(request, 1, 1))
    assert binds(shared) == ["nobind", "nobind"]
    apart = make_fleet(request, cluster(["a", "b"], None), 2, is_free=lambda p: True,
                       resolve=lambda h: "10.0.0.1")
    assert binds(apart) == [None, None]
    mine = LaunchRequest(model="m", port=9000, env={"VLLM_CPU_OMP_THREADS_BIND": "0|1"})
    chosen = make_fleet(mine, cluster(["a"], None), 2, is_free=lambda p: True,
                        resolve=lambda h: "10.0.0.1")
    assert binds(chosen) == ["0|1", "0|1"]
    gpus = make_fleet(request, cluster(["a"], 2), 2, is_free=lambda p: True,
                      resolve=lambda h: "10.0.0.1")
    assert binds(gpus) == [None, None]


def test_a_local_fleets_servers_listen_on_loopback_and_its_admin_api_too():
    local = Cluster(nodes=("here",), gpus_per_node=2, job_id="7", in_slurm=False,
                    gpu_source="test")
    fleet = make_fleet(LaunchRequest(model="m", port=9000), local, 2, is_free=lambda p: True,
                       resolve=lambda h: "10.1.1.1", router_host="10.1.1.1")
    for replica in fleet.replicas:
        argv = replica.nodes[0].argv
        assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert fleet.router.worker_urls == ("http://127.0.0.1:9001", "http://127.0.0.1:9002")
    argv = fleet.router.argv()
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--prometheus-host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == str(fleet.router.admin_port) != "9000"
    assert fleet.endpoint == "http://10.1.1.1:9000/v1"
    # In SLURM the servers are elsewhere: they listen on the cluster's interface.
    remote = make_fleet(LaunchRequest(model="m", port=9000), cluster(["a"], 2), 2,
                        is_free=lambda p: True, resolve=lambda h: "10.0.0.1")
    assert "--host" not in remote.replicas[0].nodes[0].argv


def test_ports_planned_by_another_live_launcher_count_as_taken(tmp_path, monkeypatch):
    """#23 item 10: a second fleet planned while the first one's servers were loading was
    given the first one's ports (planned, not bound yet)."""
    import subprocess
    import sys

    from pyservecli.run import portreserve

    monkeypatch.setenv("PYSERVE_PORT_RESERVATIONS", str(tmp_path / "ports"))
    code = ("import sys, time; from pyservecli.run import portreserve as r; "
            "print(r.reserve([9100, 9101]), flush=True); time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**__import__("os").environ,
                                  "PYSERVE_PORT_RESERVATIONS": str(tmp_path / "ports")})
    try:
        assert other.stdout.readline().strip() == "[]"
        assert portreserve.reserved_by_other(9100) and portreserve.reserved_by_other(9101)
        assert not portreserve.reserved_by_other(9102)
        assert portreserve.reserve([9101, 9102]) == [9101]
        assert not portreserve.reserved_by_other(9102)  # ours
    finally:
        other.kill()
        other.wait()
    # Its launcher gone, the record counts for nothing and is taken over.
    assert not portreserve.reserved_by_other(9100)
    assert portreserve.reserve([9100]) == []
    portreserve.release()
    assert not (tmp_path / "ports" / "9100").exists()


def test_fleet_input_errors_are_one_line(config_dir, tmp_path):
    """The rest of #23's errors: each one `pyserve: error:` line, exit 2, nothing launched."""
    model = str(config_dir("qwen3-8b"))
    empty = tmp_path / "empty-key"
    empty.write_text("  \n")
    for args, message in (
        (["--serve", f"{model} --replicas ²"], "--replicas needs a whole number from 1 to 256"),
        (["--serve", f"{model} --replicas 5000"], "from 1 to 256"),
        ([model, "--replicas", "2", "--api-key-file", str(empty)], "is empty"),
        ([model, "--api-key-file", str(empty)], "is empty"),
        ([model, "--prefill", "1", "--decode", "1", "--env",
          "VLLM_NIXL_SIDE_CHANNEL_PORT=5"], "plans each P/D server's NIXL side channel"),
        ([model, "--replicas", "2", "--router-host", "nope"], "is not an IP address"),
        ([model, "--router-host", "127.0.0.1"], "--router-host goes with"),
    ):
        result = run_pyserve("launch", *args, "--nodelist", "n1", "--gpus-per-node", "2",
                             "--dry-run")
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert result.stderr.startswith("pyserve: error:") and "Traceback" not in result.stderr


@pytest.mark.parametrize("corrupt", [
    {"roles": "x"}, {"roles": {"router": 3, "replicas": [1, None]}}, {"state": ["ready"]},
    {"launcher_pid": "12"}, {"heartbeats": [1, 2]}, {"record": 5}, {"startup": [1]},
    {"launch_id": None, "job_id": {"a": 1}}])
def test_hand_corrupted_fleet_records_give_clear_errors(tmp_path, corrupt):
    ws = tmp_path / "ws"
    ws.mkdir()
    record = {"endpoint": "http://127.0.0.1:1/v1", "launch_id": "1-a", "job_id": "1",
              "state": "ready", "launcher_pid": 1, "launcher_host": "elsewhere",
              "heartbeat": str(ws / "hb"), "roles": {"router": {"port": 1}, "replicas": []}}
    (ws / "latest.json").write_text(json.dumps({**record, **corrupt}))
    for command in ("status", "stop"):
        result = run_pyserve(command, "--workspace", str(ws))
        out = result.stdout + result.stderr
        assert "Traceback" not in out and "unexpected" not in out, (command, out)
        assert result.returncode in (0, 2), (command, out)
