import pytest

from pyservecli.errors import PyserveError
from pyservecli.plan.topology import plan_topology


def test_reference_two_nodes_tp8_ep_gives_dp2_ep16():
    t = plan_topology(2, 8, tp=8, ep=True)
    assert (t.dp, t.dp_local, t.ep, t.backend) == (2, 1, 16, "rpc")


def test_reference_tp8_pp2_on_two_nodes_is_mp():
    t = plan_topology(2, 8, tp=8, pp=2)
    assert (t.dp, t.dp_local, t.ep, t.backend) == (1, 1, 0, "mp")


def test_dp_defaults_to_all_gpus_over_tp():
    t = plan_topology(1, 8, tp=2)
    assert (t.dp, t.dp_local, t.backend) == (4, 4, "single")
    t = plan_topology(4, 8, tp=2)
    assert (t.dp, t.dp_local, t.backend) == (16, 4, "rpc")


def test_ep_is_dp_times_tp():
    t = plan_topology(1, 8, tp=4, dp=2, ep=True)
    assert (t.ep, t.dp_local) == (8, 2)
    assert plan_topology(1, 8, dp=8, ep=True).ep == 8


def test_fewer_dp_ranks_than_gpus_is_planned_per_node():
    t = plan_topology(2, 8, tp=2, dp=4)
    assert (t.dp, t.dp_local) == (4, 2)


def test_tp_spanning_nodes_is_mp_never_dp_local_zero():
    t = plan_topology(2, 8, tp=16)
    assert (t.dp, t.dp_local, t.backend, t.spans_nodes) == (1, 1, "mp", True)


def test_pp_on_one_node_selects_mp():
    t = plan_topology(1, 8, tp=4, pp=2)
    assert (t.backend, t.dp) == ("mp", 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(nodes=1, gpus_per_node=8, tp=3), "TP 3 does not divide the 8 GPUs per node"),
        (dict(nodes=2, gpus_per_node=8, tp=8, pp=2, ep=True), "cannot be combined with expert"),
        (dict(nodes=1, gpus_per_node=8, tp=2, pp=2), "must use every GPU"),
        (dict(nodes=2, gpus_per_node=8, tp=8, pp=2, dp=2), "no DP"),
        (dict(nodes=2, gpus_per_node=8, tp=16, dp=2), "spans nodes"),
        (dict(nodes=4, gpus_per_node=8, tp=16), "must use every GPU"),
        (dict(nodes=2, gpus_per_node=8, tp=8, dp=3), "does not fit"),
        (dict(nodes=1, gpus_per_node=8, tp=2, dp=5), "does not fit"),
        (dict(nodes=2, gpus_per_node=8, tp=8, backend="single"), "runs on one node"),
        (dict(nodes=2, gpus_per_node=8, tp=16, backend="rpc"), "use --backend mp or ray"),
        (dict(nodes=2, gpus_per_node=8, tp=8, backend="mp"), "for DP across nodes"),
        (dict(nodes=1, gpus_per_node=8, backend="slurm"), "unknown backend 'slurm'"),
        (dict(nodes=1, gpus_per_node=8, tp=0), "--tp must be"),
        (dict(nodes=1, gpus_per_node=0), "--gpus-per-node must be"),
    ],
)
def test_bad_topologies_are_refused_with_the_numbers(kwargs, message):
    with pytest.raises(PyserveError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_topology(**kwargs)


def test_explicit_ray_backend_for_dp_and_for_spanning_replica():
    assert plan_topology(2, 8, tp=8, backend="ray").backend == "ray"
    assert plan_topology(2, 8, tp=16, backend="ray").spans_nodes


def test_cpu_nodes_get_one_dp_rank_each_by_default():
    t = plan_topology(2, None)
    assert (t.gpus_per_node, t.dp, t.dp_local, t.backend) == (1, 2, 1, "rpc")
    t = plan_topology(1, None, tp=2)
    assert (t.gpus_per_node, t.dp) == (2, 1)
    t = plan_topology(2, None, tp=1, backend="mp", pp=2)
    assert (t.gpus_per_node, t.backend, t.spans_nodes) == (1, "mp", True)


def test_world_size_matches_gpus_used():
    for nodes, gpus, tp in [(1, 8, 1), (2, 8, 4), (4, 4, 2), (3, 8, 8)]:
        t = plan_topology(nodes, gpus, tp=tp)
        assert t.world_size == nodes * gpus
        assert t.dp_local * t.tp == gpus
