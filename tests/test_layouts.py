"""Model shapes past plain transformers: sliding-window and chunked attention, linear attention,
Mamba, interleaved experts, partly quantized checkpoints. Each is sized against the published
parameter count of the model whose config.json it copies (the fields the planner reads), and
its cache per sequence is checked layer kind by layer kind."""

import pytest

from pyservecli.errors import PyserveError
from pyservecli.plan.auto import choose
from pyservecli.plan.estimate import Workload, estimate
from pyservecli.plan.gpus import GpuInfo, find_gpu
from pyservecli.plan.layers import CHUNKED, FULL, LINEAR, MAMBA, MOE, SLIDING, layer_plan
from pyservecli.plan.memory import GIB, fit, model_memory
from pyservecli.plan.modelconfig import ModelFacts, check_model_fits
from pyservecli.plan.perfkey import model_shape
from pyservecli.plan.topology import Topology


def alternate(layers, even, odd):
    return [even if i % 2 == 0 else odd for i in range(layers)]


# openai/gpt-oss-120b: 128 experts (4 per token) in MXFP4, attention left in bf16, sliding
# (128 tokens) and full attention alternating.
GPT_OSS_120B = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880,
    "num_hidden_layers": 36, "num_attention_heads": 64, "num_key_value_heads": 8,
    "head_dim": 64, "intermediate_size": 2880, "num_local_experts": 128,
    "experts_per_token": 4, "num_experts_per_tok": 4, "vocab_size": 201088,
    "sliding_window": 128, "max_position_embeddings": 131072, "tie_word_embeddings": False,
    "layer_types": alternate(36, "sliding_attention", "full_attention"),
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
        "lm_head"]}}
GPT_OSS_20B = {**GPT_OSS_120B, "num_hidden_layers": 24, "num_local_experts": 32,
               "layer_types": alternate(24, "sliding_attention", "full_attention")}
# Qwen/Qwen3-Next-80B-A3B-Instruct: Gated DeltaNet in three of every four layers.
QWEN3_NEXT = {
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "hidden_size": 2048,
    "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 2,
    "head_dim": 256, "intermediate_size": 5120, "moe_intermediate_size": 512,
    "shared_expert_intermediate_size": 512, "num_experts": 512, "num_experts_per_tok": 10,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "full_attention_interval": 4,
    "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_num_key_heads": 16,
    "linear_num_value_heads": 32, "linear_value_head_dim": 128, "vocab_size": 151936,
    "max_position_embeddings": 262144, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16"}
# meta-llama/Llama-4-Maverick-17B-128E (text_config): experts in every other layer, a shared
# expert beside them, wider dense MLPs, chunked attention with a full (NoPE) layer in four.
MAVERICK = {
    "architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4_text",
    "hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40,
    "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 8192,
    "intermediate_size_mlp": 16384, "num_local_experts": 128, "num_experts_per_tok": 1,
    "interleave_moe_layer_step": 2, "attention_chunk_size": 8192, "vocab_size": 202048,
    "max_position_embeddings": 1048576, "tie_word_embeddings": False}
SCOUT = {**MAVERICK, "num_local_experts": 16, "interleave_moe_layer_step": 1,
         "max_position_embeddings": 10485760}
# google/gemma-3-27b-it (text_config): five sliding (1,024-token) layers to one global.
GEMMA3_27B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3_text",
    "hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 62,
    "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
    "sliding_window": 1024, "sliding_window_pattern": 6, "vocab_size": 262208,
    "max_position_embeddings": 131072, "tie_word_embeddings": True}
# nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B: one block per layer (M: Mamba-2, E: experts,
# *: attention), squared-ReLU MLPs without a gate.
NEMOTRON3_NANO = {
    "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h",
    "hybrid_override_pattern": "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
    "num_hidden_layers": 52, "num_attention_heads": 32, "num_key_value_heads": 2,
    "head_dim": 128, "hidden_size": 2688, "mamba_num_heads": 64, "mamba_head_dim": 64,
    "ssm_state_size": 128, "n_groups": 8, "conv_kernel": 4, "n_routed_experts": 128,
    "num_experts_per_tok": 6, "moe_intermediate_size": 1856,
    "moe_shared_expert_intermediate_size": 3712, "intermediate_size": 1856,
    "mlp_hidden_act": "relu2", "vocab_size": 131072, "tie_word_embeddings": False,
    "max_position_embeddings": 262144, "mamba_ssm_cache_dtype": "float32"}


@pytest.mark.parametrize("config, total_b, active_b, weights_gb, rel", [
    # Published (model cards): 116.8B total / 5.1B active, 20.9B / 3.6B; the MXFP4
    # checkpoints are 65 GB and 13.8 GB.
    (GPT_OSS_120B, 116.8, 5.1, 65.1, 0.01),
    (GPT_OSS_20B, 20.9, 3.6, 13.8, 0.01),
    (QWEN3_NEXT, 80.0, 3.5, 159.1, 0.02),  # "80B total, 3B activated" (3.5B counted with
    # the LM head and shared experts)
    (MAVERICK, 400.0, 17.0, 801.4, 0.06),  # 17B active with the input embeddings
    (SCOUT, 109.0, 17.0, 215.5, 0.06),  # 109B total with the vision encoder
    (GEMMA3_27B, 27.4, 25.6, 54.0, 0.02),  # 27.4B with the 0.4B vision encoder
    (NEMOTRON3_NANO, 31.6, 3.2, 63.2, 0.01),
])
def test_sizes_of_mixed_layer_models(config, total_b, active_b, weights_gb, rel):
    memory = model_memory(config)
    assert memory.size.total / 1e9 == pytest.approx(total_b, rel=rel)
    assert memory.size.active / 1e9 == pytest.approx(active_b, rel=rel)
    assert memory.weight_bytes / 1e9 == pytest.approx(weights_gb, rel=0.01)


def kinds(config):
    plan = layer_plan(config, config["num_hidden_layers"], True)
    return ([layer.mixer for layer in plan], [layer.mlp for layer in plan])


def test_each_family_lays_out_its_layers_as_its_config_class_does():
    mixers, _ = kinds(GPT_OSS_120B)
    assert mixers[:2] == [SLIDING, FULL] and mixers.count(FULL) == 18
    mixers, mlps = kinds(QWEN3_NEXT)
    assert mixers[:4] == [LINEAR, LINEAR, LINEAR, FULL] and mixers.count(FULL) == 12
    assert mlps.count(MOE) == 48
    mixers, mlps = kinds(MAVERICK)
    assert [i for i, m in enumerate(mlps) if m == MOE] == list(range(1, 48, 2))
    assert mixers[:4] == [CHUNKED, CHUNKED, CHUNKED, FULL] and mixers.count(FULL) == 12
    assert kinds(SCOUT)[1].count(MOE) == 48
    mixers, _ = kinds(GEMMA3_27B)
    assert mixers[:6] == [SLIDING] * 5 + [FULL] and mixers.count(FULL) == 10
    mixers, mlps = kinds(NEMOTRON3_NANO)
    assert (mixers.count(MAMBA), mixers.count(FULL), mlps.count(MOE)) == (23, 6, 23)
    # A layer_types list that does not match the layer count is not trusted: every layer is
    # counted as full attention, never as a window that would claim room that is not there.
    assert kinds({**GPT_OSS_120B, "layer_types": ["sliding_attention"]})[0] == [FULL] * 36
    # Without layer_types gpt-oss alternates, as its config class derives it.
    derived = {k: v for k, v in GPT_OSS_120B.items() if k != "layer_types"}
    assert kinds(derived)[0] == kinds(GPT_OSS_120B)[0]


def test_cache_per_sequence_counts_windows_and_fixed_state():
    kib = 1024
    kv = model_memory(GPT_OSS_120B).kv  # 2 KiB per token and layer (8 KV heads x 64, bf16)
    assert kv.bytes_per_token() == 36 * 2 * kib
    assert kv.bytes_per_sequence(8192) == 18 * 2 * kib * 8192 + 18 * 2 * kib * 128
    kv = model_memory(GEMMA3_27B).kv  # 8 KiB per token and layer
    assert kv.bytes_per_sequence(8192) == 10 * 8 * kib * 8192 + 52 * 8 * kib * 1024
    assert kv.bytes_per_sequence(512) == kv.bytes_per_token() * 512  # inside every window
    kv = model_memory(QWEN3_NEXT).kv
    # 36 Gated DeltaNet layers: 32 heads x 128 x 128 of state, and the convolution's last 3
    # columns of 2 x 2048 + 4096 channels, in bf16.
    state = 36 * (32 * 128 * 128 * 2 + (2 * 2048 + 4096) * 3 * 2)
    assert kv.bytes_per_sequence(1000) == 1000 * 12 * 2 * 2 * 256 * 2 + state
    assert kv.bytes_per_sequence(1000, tp=2) == 1000 * 12 * 2 * 1 * 256 * 2 + state / 2
    kv = model_memory(NEMOTRON3_NANO).kv  # float32 SSM state, as its config asks
    assert kv.state_bytes == 23 * (64 * 64 * 128 * 4 + (4096 + 2 * 8 * 128) * 3 * 2)


def h100(gib=80):
    return GpuInfo(gib, find_gpu("h100"), "test")


def test_gpt_oss_120b_on_one_80_gb_gpu_holds_a_full_context_at_its_full_layers_rate():
    """60.7 GiB of weights (bf16 attention, MXFP4 experts) leave ~8.8 GiB of KV cache. Per
    token of a 131,072-token sequence its 18 full-attention layers keep 36 KiB and its 18
    sliding layers only their 128-token window: about 256k tokens, not the 128k that 72 KiB
    per token in every layer would give."""
    memory = model_memory(GPT_OSS_120B)
    choice = choose(ModelFacts("gpt-oss-120b", GPT_OSS_120B, memory, "test"), 1, 1, h100())
    assert (choice.shape.tp, choice.shape.dp) == (1, 1), choice.decisions
    per_token = 18 * 2048 + 18 * 2048 * 128 / 131072
    assert choice.fit.weights / GIB == pytest.approx(60.7, abs=0.1)
    assert choice.fit.kv_tokens == pytest.approx(choice.fit.kv_bytes / per_token, rel=1e-6)
    assert choice.fit.kv_tokens > 250_000


def test_maverick_fits_one_node_of_h200_with_experts_in_every_other_layer():
    """400B parameters (801 GB in bf16) over 8 GPUs of 141 GiB, the experts split over
    DP x TP: TP 1 x DP 8 at an 8k context. Counted with experts in all 48 layers (778B) it
    fitted no single node."""
    memory = model_memory(MAVERICK, max_model_len=8192)
    choice = choose(ModelFacts("maverick", MAVERICK, memory, "test"), 1, 8,
                    GpuInfo(141, find_gpu("h200"), "test"))
    assert (choice.shape.tp, choice.shape.dp) == (1, 8), choice.decisions
    assert choice.fit.weights / GIB == pytest.approx(116.1, abs=0.5)


def test_linear_attention_and_mamba_heads_must_split_over_tp():
    check_model_fits(QWEN3_NEXT, Topology(1, 8, 8, 1, 1, 1, 0, "single"))
    nemotron = {**NEMOTRON3_NANO, "n_groups": 4}
    with pytest.raises(PyserveError, match="4 Mamba groups, which TP 8 does not divide"):
        check_model_fits(nemotron, Topology(1, 8, 8, 1, 1, 1, 0, "single"))
    odd = {**QWEN3_NEXT, "linear_num_value_heads": 24, "linear_num_key_heads": 12}
    with pytest.raises(PyserveError, match="12 linear-attention key heads, which TP 8"):
        check_model_fits(odd, Topology(1, 8, 8, 1, 1, 1, 0, "single"))


def test_fewer_attending_layers_lower_the_estimated_prefill_and_decode_cost():
    """The same model with three in four layers' attention made linear streams faster at a
    long prompt: less attention to compute and less cache to read per step."""
    full = {key: value for key, value in QWEN3_NEXT.items()
            if key not in ("full_attention_interval",)}
    work = Workload(isl=8192, osl=256, concurrency=64)
    h200 = find_gpu("h200")
    hybrid = estimate(model_memory(QWEN3_NEXT), h200, tp=4, pp=1, dp=1, ep=False,
                      gpus_per_node=8, workload=work)
    plain = estimate(model_memory(full), h200, tp=4, pp=1, dp=1, ep=False, gpus_per_node=8,
                     workload=work)
    assert hybrid.ttft_ms < plain.ttft_ms and hybrid.tpot_ms < plain.tpot_ms


def test_layouts_enter_the_fingerprint_and_the_stored_shape_keeps_them():
    shape = model_shape(QWEN3_NEXT)
    assert shape.fingerprint != model_shape({**QWEN3_NEXT, "full_attention_interval": 2}) \
        .fingerprint
    # The store rebuilds the memory model from the shape's fields alone.
    rebuilt = shape.memory()
    assert rebuilt.kv.state_layers == 36 and rebuilt.size.total == \
        model_memory(QWEN3_NEXT).size.total
    assert model_shape(MAVERICK).memory().size.total == model_memory(MAVERICK).size.total


@pytest.mark.parametrize("change, message", [
    ({"num_hidden_layers": 10**9}, "1,000,000,000 layers"),
    ({"full_attention_interval": 4, "linear_key_head_dim": "x"}, "linear_key_head_dim"),
    ({"num_experts_per_tok": 10**12}, "routes each token to 1000000000000 of its 512"),
    ({"head_dim": 0}, "head_dim 0"),
])
def test_implausible_or_partial_layouts_are_refused_by_name_or_read_plainly(change, message):
    config = {**QWEN3_NEXT, **change}
    with pytest.raises(PyserveError, match=message):
        model_memory(config)


def test_layout_fields_that_are_not_what_their_family_writes_are_read_plainly():
    # No linear attention without its heads: every layer is full attention.
    plain = model_memory({**QWEN3_NEXT, "linear_num_value_heads": None,
                          "linear_num_key_heads": None})
    assert plain.kv.state_layers == 0 and plain.kv.layers == 48
    # mlp_only_layers that is not a list of layer numbers names none.
    assert model_memory({**QWEN3_NEXT, "mlp_only_layers": "all"}).size.moe_layers == 48


def test_a_plain_model_fits_as_before():
    llama = {"architectures": ["LlamaForCausalLM"], "hidden_size": 8192,
             "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "vocab_size": 128256, "torch_dtype": "bfloat16",
             "max_position_embeddings": 131072}
    memory = model_memory(llama)
    one = fit(memory, 80 * GIB, tp=4)
    assert one.kv_bytes_per_token == memory.kv.bytes_per_token(tp=4) == 2 * 80 * 2 * 128 * 2


def test_plan_of_a_hybrid_model_says_what_its_layers_keep(tmp_path):
    """`pyserve plan` on a Qwen3-Next directory: the model line names the full-attention and
    linear-attention layers, and each candidate's KV tokens count the fixed state of a
    262,144-token sequence, not 48 full layers."""
    import json

    from .conftest import run_pyserve

    (tmp_path / "config.json").write_text(json.dumps(QWEN3_NEXT))
    result = run_pyserve("plan", str(tmp_path), "--gpus-per-node", "8", "--gpu-memory", "80",
                         "--format", "json", "--top", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "12 full-attention layers; 36 linear-attention/Mamba layers hold 37.7 MiB" in \
        json.dumps(data["model_facts"])
    first = data["candidates"][0]
    kv = model_memory(QWEN3_NEXT).kv
    per_token = kv.bytes_per_sequence(262144, first["tp"]) / 262144
    memory = first["memory"]
    assert memory["kv_tokens"] == pytest.approx(memory["kv_cache_gib"] * GIB / per_token,
                                                rel=0.001)


@pytest.mark.parametrize("key", ["text_config", "llm_config", "language_config"])
def test_a_multimodal_models_language_model_is_sized_wherever_its_config_keeps_it(
        tmp_path, key):
    import json

    from pyservecli.plan.modelconfig import load_config

    (tmp_path / "config.json").write_text(json.dumps(
        {"architectures": ["SomeVLForConditionalGeneration"], "vision_config": {"depth": 27},
         key: {**GEMMA3_27B, "architectures": ["Gemma3ForCausalLM"]}}))
    config = load_config(tmp_path)
    assert config["architectures"] == ["SomeVLForConditionalGeneration"]
    assert model_memory(config).size.total / 1e9 == pytest.approx(27.0, rel=0.01)
