"""Dry-run plans through the real CLI: the JSON contract, argv per backend, model checks."""

import json

import pytest

from .conftest import run_pyserve


def dry_run(*args, env=None):
    result = run_pyserve("launch", *args, "--dry-run", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_shape_is_the_contract():
    plan = dry_run("Qwen/Qwen3-8B", "--nodelist", "n1", "--gpus-per-node", "8")
    assert set(plan) == {"topology", "head", "nodes", "notes", "warnings"}
    assert all(isinstance(line, str) for line in plan["notes"] + plan["warnings"])
    assert set(plan["topology"]) == {"nodes", "gpus_per_node", "tp", "pp", "dp", "dp_local",
                                     "ep", "backend"}
    assert set(plan["head"]) == {"host", "ip", "port"}
    assert all(set(n) == {"host", "rank", "argv", "env"} for n in plan["nodes"])
    assert plan["topology"]["ep"] == 0
    assert plan["head"]["port"] == 8000


def test_reference_two_nodes_tp8_ep_rpc_plan():
    plan = dry_run("Qwen/Qwen3-30B-A3B-FP8", "--tp", "8", "--ep", "--nodelist", "gpu[1-2]",
                   "--gpus-per-node", "8")
    assert plan["topology"] == {"nodes": 2, "gpus_per_node": 8, "tp": 8, "pp": 1, "dp": 2,
                                "dp_local": 1, "ep": 16, "backend": "rpc"}
    head, worker = plan["nodes"]
    assert (head["host"], head["rank"], worker["host"], worker["rank"]) == ("gpu1", 0, "gpu2", 1)
    assert "--headless" not in head["argv"] and worker["argv"][-1] == "--headless"
    # A start rank on the head would switch vLLM to hybrid load balancing (seen: vllm 0.32
    # then refuses the headless worker), so only workers carry one.
    assert "--data-parallel-start-rank" not in head["argv"]
    w = worker["argv"]
    assert w[w.index("--data-parallel-start-rank") + 1] == "1"
    assert w[w.index("--data-parallel-size-local") + 1] == "1"
    assert w[w.index("--data-parallel-address") + 1] == plan["head"]["ip"]
    assert "--port" not in w
    rpc = {n["argv"][n["argv"].index("--data-parallel-rpc-port") + 1] for n in plan["nodes"]}
    assert len(rpc) == 1
    assert "--enable-expert-parallel" in head["argv"]


def test_reference_tp8_pp2_two_nodes_mp_plan():
    plan = dry_run("Qwen/Qwen3-8B", "--tp", "8", "--pp", "2", "--nodelist", "a,b",
                   "--gpus-per-node", "8")
    assert plan["topology"]["backend"] == "mp"
    for node in plan["nodes"]:
        argv = node["argv"]
        assert argv[argv.index("--nnodes") + 1] == "2"
        assert argv[argv.index("--node-rank") + 1] == str(node["rank"])
        assert argv[argv.index("--master-addr") + 1] == plan["head"]["ip"]
        assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    assert "--headless" in plan["nodes"][1]["argv"] and "--headless" not in plan["nodes"][0]["argv"]


def test_ray_plan_head_serves_workers_join():
    plan = dry_run("m", "--dp", "2", "--backend", "ray", "--nodelist", "a,b",
                   "--gpus-per-node", "1")
    head, worker = plan["nodes"]
    assert head["argv"][:2] == ["vllm", "serve"]
    assert head["argv"][head["argv"].index("--data-parallel-backend") + 1] == "ray"
    assert worker["argv"][:2] == ["ray", "start"] and "--block" in worker["argv"]


def test_single_node_plain_serve_with_vllm_spellings_and_passthrough_kept():
    plan = dry_run("Qwen/Qwen3-8B", "-tp", "2", "--max-model-len", "8192", "--port", "8123",
                   "--gpus-per-node", "8", "--nodelist", "solo")
    argv = plan["nodes"][0]["argv"]
    assert plan["topology"]["backend"] == "single" and plan["topology"]["dp"] == 4
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--data-parallel-size") + 1] == "4"
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv.count("--tensor-parallel-size") == 1 and "-tp" not in argv


def test_slurm_environment_drives_the_plan():
    env = {"SLURM_JOB_ID": "777", "SLURM_JOB_NODELIST": "gpu[3-4]", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_GPUS_ON_NODE": "8"}
    plan = dry_run("m", "--tp", "4", env=env)
    assert [n["host"] for n in plan["nodes"]] == ["gpu3", "gpu4"]
    assert (plan["topology"]["dp"], plan["topology"]["dp_local"]) == (4, 2)
    assert plan["nodes"][1]["argv"][plan["nodes"][1]["argv"].index(
        "--data-parallel-start-rank") + 1] == "2"


def test_ports_follow_the_job_id():
    def rpc_port(job):
        env = {"SLURM_JOB_ID": job, "SLURM_JOB_NODELIST": "a,b", "SLURM_GPUS_ON_NODE": "1"}
        argv = dry_run("m", env=env)["nodes"][0]["argv"]
        return int(argv[argv.index("--data-parallel-rpc-port") + 1])

    assert rpc_port("100") == rpc_port("100")
    assert rpc_port("100") != rpc_port("101")


def test_real_shapes_pass_the_model_checks(config_dir):
    moe = config_dir("qwen3-30b-a3b")
    plan = dry_run(str(moe), "--tp", "8", "--ep", "--nodelist", "n[1-2]", "--gpus-per-node", "8")
    assert plan["topology"]["ep"] == 16
    plan = dry_run(str(moe), "--tp", "4", "--dp", "2", "--ep", "--nodelist", "n1",
                   "--gpus-per-node", "8")
    assert (plan["topology"]["ep"], plan["topology"]["dp_local"]) == (8, 2)
    assert dry_run(str(moe), "--dp", "8", "--ep", "--nodelist", "n1",
                   "--gpus-per-node", "8")["topology"]["ep"] == 8


@pytest.mark.parametrize(
    "model, args, message",
    [
        ("qwen3-8b", ["--tp", "3", "--gpus-per-node", "3"], "32 attention heads, which TP 3"),
        ("qwen3-30b-a3b", ["--tp", "2", "--dp", "3", "--ep", "--gpus-per-node", "6"],
         "128 routed experts, which EP 6"),
        ("qwen3-tiny", ["--tp", "1", "--pp", "4", "--gpus-per-node", "4"],
         "2 layers, fewer than PP 4"),
        ("qwen3-8b", ["--ep", "--gpus-per-node", "8"], "needs a mixture-of-experts model"),
    ],
)
def test_model_that_does_not_split_is_refused(config_dir, model, args, message):
    result = run_pyserve("launch", str(config_dir(model)), *args, "--nodelist", "n1",
                         "--dry-run")
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("pyserve: error:")


def test_kv_heads_replicate_when_tp_is_a_multiple(config_dir):
    # Qwen3-30B-A3B has 4 KV heads; TP 8 replicates them (what vLLM does), so it is allowed.
    plan = dry_run(str(config_dir("qwen3-30b-a3b")), "--tp", "8", "--nodelist", "n1",
                   "--gpus-per-node", "8")
    assert plan["topology"]["tp"] == 8


def test_text_dry_run_shows_each_node_command():
    result = run_pyserve("launch", "m", "--tp", "8", "--nodelist", "a,b", "--gpus-per-node", "8",
                         "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "TP 8  PP 1  DP 2 (local 1)" in result.stdout
    assert "node 1 b:" in result.stdout and "--headless" in result.stdout


def test_env_is_given_to_every_node_with_its_rank_substituted():
    plan = dry_run("m", "--nodelist", "a,b", "--gpus-per-node", "1",
                   "--env", "VLLM_CPU_OMP_THREADS_BIND={node_rank}", "--env", "X=a=b c")
    assert [n["env"]["VLLM_CPU_OMP_THREADS_BIND"] for n in plan["nodes"]] == ["0", "1"]
    assert all(n["env"]["X"] == "a=b c" for n in plan["nodes"])
