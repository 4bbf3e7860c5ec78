"""The model-aware planner: sizes of known models, hub-id configs from a Hugging Face cache,
refusals with numbers, the automatic topology, `pyserve plan` rankings, GPU detection."""

import hashlib
import http.server
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pyservecli.bench.runner import launched_from
from pyservecli.errors import PyserveError
from pyservecli.models.dummy import builtin_config
from pyservecli.plan.auto import choose
from pyservecli.plan.estimate import Workload, estimate
from pyservecli.plan.gpus import GpuInfo, find_gpu, parse_memory_gib
from pyservecli.plan.memory import GIB, model_memory
from pyservecli.plan.modelconfig import ModelFacts
from pyservecli.run.cluster import detect_gpu
from pyservecli.run.hfhub import (
    cached_config,
    find_config,
    hub_unreachable,
    tokenizer_access,
)

from .conftest import run_pyserve

QWEN3_8B = builtin_config("qwen3-8b")
QWEN3_30B = builtin_config("qwen3-30b-a3b")
# Published config.json shapes (only the fields the planner reads).
QWEN3_235B = {**QWEN3_30B, "hidden_size": 4096, "num_hidden_layers": 94,
              "num_attention_heads": 64, "moe_intermediate_size": 1536,
              "intermediate_size": 12288}
LLAMA_70B = {"architectures": ["LlamaForCausalLM"], "hidden_size": 8192,
             "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "vocab_size": 128256, "torch_dtype": "bfloat16",
             "max_position_embeddings": 131072, "tie_word_embeddings": False}
DEEPSEEK_V3 = {"architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168,
               "num_hidden_layers": 61, "first_k_dense_replace": 3, "moe_layer_freq": 1,
               "intermediate_size": 18432, "moe_intermediate_size": 2048,
               "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
               "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536,
               "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
               "v_head_dim": 128, "vocab_size": 129280, "torch_dtype": "bfloat16",
               "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
FP8 = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}


@pytest.mark.parametrize("config, params_b, weights_gb", [
    (QWEN3_8B, 8.19, 16.4),
    (QWEN3_30B, 30.5, 61.1),
    ({**QWEN3_30B, "quantization_config": FP8}, 30.5, 31.2),
    (QWEN3_235B, 235.1, 470.2),
    (LLAMA_70B, 70.6, 141.1),
    (DEEPSEEK_V3, 671.0, 672.9),
])
def test_sizes_of_known_models(config, params_b, weights_gb):
    memory = model_memory(config)
    assert memory.size.total / 1e9 == pytest.approx(params_b, rel=0.005)
    assert memory.weight_bytes / 1e9 == pytest.approx(weights_gb, rel=0.005)


def test_moe_active_parameters_and_quantization_formats():
    assert model_memory(QWEN3_30B).size.active / 1e9 == pytest.approx(3.0, abs=0.1)
    assert model_memory(QWEN3_235B).size.active / 1e9 == pytest.approx(21.6, abs=0.2)
    assert model_memory(DEEPSEEK_V3).size.active / 1e9 == pytest.approx(36.6, abs=0.5)
    # --quantization on the command line (online fp8) and a 4-bit AWQ checkpoint.
    assert model_memory(QWEN3_8B, quantization="fp8").weight_bytes / 1e9 == \
        pytest.approx(9.4, abs=0.05)  # embeddings and LM head stay bf16
    awq = {**QWEN3_8B, "quantization_config": {"quant_method": "awq", "bits": 4,
                                               "group_size": 128}}
    assert model_memory(awq).weight_bytes / 1e9 == pytest.approx(6.1, abs=0.05)
    with pytest.raises(PyserveError, match="does not know its bytes per weight"):
        model_memory({**QWEN3_8B, "quantization_config": {"quant_method": "mystery"}})


def test_kv_cache_bytes_per_token():
    kv = model_memory(QWEN3_8B).kv
    assert kv.bytes_per_token() == 2 * 36 * 8 * 128 * 2  # K and V, layers, KV heads, head_dim
    assert kv.bytes_per_token(tp=2) == kv.bytes_per_token() / 2
    assert kv.bytes_per_token(tp=16) == kv.bytes_per_token(tp=8)  # past 8 heads: replicated
    assert model_memory(QWEN3_8B, kv_cache_dtype="fp8").kv.bytes_per_token() == 73728
    # MLA keeps one latent per token and layer, not sharded by TP.
    mla = model_memory(DEEPSEEK_V3).kv
    assert mla.bytes_per_token() == mla.bytes_per_token(tp=8) == 61 * (512 + 64) * 2


def test_moe_experts_are_split_over_dp_x_tp_as_vllm_does():
    memory = model_memory(QWEN3_30B)
    one = memory.weights_per_gpu(tp=1)
    assert memory.weights_per_gpu(tp=1, dp=2) == pytest.approx(
        one - memory.size.experts * 2 / 2, rel=1e-6)
    assert memory.weights_per_gpu(tp=1, dp=2, ep=True) == memory.weights_per_gpu(tp=1, dp=2)
    dense = model_memory(QWEN3_8B)
    assert dense.weights_per_gpu(tp=1, dp=8) == dense.weights_per_gpu(tp=1)


def facts(config, name="m", **settings):
    return ModelFacts(name, config, model_memory(config, **settings), "test")


def gpu(gib):
    return GpuInfo(gib, find_gpu("h200" if gib > 100 else "h100"), "test")


@pytest.mark.parametrize("config, nodes, per_node, gib, settings, expected", [
    (QWEN3_8B, 1, 1, 80, {}, (1, 1, 1, False)),
    (QWEN3_8B, 1, 2, 80, {}, (1, 1, 2, False)),
    (QWEN3_8B, 1, 8, 141, {}, (1, 1, 8, False)),
    (QWEN3_8B, 2, 8, 80, {}, (1, 1, 16, False)),
    # 141 GB of weights: half fits an 80 GB GPU, but 131k-token sequences need TP 4.
    (LLAMA_70B, 1, 8, 80, {}, (4, 1, 2, False)),
    (LLAMA_70B, 1, 2, 80, {"max_model_len": 8192}, (2, 1, 1, False)),
    (LLAMA_70B, 1, 8, 141, {}, (2, 1, 4, False)),
    (LLAMA_70B, 2, 1, 80, {"max_model_len": 8192}, (1, 2, 1, False)),  # PP over 2 nodes
    # MoE: experts over DP x TP; slices thinner than 256 columns get EP.
    (QWEN3_30B, 1, 2, 141, {}, (1, 1, 2, False)),
    (QWEN3_30B, 1, 8, 80, {}, (1, 1, 8, True)),
    (QWEN3_235B, 1, 8, 80, {}, (2, 1, 4, True)),
    (QWEN3_235B, 2, 8, 80, {}, (1, 1, 16, True)),
])
def test_automatic_choice(config, nodes, per_node, gib, settings, expected):
    choice = choose(facts(config, **settings), nodes, per_node, gpu(gib))
    shape = choice.shape
    assert (shape.tp, shape.pp, shape.dp, shape.ep) == expected, choice.decisions
    assert choice.decisions[0].startswith(f"TP {shape.tp}")
    assert choice.fit.weights_fit and (shape.pp > 1 or choice.fit.holds_one_sequence)


@pytest.mark.parametrize("config, nodes, per_node, gib", [
    (LLAMA_70B, 1, 1, 80), (QWEN3_235B, 1, 4, 80), (QWEN3_235B, 1, 1, 141)])
def test_automatic_choice_refuses_what_cannot_fit_with_numbers(config, nodes, per_node, gib):
    with pytest.raises(PyserveError, match=r"does not fit .* GiB.*exceed .* GiB per GPU|"
                                           r"does not fit .*less than one"):
        choose(facts(config), nodes, per_node, gpu(gib))


def write_hub_cache(cache, repo_id, config, commit="a" * 40):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo


def test_hub_config_from_the_cache_layout(tmp_path):
    write_hub_cache(tmp_path, "Qwen/Qwen3-30B-A3B-FP8", {**QWEN3_30B, "quantization_config": FP8})
    env = {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    path, source = find_config("Qwen/Qwen3-30B-A3B-FP8", env=env)
    assert path == cached_config(tmp_path, "Qwen/Qwen3-30B-A3B-FP8")
    assert "cache" in source
    assert find_config("Qwen/Qwen3-30B-A3B-FP8", revision="v2", env=env)[0] is None
    missing, why = find_config("Qwen/Other", env=env)
    assert missing is None and "HF_HUB_OFFLINE" in why
    # HF_HOME/hub is the default cache when HF_HUB_CACHE is not set.
    assert find_config("Qwen/Qwen3-30B-A3B-FP8",
                       env={"HF_HOME": str(tmp_path.parent / "nothing"),
                            "HF_HUB_OFFLINE": "1"})[0] is None


def test_hub_id_is_checked_and_sized_from_the_cache(tmp_path):
    cache = tmp_path / "hub"
    write_hub_cache(cache, "Qwen/Qwen3-30B-A3B-FP8", {**QWEN3_30B, "quantization_config": FP8})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    bad = run_pyserve("launch", "Qwen/Qwen3-30B-A3B-FP8", "--tp", "3", "--nodelist", "n1",
                      "--gpus-per-node", "6", "--dry-run", env=env)
    assert bad.returncode == 2
    assert "32 attention heads, which TP 3 does not divide" in bad.stderr
    ok = run_pyserve("launch", "Qwen/Qwen3-30B-A3B-FP8", "--nodelist", "n1", "--gpus-per-node",
                     "2", "--gpu-memory", "80", "--dry-run", "--format", "json", env=env)
    assert ok.returncode == 0, ok.stderr
    plan = json.loads(ok.stdout)
    assert any("fp8 (8-bit): 31.2 GB of weights" in n and "Hugging Face cache" in n
               for n in plan["notes"])
    # Not cached, offline: planned as before, and the plan says the checks were skipped.
    skipped = run_pyserve("launch", "Qwen/Qwen3-8B", "--tp", "3", "--nodelist", "n1",
                          "--gpus-per-node", "3", "--dry-run", env=env)
    assert skipped.returncode == 0, skipped.stderr
    assert "model checks skipped" in skipped.stdout


class StandinHub(http.server.ThreadingHTTPServer):
    """A Hugging Face hub on loopback that has one repository's config.json: what
    huggingface_hub's download asks (HEAD, then GET .../resolve/REVISION/FILE) and nothing
    more."""

    def __init__(self, repo_id: str, config: dict):
        body = json.dumps(config).encode()
        wanted = f"/{repo_id}/resolve/main/config.json"
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _headers(self) -> bool:
                hub.requests.append(f"{self.command} {self.path}")
                found = self.path == wanted
                self.send_response(200 if found else 404)
                if found:
                    self.send_header("X-Repo-Commit", "c" * 40)
                    self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body) if found else 0))
                self.end_headers()
                return found

            def do_HEAD(self):
                self._headers()

            def do_GET(self):
                if self._headers():
                    self.wfile.write(body)

            def log_message(self, *_args):
                pass

        hub = self
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def test_a_hub_id_is_fetched_from_the_hub_once_then_read_from_the_cache(tmp_path):
    hub = StandinHub("Org/Model-8B", QWEN3_8B)
    env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hub")}
    try:
        for source in ("fetched from the Hugging Face hub", "from the Hugging Face cache"):
            result = run_pyserve("launch", "Org/Model-8B", "--nodelist", "n1",
                                 "--gpus-per-node", "2", "--gpu-memory", "80", "--dry-run",
                                 "--format", "json", env=env)
            assert result.returncode == 0, result.stderr
            notes = json.loads(result.stdout)["notes"]
            assert any("16.4 GB of weights" in n and source in n for n in notes), notes
    finally:
        hub.shutdown()
    # The second launch read the cache: the hub saw one HEAD and one GET of config.json.
    assert [r for r in hub.requests if "config.json" in r] == [
        "HEAD /Org/Model-8B/resolve/main/config.json",
        "GET /Org/Model-8B/resolve/main/config.json"]


def test_an_unreachable_hub_skips_the_model_checks_at_once(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_HUB_CACHE": str(tmp_path / "hub")}
    start = time.monotonic()
    result = run_pyserve("launch", "Org/Model-8B", "--nodelist", "n1", "--gpus-per-node", "2",
                         "--dry-run", env=env)
    took = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert f"the hub 127.0.0.1:{port} is not reachable" in result.stdout
    # huggingface_hub alone retries five times with backoff (~23 s of "Retrying in" warnings).
    assert "Retrying" not in result.stderr and took < 15, (took, result.stderr)
    # Through a proxy unless NO_PROXY names the hub: the connection tried is the one used.
    proxy = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HTTP_PROXY": "http://127.0.0.1:1"}
    assert hub_unreachable(proxy).startswith("the proxy 127.0.0.1:1 is not reachable")
    assert hub_unreachable({**proxy, "NO_PROXY": "localhost,127.0.0.1"}).startswith(
        f"the hub 127.0.0.1:{port} is not reachable")


def test_explicit_flags_that_do_not_fit_are_refused_with_numbers(config_dir):
    model = config_dir("qwen3-30b-a3b")
    args = ["launch", str(model), "--nodelist", "n1", "--gpus-per-node", "1", "--tp", "1",
            "--dry-run"]
    refused = run_pyserve(*args, "--gpu-memory", "40")
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("pyserve: error:")
    assert "56.9 GiB + runtime ~2.5 GiB exceed 36.0 GiB per GPU" in line
    assert "40.0 GiB from --gpu-memory" in line
    # Assumed memory (nothing says how large the GPU is): a warning, not a refusal.
    assumed = run_pyserve(*args, "--tp", "1", "--max-model-len", "4096")
    assert assumed.returncode == 0, assumed.stderr
    # A short KV cache is a warning naming the length that fits.
    short = run_pyserve(*args, "--gpu-memory", "70")
    assert short.returncode == 0, short.stderr
    assert "warning: KV cache holds" in short.stdout and "lower --max-model-len" in short.stdout


def test_issue_example_235b_on_two_nodes_is_planned_to_fit(tmp_path):
    cache = tmp_path / "hub"
    write_hub_cache(cache, "Qwen/Qwen3-235B-A22B", QWEN3_235B)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    result = run_pyserve("launch", "Qwen/Qwen3-235B-A22B", "--nodelist", "gpu[1-2]",
                         "--gpus-per-node", "8", "--gpu-memory", "80", "--dry-run", "--format",
                         "json", env=env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["topology"]["tp"], plan["topology"]["dp"], plan["topology"]["ep"]) == (1, 16, 16)
    notes = "\n".join(plan["notes"])
    assert "235.1 B parameters" in notes and "EP 16" in notes
    # Four GPUs of one node cannot hold it: refused before anything starts, with the numbers.
    small = run_pyserve("launch", "Qwen/Qwen3-235B-A22B", "--nodelist", "gpu1",
                        "--gpus-per-node", "4", "--gpu-memory", "80", "--dry-run", env=env)
    assert small.returncode == 2
    assert "does not fit 1 node(s) x 4 GPUs of 80.0 GiB" in small.stderr


def test_estimate_matches_the_measured_h100_point():
    """Calibration: Qwen3-8B on one H100, 128 x 1024/256, measured 4,755 output tok/s."""
    est = estimate(model_memory(QWEN3_8B), find_gpu("NVIDIA H100 80GB HBM3"), tp=1, pp=1, dp=1,
                   ep=False, gpus_per_node=1, workload=Workload(1024, 256, 128))
    assert est.output_tok_s == pytest.approx(4755, rel=0.1)
    # A single request: decode is bound by reading 16 GB per token.
    one = estimate(model_memory(QWEN3_8B), find_gpu("H100"), tp=1, pp=1, dp=1, ep=False,
                   gpus_per_node=1, workload=Workload(1024, 256, 1))
    assert 16.4 / 3.35 < one.tpot_ms < 10


def plan_json(*args, env=None):
    result = run_pyserve("plan", *args, "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_ranks_by_goal(config_dir):
    model = str(config_dir("qwen3-8b"))
    alloc = ["--nodelist", "n1", "--gpus-per-node", "2", "--gpu-memory", "141"]
    throughput = plan_json(model, *alloc)
    labels = [c["label"] for c in throughput["candidates"]]
    assert sorted(labels) == ["1p-tp1-1d-tp1", "tp1-dp2", "tp1-pp2", "tp2-dp1"]
    assert labels[0] == "tp1-dp2"
    assert labels[-1] == "1p-tp1-1d-tp1"  # without SLOs P/D follows every one-server shape
    assert throughput["allocation"]["estimates_for"] == "H200"
    assert throughput["workload"] == {"isl": 1024, "osl": 256, "concurrency": 128}
    assert throughput["automatic_choice"]["shape"] == "tp1-dp2"
    latency = plan_json(model, *alloc, "--goal", "latency")
    assert latency["candidates"][0]["label"] == "tp2-dp1"
    assert latency["workload"]["concurrency"] == 1
    first = latency["candidates"][0]
    assert first["estimate"]["tpot_ms"] < latency["candidates"][1]["estimate"]["tpot_ms"]


def test_plan_lists_invalid_shapes_last_with_the_reason(config_dir):
    model = str(config_dir("qwen3-8b"))
    alloc = ["--nodelist", "n1", "--gpus-per-node", "6", "--gpu-memory", "16"]
    data = plan_json(model, *alloc)
    cands = data["candidates"]
    valid = [c for c in cands if c["valid"]]
    invalid = [c for c in cands if not c["valid"]]
    assert valid and invalid and cands[:len(valid)] == valid
    assert all(c["predicted_rank"] is None and c["why"] for c in invalid)
    why = {c["label"]: c["why"] for c in invalid}
    assert "exceed 14.4 GiB per GPU" in why["tp1-dp6"]  # 15.3 GiB of weights on one GPU
    assert "32 attention heads, which TP 3 does not divide" in why["tp3-dp2"]
    assert data["automatic_choice"]["shape"] == "tp2-dp3"
    text = run_pyserve("plan", model, *alloc)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[3].split()[:2] == ["rank", "topology"]
    assert any(line.startswith("TP 3 x DP 2: ") for line in lines)
    assert lines[-1].startswith("pyserve launch with no parallel flags: TP 2:")


def test_plan_refuses_bad_input_in_one_line(config_dir):
    model = str(config_dir("qwen3-8b"))
    for args, message in (
        (["--gpus-per-node", "2", "--gpu-memory", "lots"], "--gpu-memory 'lots'"),
        (["--gpus-per-node", "2", "--concurrency", "0"],
         "--concurrency must be a positive number"),
        # NaN would hold no SLO (every comparison false) and infinity is no SLO at all.
        (["--gpus-per-node", "2", "--ttft", "nan"], "--ttft must be a positive number, got nan"),
        (["--gpus-per-node", "2", "--tpot", "inf"], "--tpot must be a positive number, got inf"),
        (["--gpus-per-node", "2", "--measure", "--top", "0"], "0 is not in the range x>=1"),
        (["--gpus-per-node", "2", "--gpu-memory-utilization", "2"],
         "--gpu-memory-utilization '2'"),
        ([], "no GPU found here"),
        (["--gpus-per-node", "2", "--measure", "--only", "tp9-dp1"],
         "--only tp9-dp1: no such candidate; these are: tp1-dp2"),
        (["--gpus-per-node", "2", "--only", "tp1-dp2"], "--only goes with --measure"),
        (["--gpus-per-node", "2", "--gpu-memory", "4", "--measure", "--only", "tp1-dp2"],
         "--only tp1-dp2: does not fit this allocation"),
        (["--gpus-per-node", "2", "--perf-db", "/proc"], "'/proc' is a directory"),
    ):
        result = run_pyserve("plan", model, *args)
        assert result.returncode == 2, result.stdout
        assert result.stderr.startswith("pyserve: error:") and message in result.stderr
        assert result.stderr.count("\n") == 1


def fake_smi(stdout, code=0):
    def run(argv, **_kw):
        return subprocess.CompletedProcess(argv, code, stdout=stdout, stderr="")
    return run


def test_gpu_detection_order():
    smi = fake_smi("NVIDIA H200, 143771\nNVIDIA H200, 143771\n")
    found = detect_gpu({}, 2, run=smi)
    assert found.spec.name == "H200" and found.memory_gib == pytest.approx(140.4, abs=0.1)
    assert not found.assumed
    given = detect_gpu({}, 2, gpu_memory=80, run=smi)
    assert given.memory_gib == 80 and given.source == "--gpu-memory"
    gres = detect_gpu({"SLURM_GPUS_PER_NODE": "h100:8"}, 8, run=fake_smi("", 9))
    assert gres.spec.name == "H100" and "SLURM GPU type h100" in gres.source
    # A GPU listed with no memory tells nothing: the memory is assumed, never 0.
    zero = detect_gpu({}, 1, run=fake_smi("Stand-in GPU, 0.0\n"))
    assert zero.assumed and zero.memory_gib == pytest.approx(79.6)
    assumed = detect_gpu({}, 8, run=fake_smi("", 9))
    assert assumed.assumed and assumed.memory_gib == pytest.approx(79.6)
    assert detect_gpu({}, None).memory_gib is None


def test_gpu_memory_parsing():
    assert parse_memory_gib("80") == 80
    assert parse_memory_gib("141GiB") == 141
    assert parse_memory_gib("143771MiB") == pytest.approx(140.4, abs=0.1)
    for bad in ("", "lots", "0", "-5", "9e9"):
        with pytest.raises(PyserveError):
            parse_memory_gib(bad)
    assert GIB == 1024**3


def test_the_benchmark_clients_tokenizer_is_checked_before_it_runs(tmp_path):
    """A hub id's tokenizer: read offline when cached (the hub out of reach or HF_HUB_OFFLINE),
    refused with what to do when neither cached nor reachable; a directory is the client's."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--Org--Cached" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "tokenizer.json").write_text("{}")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    offline = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    no_route = {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": endpoint}
    assert tokenizer_access("Org/Cached", offline) == (None, True)
    assert tokenizer_access("Org/Cached", no_route) == (None, True)
    assert tokenizer_access(str(snapshot), no_route) == (None, False)
    why, _ = tokenizer_access("Org/Missing", offline)
    assert "tokenizer of Org/Missing is not in the Hugging Face cache" in why
    assert "HF_HUB_OFFLINE is set: give --tokenizer DIR" in why
    why, _ = tokenizer_access("Org/Missing", no_route)
    assert "is not reachable" in why and "give --tokenizer DIR" in why
    # A path that is not here (the server's own, or a typo) and shell words: refused before any
    # point runs, instead of each point failing in vLLM's client.
    for name in (str(tmp_path / "nowhere"), "a;b", "hf://org/name"):
        why, offline_ = tokenizer_access(name, no_route)
        assert "is neither a directory here nor a hub id" in why and not offline_, name


def test_a_served_name_is_benchmarked_with_the_tokenizer_of_the_directory_it_came_from(
        tmp_path):
    model = tmp_path / "Qwen3-8B"
    model.mkdir()
    single = {"served_model_name": "qwen", "model": str(model)}
    assert launched_from(single, "qwen") == str(model)
    assert launched_from(single, "other") is None
    assert launched_from({"served_model_name": str(model), "model": str(model)},
                         str(model)) is None  # the name loads as it is
    fleet = {"served_model_name": "a", "model": "Org/A",
             "roles": {"replicas": [{"model": "a", "source": "Org/A"},
                                    {"model": "b", "source": str(model)}]}}
    assert launched_from(fleet, "b") == str(model)
    assert launched_from(fleet, "a") == "Org/A"  # a hub id, for the cache or the hub
    assert launched_from(None, "qwen") is None


def test_measure_resume_refuses_results_of_other_flags(config_dir, tmp_path):
    """#23 item 12: --resume reused results measured with other vLLM flags ("measured
    already"); now the folder says what it was measured with, and other settings are refused
    before anything is launched."""
    model = str(config_dir("qwen3-8b"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "measured-with.json").write_text(json.dumps(
        {"model": model, "vllm_args": ["--max-model-len", "256", "--enforce-eager"], "env": {},
         "num_prompts": 8, "gpu_memory": "80"}))
    result = run_pyserve("plan", model, "--gpus-per-node", "2", "--gpu-memory", "80",
                         "--measure", "--resume", "--out", str(out), "--num-prompts", "8",
                         "--dtype", "float32", "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "measured with other settings" in result.stderr and "--enforce-eager" in result.stderr
    assert not (tmp_path / "ws" / "logs").exists()  # nothing launched
    legacy = tmp_path / "legacy"
    (legacy / "TP_1").mkdir(parents=True)
    result = run_pyserve("plan", model, "--gpus-per-node", "2", "--gpu-memory", "80",
                         "--measure", "--resume", "--out", str(legacy),
                         "--workspace", str(tmp_path / "ws"))
    assert result.returncode == 2 and "does not say which settings" in result.stderr


def test_plan_of_a_hub_model_offline_says_what_to_do():
    """#26 item 1: offline, the user's own hub model got a reason and no way forward."""
    result = run_pyserve("plan", "Qwen/Qwen3-30B-A3B-FP8", "--gpus-per-node", "8",
                         "--gpu-memory", "80", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    line = result.stderr
    assert line.startswith("pyserve: error: cannot size Qwen/Qwen3-30B-A3B-FP8:")
    assert "HF_HUB_OFFLINE is set" in line and "set HF_HUB_OFFLINE=1" not in line
    for remedy in ("local model directory", "hf download Qwen/Qwen3-30B-A3B-FP8 config.json",
                   "pyserve model create NAME DIR", "qwen3-30b-a3b"):
        assert remedy in line


def test_gpu_type_says_which_80gb_gpu(config_dir):
    """#26 item 2: --gpu-memory 80 estimated for an H100 PCIe with no way to say SXM."""
    model = str(config_dir("qwen3-8b"))
    alloc = ["--nodelist", "n1", "--gpus-per-node", "2"]
    sxm = plan_json(model, *alloc, "--gpu-memory", "80", "--gpu-type", "H100")
    pcie = plan_json(model, *alloc, "--gpu-type", "H100-PCIe")
    assert sxm["allocation"]["estimates_for"] == "H100"
    assert sxm["allocation"]["gpu_memory_gib"] == 80.0  # --gpu-memory still wins
    assert pcie["allocation"]["estimates_for"] == "H100 PCIe"
    assert pcie["allocation"]["gpu_source"] == "--gpu-type H100 PCIe"

    def tok_s(data):
        return data["candidates"][0]["figure"]["output_tok_s"]

    assert tok_s(sxm) > tok_s(pcie)  # 3.35 against 2.0 TB/s of HBM
    bad = run_pyserve("plan", model, *alloc, "--gpu-type", "X9")
    assert bad.returncode == 2 and "--gpu-type 'X9': not a GPU pyserve knows" in bad.stderr


@pytest.mark.parametrize("model,extra", [("qwen3-30b-a3b", ["--quantization", "fp8"]),
                                         ("mixtral-8x7b", []), ("deepseek-v2-lite", []),
                                         ("qwen3-32b", [])])
def test_every_rank_out_of_figure_order_is_explained(model, extra, tmp_path):
    """#26: a candidate ranked above one with a higher figure of the same kind is never left
    unexplained (the 'within the resolution, simpler first' rule is printed)."""
    out = run_pyserve("plan", str(Path(__file__).resolve().parent.parent / "pyservecli" / "models"
                                  / model), "--nodelist",
                      "n[1-2]", "--gpus-per-node", "8", "--gpu-type", "H100", *extra,
                      "--format", "json", "--workspace", str(tmp_path / "ws"))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    valid = [c for c in data["candidates"] if c["valid"] and not c.get("prefill")]
    inverted = [(a["label"], b["label"]) for a, b in zip(valid, valid[1:], strict=False)
                if a["figure"]["output_tok_s"] < b["figure"]["output_tok_s"]
                and (a["figure"]["source"] == "estimated") == (b["figure"]["source"]
                                                                == "estimated")]
    if inverted:
        assert any("stands above" in line or "ranks first though" in line
                   or "ranks above" in line for line in data["explained"]), (inverted,
                                                                             data["explained"])
