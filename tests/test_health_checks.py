"""The 14 health checks against a stand-in OpenAI server (no engine): a server that keeps every
promise passes all of them, and each broken promise fails exactly its own check."""

import json

import pytest

from pyservecli import api
from pyservecli.bench.health import CHECKS

from .conftest import run_pyserve
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
    assert both.returncode == 0, both.stdout + both.stderr
    results = json.loads(both.stdout)
    assert [r["model"] for r in results] == ["model-a"] * 14 + ["model-b"] * 14
    assert all(r["passed"] for r in results)
    assert text.returncode == 0 and "model-b" in text.stdout
    assert "4 of 4 checks passed" in text.stdout  # models + chat, for each model
    assert one.returncode == 0
    assert {r["model"] for r in json.loads(one.stdout)} == {"model-b"}
