import subprocess

import pytest

from pyservecli.errors import PyserveError
from pyservecli.plan.hosts import expand_hostlist
from pyservecli.run.cluster import detect, detect_gpus_per_node


@pytest.mark.parametrize(
    "expr, hosts",
    [
        ("node1", ["node1"]),
        ("gpu[01-03]", ["gpu01", "gpu02", "gpu03"]),
        ("gpu[08-10,12],login", ["gpu08", "gpu09", "gpu10", "gpu12", "login"]),
        ("a[1-2]-b[1-2]", ["a1-b1", "a1-b2", "a2-b1", "a2-b2"]),
        ("p4d-st-[1-2]", ["p4d-st-1", "p4d-st-2"]),
    ],
)
def test_expand_hostlist(expr, hosts):
    assert expand_hostlist(expr) == hosts


@pytest.mark.parametrize("expr", ["gpu[1-", "gpu1]", "gpu[3-1]", "gpu[a-b]"])
def test_malformed_hostlist(expr):
    with pytest.raises(PyserveError, match="malformed hostlist"):
        expand_hostlist(expr)


def _smi(count):
    def run(argv, **_):
        assert argv == ["nvidia-smi", "-L"]
        out = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})\n" for i in range(count))
        return subprocess.CompletedProcess(argv, 0, out, "")
    return run


def test_gpu_sources_in_order():
    env = {"SLURM_GPUS_ON_NODE": "4", "SLURM_GPUS_PER_NODE": "h100:8",
           "CUDA_VISIBLE_DEVICES": "0,1"}
    assert detect_gpus_per_node(env, _smi(2)) == (4, "SLURM_GPUS_ON_NODE")
    del env["SLURM_GPUS_ON_NODE"]
    assert detect_gpus_per_node(env, _smi(2)) == (8, "SLURM_GPUS_PER_NODE")
    del env["SLURM_GPUS_PER_NODE"]
    assert detect_gpus_per_node(env, _smi(8)) == (2, "CUDA_VISIBLE_DEVICES")
    del env["CUDA_VISIBLE_DEVICES"]
    assert detect_gpus_per_node(env, _smi(8)) == (8, "nvidia-smi -L")
    assert detect_gpus_per_node({}, _smi(0)) == (None, "no GPU found")


def test_slurm_allocation_is_read_from_the_environment():
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8"}
    found = detect(env)
    assert found.nodes == ("gpu07", "gpu08")
    assert (found.gpus_per_node, found.job_id, found.in_slurm) == (8, "4242", True)


def test_overrides_win_and_inconsistent_slurm_env_is_an_error():
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "a[1-3]", "SLURM_JOB_NUM_NODES": "2"}
    with pytest.raises(PyserveError, match="names 3 nodes but SLURM_JOB_NUM_NODES=2"):
        detect(env)
    found = detect(env, nodelist="x,y", gpus_per_node=4)
    assert found.nodes == ("x", "y") and found.gpus_per_node == 4
    with pytest.raises(PyserveError, match="names a host twice"):
        detect({}, nodelist="x,x", gpus_per_node=1)
    with pytest.raises(PyserveError, match="cannot read a GPU count"):
        detect({"SLURM_GPUS_ON_NODE": "lots"})
