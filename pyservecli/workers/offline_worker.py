"""One rank of ``pyserve offline``: vLLM's offline engine under torchrun, timed per token.

Started by torchrun (one process per GPU, ``RANK``/``WORLD_SIZE`` in the environment) as
``python -m pyservecli.workers.offline_worker CONFIG.json``. Every rank builds the same ``LLM`` with
``distributed_executor_backend="external_launcher"`` (vLLM derives the DP rank from ``RANK``),
takes its DP rank's share of the prompts and drives the engine step by step, so each request's
first-token time and every inter-token gap are measured where the tokens are produced. Only the
first rank of each DP group (TP/PP rank 0) writes ``samples-dp<K>.json``: a request is counted
once, not once per TP rank. The parent merges those files (``pyservecli.plan.offline``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path


def _rank_env() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _build_llm(cfg: dict):
    from vllm import LLM

    kwargs = dict(model=cfg["model"], tensor_parallel_size=cfg["tp"],
                  pipeline_parallel_size=cfg["pp"], data_parallel_size=cfg["dp"],
                  enable_expert_parallel=cfg["ep"], seed=cfg["seed"], **cfg["engine_kwargs"],
                  # Always, one rank too: torchrun exports TORCHELASTIC_USE_AGENT_STORE, so an
                  # engine process of vLLM's own would dial a c10d store nobody serves and hang
                  # (seen on an H200 with a single rank). The engine runs in this process.
                  distributed_executor_backend="external_launcher")
    if cfg.get("torch_profile_dir"):
        from pyservecli.plan.profiling import torch_profiler_settings

        kwargs["profiler_config"] = torch_profiler_settings(cfg["torch_profile_dir"])
    return LLM(**kwargs)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _cuda_profiler(start: bool) -> None:
    """The capture range of ``nsys --capture-range=cudaProfilerApi``: the measured run only."""
    try:
        import torch

        if torch.cuda.is_available():
            (torch.cuda.profiler.start if start else torch.cuda.profiler.stop)()
    except (ImportError, RuntimeError):
        pass


def _prompts(cfg: dict, llm) -> list[dict]:
    from pyservecli.bench.offline import random_token_prompts, sharegpt_prompts

    tokenizer = llm.get_tokenizer()
    if cfg.get("dataset_path"):
        max_len = llm.llm_engine.vllm_config.model_config.max_model_len
        return sharegpt_prompts(cfg["dataset_path"], tokenizer, cfg["num_prompts"],
                                max_len, cfg.get("output_len"), cfg["seed"])
    return random_token_prompts(tokenizer, cfg["num_prompts"], cfg["input_len"],
                                cfg["output_len"], cfg["seed"])


def run_requests(engine, requests: list[dict], id_prefix: str) -> list[dict]:
    """Drive ``engine`` (vLLM's LLMEngine) until every DP rank is done; per-request samples."""
    from vllm import SamplingParams

    start_at: dict[str, float] = {}
    first_at: dict[str, float] = {}
    last_at: dict[str, float] = {}
    seen: dict[str, int] = {}
    gaps: dict[str, list[float]] = {}
    final: dict[str, object] = {}
    for index, request in enumerate(requests):
        request_id = f"{id_prefix}-{index}"
        params = SamplingParams(max_tokens=request["output_len"], ignore_eos=True,
                                temperature=1.0, top_p=1.0)
        start_at[request_id] = time.perf_counter()
        engine.add_request(request_id, {"prompt_token_ids": request["prompt_token_ids"]},
                           params)
        seen[request_id] = 0
        gaps[request_id] = []
    # has_unfinished_requests() agrees across DP ranks in external-launcher mode, so a rank with
    # nothing left keeps stepping (dummy batches) until the others finish, as collectives need.
    while engine.has_unfinished_requests():
        outputs = engine.step()
        now = time.perf_counter()
        for output in outputs:
            request_id = output.request_id
            if request_id not in seen:
                continue
            produced = len(output.outputs[0].token_ids)
            if produced > seen[request_id]:
                if seen[request_id] == 0:
                    first_at[request_id] = now
                else:
                    gaps[request_id].append(now - last_at[request_id])
                last_at[request_id] = now
                seen[request_id] = produced
            if output.finished:
                final[request_id] = output
    samples = []
    for request_id, output in final.items():
        prompt_ids = list(output.prompt_token_ids or [])
        ttft = first_at[request_id] - start_at[request_id]
        e2e = last_at[request_id] - start_at[request_id]
        samples.append({
            "id": request_id,
            "input_len": len(prompt_ids),
            "output_len": seen[request_id],
            "prompt_sha1": hashlib.sha1(json.dumps(prompt_ids).encode()).hexdigest(),
            "ttft_s": ttft,
            "e2e_s": e2e,
            "itl_s": gaps[request_id],
        })
    return samples


def main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    rank, world = _rank_env()
    out = Path(cfg["out_dir"])
    llm = _build_llm(cfg)
    parallel = llm.llm_engine.vllm_config.parallel_config
    dp_rank = parallel.data_parallel_rank if cfg["dp"] > 1 else 0
    group_size = cfg["tp"] * cfg["pp"]
    writer = rank % group_size == 0
    requests = _prompts(cfg, llm)[dp_rank::cfg["dp"]]
    engine = llm.llm_engine

    # Warm-up outside the measured window (first-request allocations, lazy compilation).
    run_requests(engine, [dict(requests[0], output_len=min(8, requests[0]["output_len"]))]
                 if requests else [], f"warmup-r{rank}")
    tracer = None
    if cfg.get("viztracer"):
        from viztracer import VizTracer

        tracer = VizTracer(output_file=cfg["viztracer"].replace("{rank}", str(rank)),
                           tracer_entries=cfg.get("viztracer_entries", 2_000_000),
                           verbose=0)
    _barrier()
    if cfg.get("torch_profile_dir"):
        llm.start_profile()
    _cuda_profiler(True)
    if tracer:
        tracer.start()
    wall_start = time.time()
    started = time.perf_counter()
    samples = run_requests(engine, requests, f"dp{dp_rank}")
    duration = time.perf_counter() - started
    if tracer:
        tracer.stop()
        tracer.save()
    _cuda_profiler(False)
    if cfg.get("torch_profile_dir"):
        llm.stop_profile()
    if writer:
        (out / f"samples-dp{dp_rank}.json").write_text(json.dumps({
            "dp_rank": dp_rank, "rank": rank, "world_size": world,
            "wall_start": wall_start, "duration_s": duration, "samples": samples,
        }))
    print(f"pyserve offline: rank {rank} (DP rank {dp_rank}) finished {len(samples)} requests "
          f"in {duration:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
