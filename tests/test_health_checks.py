"""The 14 health checks against a stand-in OpenAI server (no engine): a server that keeps every
promise passes all of them, and each broken promise fails exactly its own check; `pyserve bench`
against an endpoint of several models (one test runs vLLM's bench client, marked engine)."""

import csv
import io
import json

import pytest

from pyservecli import api
from pyservecli.bench.health import CHECKS
from pyservecli.bench.provenance import _model_share
from pyservecli.bench.runner import model_dir_name, served_models
from pyservecli.bench.suites import custom_point, point_seed
from pyservecli.errors import PyserveError
from pyservecli.models.dummy import create_model_dir

from .conftest import run_pyserve
from .engine import require_engine
from .standin_openai import FAULTS, MODEL, standin_server


def test_a_server_that_keeps_every_promise_passes_all_checks():
    with standin_server() as base:
        results = api.health(base, timeout=10)
    assert [r.name for r in results] == [name for name, _ in CHECKS]
    assert len(results) == 14
    assert all(r.passed for r in results), [(r.name, r.detail) for r in results if not r.passed]
    assert results[0].detail == f"serves {MODEL}"


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_broken_promise_fails_its_own_check(fault):
    with standin_server({fault}) as base:
        results = api.health(base, timeout=10)
    failed = [r.name for r in results if not r.passed]
    assert failed == [fault], f"{FAULTS[fault]}: {[(r.name, r.detail) for r in results]}"


def test_a_model_the_server_does_not_list_stops_after_the_first_check():
    with standin_server() as base:
        results = api.health(base, model="other-model", timeout=10)
    assert [(r.name, r.passed) for r in results] == [("models", False)]
    assert "other-model not in" in results[0].detail


def test_the_key_is_sent_and_a_wrong_key_fails(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("sk-right\n")
    with standin_server(api_key="sk-right") as base:
        assert all(r.passed for r in api.health(base, api_key="sk-right", only=["chat"]))
        wrong = api.health(base, api_key="sk-wrong", only=["chat"])
        host, port = base.removeprefix("http://").split(":")
        cli = run_pyserve("health", "--host", host, "--port", port, "--api-key-file",
                          str(key_file), "--check", "completion", "--format", "json")
    assert not wrong[0].passed and "401" in wrong[0].detail
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "sk-right" not in cli.stdout + cli.stderr


def test_the_cli_exits_1_and_names_the_failed_check():
    with standin_server({"grammar"}) as base:
        host, port = base.removeprefix("http://").split(":")
        cli = run_pyserve("health", "--host", host, "--port", port)
    assert cli.returncode == 1
    assert "13 of 14 checks passed" in cli.stdout


@pytest.mark.parametrize("listing, ids", [
    ({"object": "list", "data": [{"id": "a", "max_model_len": 4096}, {"id": "b"}]}, ["a", "b"]),
    ({"models": ["a", "b"]}, ["a", "b"]),  # vllm-router 0.1.17's gateway mode
    ({"models": [{"id": "a"}]}, ["a"]),
    ({"data": []}, []),
])
def test_model_lists_of_vllm_and_of_the_routers_gateway_mode_are_read(listing, ids):
    from pyservecli.run.readiness import model_cards

    assert [card["id"] for card in model_cards(listing)] == ids


@pytest.mark.parametrize("listing", [
    {"object": "list"}, [], {"data": "a"}, {"models": [1]}, {"data": [{"name": "a"}]}, None,
])
def test_anything_else_is_not_a_model_list(listing):
    from pyservecli.run.readiness import model_cards

    with pytest.raises(ValueError):
        model_cards(listing)


def test_every_model_behind_a_gateway_is_checked_unless_one_is_named():
    """vllm-router in front of several models lists them as {"models": [...]}: without --model
    each gets the 14 checks, one table with a model column; --model checks that one only."""
    with standin_server(models=["model-a", "model-b"]) as base:
        host, port = base.removeprefix("http://").split(":")
        both = run_pyserve("health", "--host", host, "--port", port, "--format", "json")
        text = run_pyserve("health", "--host", host, "--port", port, "--check", "chat")
        one = run_pyserve("health", "--host", host, "--port", port, "--model", "model-b",
                          "--format", "json")
        rows = run_pyserve("health", "--host", host, "--port", port, "--format", "csv")
    assert both.returncode == 0, both.stdout + both.stderr
    # --format csv: the same rows as the JSON, for scripts (#26).
    table = list(csv.DictReader(io.StringIO(rows.stdout)))
    assert rows.returncode == 0 and len(table) == 28
    assert [(r["model"], r["name"]) for r in table] == [
        (r["model"], r["name"]) for r in json.loads(both.stdout)]
    results = json.loads(both.stdout)
    assert [r["model"] for r in results] == ["model-a"] * 14 + ["model-b"] * 14
    assert all(r["passed"] for r in results)
    assert text.returncode == 0 and "model-b" in text.stdout
    assert "4 of 4 checks passed" in text.stdout  # models + chat, for each model
    assert one.returncode == 0
    assert {r["model"] for r in json.loads(one.stdout)} == {"model-b"}


def test_bench_finds_every_model_of_a_gateway_and_names_a_folder_for_each():
    """The parts of `pyserve bench` against several models that need no client: the model list,
    --model picking one, and results folders named after models a server chose."""
    with standin_server(models=["Org/model-a", "model-b"]) as base:
        assert [s.model for s in served_models(base, None, None)] == ["Org/model-a", "model-b"]
        assert [s.model for s in served_models(base, "model-b", None)] == ["model-b"]
        with pytest.raises(PyserveError, match="does not serve nope; it serves Org/model-a, "
                                               "model-b"):
            served_models(base, "nope", None)
    taken: set[str] = set()
    names = [model_dir_name(m, taken) for m in
             ("Qwen/Qwen3-8B", "Qwen--Qwen3-8B", "../..", "--help", "/abs/path", "a b;c")]
    assert names == ["Qwen--Qwen3-8B", "Qwen--Qwen3-8B-2", "model", "help", "abs--path", "a-b-c"]


def test_a_models_provenance_counts_its_own_servers_gpus():
    """Behind a router serving two models, tok/s per GPU of one model is over its GPUs, and its
    command is its own server's (not the first replica of the fleet)."""
    roles = {"replicas": [
        {"model": "dense", "argv": ["vllm", "serve", "dense"], "topology": {"tp": 1, "dp": 2}},
        {"model": "moe", "argv": ["vllm", "serve", "moe"], "topology": {"tp": 2, "pp": 1}},
        {"model": "moe", "argv": ["vllm", "serve", "moe"], "topology": {"tp": 2, "pp": 1}},
    ]}
    assert _model_share(roles, "moe") == {"server_argv": ["vllm", "serve", "moe"],
                                          "topology": {"tp": 2, "pp": 1}, "gpus_serving": 4,
                                          "model_servers": 2}
    assert _model_share(roles, "dense")["gpus_serving"] == 2
    # One model (replicas, or prefill + decode): the fleet's figures stand.
    assert _model_share({"replicas": roles["replicas"][1:]}, "moe") == {}
    assert _model_share(None, "moe") == {}


def test_bench_refuses_a_tokenizer_it_cannot_load_before_running_a_point(tmp_path):
    """The stand-in's model name is no directory and is in no cache, offline (as in every
    test): the client could not load its tokenizer, so nothing runs."""
    with standin_server() as base:
        host, port = base.removeprefix("http://").split(":")
        result = run_pyserve("bench", "--host", host, "--port", port, "--isl", "8", "--osl",
                             "4", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"pyserve: error: the tokenizer of {MODEL} is not in the "
                                    "Hugging Face cache")
    assert "give --tokenizer DIR" in result.stderr
    assert not (tmp_path / "out" / "custom").exists()


@pytest.mark.engine
def test_bench_measures_every_model_of_a_gateway_into_its_own_folder(tmp_path):
    """`pyserve bench` with no --model against an endpoint listing two models: vLLM's client
    runs each model's points, one folder and summary.csv each, a model column in the table."""
    require_engine()
    models = [str(create_model_dir("qwen3-tiny", tmp_path / name)) for name in ("a", "b")]
    with standin_server(models=models) as base:
        host, port = base.removeprefix("http://").split(":")
        args = ["bench", "--host", host, "--port", port, "--isl", "8", "--osl", "4",
                "--concurrency", "2", "--num-prompts", "3", "--out", str(tmp_path / "out")]
        result = run_pyserve(*args, "--seed", "5", timeout=300)
        refused = run_pyserve(*args, "--tokenizer", models[0])
        runs = api.sweep(base_url=base, points=[custom_point(8, 4, 2, 3)],
                         out=tmp_path / "sweep", say=lambda _line: None)
    assert result.returncode == 0, result.stdout + result.stderr
    for model in models:
        folder = tmp_path / "out" / model_dir_name(model, set())
        point = json.loads((folder / "custom" / "i8-o4-rinf-c2.json").read_text())
        assert point["model_id"] == model and point["completed"] == 3
        # --seed repeats a run: the point's prompts come from the seed derived from it.
        assert point["pyserve"]["run_seed"] == 5
        assert point["pyserve"]["seed"] == point_seed(custom_point(8, 4, 2, 3), 5)
        assert (folder / "summary.csv").read_text().count("\n") == 2
        assert f"model {model} -> " in result.stderr
    assert "┃ model" in result.stdout
    assert refused.returncode == 2
    assert "serves 2 models; --tokenizer is one model's: give --model too" in refused.stderr
    # pyserve sweep against the same endpoint: one run per model, HOST-PORT/<model>.
    label = base.removeprefix("http://").replace(":", "-")
    assert [r.label for r in runs] == [f"{label}/{model_dir_name(m, set())}" for m in models]
    assert [[p.result["model_id"] for p in r.results] for r in runs] == [[m] for m in models]
