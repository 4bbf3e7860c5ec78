"""``pyserve health``: the API checks a served model must pass, as a pass/fail table.

Every check asserts structure and invariants that hold for any weights (random ones included):
counts, finish reasons, that stop strings are absent, that constrained output matches its
constraint. Text content is never compared with an expected sentence.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from pyservecli.errors import PyserveError
from pyservecli.run.readiness import auth_headers, model_cards

# Seconds one check's request may take (the first requests of a cold server are slow).
DEFAULT_TIMEOUT_S = 120.0


class CheckFailed(AssertionError):
    pass


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    seconds: float
    model: str | None = None  # the model checked (None when the server listed none)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class HealthClient:
    def __init__(self, base_url: str, model: str | None, api_key: str | None, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.headers = auth_headers(api_key)
        self.timeout = timeout
        self.session = requests.Session()

    def get(self, path: str) -> dict:
        response = self.session.get(self.base_url + path, headers=self.headers,
                                    timeout=self.timeout)
        _expect(response.status_code == 200, f"GET {path} answered {response.status_code}: "
                f"{response.text[:200]}")
        return response.json()

    def post(self, path: str, body: dict) -> dict:
        response = self.session.post(self.base_url + path, json={"model": self.model, **body},
                                     headers=self.headers, timeout=self.timeout)
        _expect(response.status_code == 200, f"POST {path} answered {response.status_code}: "
                f"{response.text[:200]}")
        return response.json()

    def chat(self, content: str = "Say hello.", **body) -> dict:
        messages = [{"role": "user", "content": content}]
        return self.post("/v1/chat/completions", {"messages": messages, **body})


def check_models(c: HealthClient) -> str:
    try:
        ids = [card["id"] for card in model_cards(c.get("/v1/models"))]
    except ValueError as exc:
        raise CheckFailed(f"/v1/models: {exc}") from None
    _expect(bool(ids), "no model served")
    if c.model is None:
        c.model = ids[0]
    _expect(c.model in ids, f"{c.model} not in {ids}")
    return f"serves {', '.join(ids)}"


def check_completion(c: HealthClient) -> str:
    out = c.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 8})
    _expect(isinstance(out["choices"][0]["text"], str), "no text")
    tokens = out["usage"]["completion_tokens"]
    _expect(1 <= tokens <= 8, f"{tokens} completion tokens for max_tokens 8")
    return f"{tokens} tokens"


def check_batch_prompt(c: HealthClient) -> str:
    prompts = ["One", "Two words", "Three little words"]
    out = c.post("/v1/completions", {"prompt": prompts, "max_tokens": 4})
    indexes = sorted(choice["index"] for choice in out["choices"])
    _expect(indexes == [0, 1, 2], f"choice indexes {indexes} for 3 prompts")
    return "3 prompts, 3 choices"


def check_chat(c: HealthClient) -> str:
    out = c.chat(max_tokens=8)
    message = out["choices"][0]["message"]
    _expect(message["role"] == "assistant", f"role {message['role']!r}")
    _expect(isinstance(message["content"], str), "no content")
    return f"{out['usage']['completion_tokens']} tokens"


def check_sampling_params(c: HealthClient) -> str:
    body = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0.8, "top_p": 0.9,
            "top_k": 20, "presence_penalty": 0.5, "frequency_penalty": 0.5, "seed": 42}
    first = c.post("/v1/completions", body)["choices"][0]["text"]
    second = c.post("/v1/completions", body)["choices"][0]["text"]
    _expect(first == second, "the same seed gave different text")
    return "seeded sampling is repeatable"


def check_streaming(c: HealthClient) -> str:
    body = {"model": c.model, "messages": [{"role": "user", "content": "Count to five."}],
            "max_tokens": 8, "stream": True}
    response = c.session.post(c.base_url + "/v1/chat/completions", json=body, headers=c.headers,
                              timeout=c.timeout, stream=True)
    _expect(response.status_code == 200, f"answered {response.status_code}")
    chunks, done = 0, False
    for raw in response.iter_lines():
        line = raw.decode()
        if not line.startswith("data: "):
            continue
        payload = line[len("data: "):]
        if payload == "[DONE]":
            done = True
            break
        json.loads(payload)
        chunks += 1
    _expect(done, "stream did not end with [DONE]")
    _expect(chunks >= 2, f"only {chunks} chunk(s)")
    return f"{chunks} chunks then [DONE]"


def check_logprobs(c: HealthClient) -> str:
    out = c.post("/v1/completions", {"prompt": "Hello", "max_tokens": 4, "logprobs": 2})
    logprobs = out["choices"][0]["logprobs"]
    tokens = out["usage"]["completion_tokens"]
    _expect(len(logprobs["token_logprobs"]) == tokens,
            f"{len(logprobs['token_logprobs'])} logprobs for {tokens} tokens")
    _expect(all(lp <= 0 for lp in logprobs["token_logprobs"]), "a logprob above 0")
    _expect(all(len(top) >= 2 for top in logprobs["top_logprobs"]), "fewer than 2 top logprobs")
    return f"{tokens} tokens with top-2"


def check_stop_sequences(c: HealthClient) -> str:
    stops = ["w", "\n"]
    out = c.post("/v1/completions", {"prompt": "List: a, b,", "max_tokens": 16, "stop": stops})
    choice = out["choices"][0]
    _expect(not any(s in choice["text"] for s in stops), f"stop string in {choice['text']!r}")
    _expect(choice["finish_reason"] in ("stop", "length"), f"finish {choice['finish_reason']}")
    return f"finish_reason {choice['finish_reason']}"


def check_echo(c: HealthClient) -> str:
    prompt = "Echo this prompt"
    out = c.post("/v1/completions", {"prompt": prompt, "max_tokens": 4, "echo": True})
    _expect(out["choices"][0]["text"].startswith(prompt), "prompt not echoed")
    return "prompt echoed"


def check_n2(c: HealthClient) -> str:
    out = c.post("/v1/completions", {"prompt": "Pick a number", "max_tokens": 4, "n": 2,
                                     "temperature": 1.0})
    _expect(len(out["choices"]) == 2, f"{len(out['choices'])} choices for n=2")
    return "2 choices"


def check_json_schema(c: HealthClient) -> str:
    # maxLength keeps random weights from writing an endless string; whitespace stays allowed.
    schema = {"type": "object",
              "properties": {"name": {"type": "string", "maxLength": 8},
                             "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    out = c.chat("Describe a person as JSON.", max_tokens=256, response_format={
        "type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    choice = out["choices"][0]
    content = choice["message"]["content"]
    _expect(choice["finish_reason"] == "stop", f"unfinished after 256 tokens: {content[:80]!r}")
    value = json.loads(content, strict=False)  # random weights may put control chars in strings
    _expect(isinstance(value.get("name"), str) and isinstance(value.get("age"), int),
            f"{content!r} does not match the schema")
    return "valid JSON for the schema"


def check_regex(c: HealthClient) -> str:
    pattern = r"[a-z]{3}-[0-9]{2}"
    out = c.chat("Give a code.", max_tokens=16, structured_outputs={"regex": pattern})
    content = out["choices"][0]["message"]["content"]
    _expect(re.fullmatch(pattern, content) is not None, f"{content!r} !~ {pattern}")
    return repr(content)


def check_choice(c: HealthClient) -> str:
    options = ["yes", "no"]
    out = c.chat("Yes or no?", max_tokens=8, structured_outputs={"choice": options})
    content = out["choices"][0]["message"]["content"]
    _expect(content in options, f"{content!r} not one of {options}")
    return repr(content)


def check_grammar(c: HealthClient) -> str:
    grammar = 'root ::= "cat" | "dog"'
    out = c.chat("Name a pet.", max_tokens=8, structured_outputs={"grammar": grammar})
    content = out["choices"][0]["message"]["content"]
    _expect(content in ("cat", "dog"), f"{content!r} outside the grammar")
    return repr(content)


CHECKS: tuple[tuple[str, Callable[[HealthClient], str]], ...] = (
    ("models", check_models),
    ("completion", check_completion),
    ("batch prompt", check_batch_prompt),
    ("chat", check_chat),
    ("sampling params", check_sampling_params),
    ("streaming", check_streaming),
    ("logprobs", check_logprobs),
    ("stop sequences", check_stop_sequences),
    ("echo", check_echo),
    ("n=2", check_n2),
    ("json_schema", check_json_schema),
    ("regex", check_regex),
    ("choice", check_choice),
    ("grammar", check_grammar),
)


def models_to_check(base_url: str, api_key: str | None = None,
                    timeout: float = DEFAULT_TIMEOUT_S) -> list[str | None]:
    """Every model an endpoint lists when it lists several (vllm-router in front of several
    models), else [None]: the checks then take the one listed, or report why none is."""
    try:
        ids = [c["id"] for c in model_cards(HealthClient(base_url, None, api_key, timeout)
                                            .get("/v1/models"))]
    except requests.ConnectionError as exc:
        # Nothing there to check: the same one line and exit 2 as `pyserve bench` (#26).
        raise PyserveError(f"no server answers at {base_url} ({type(exc).__name__})") from None
    except (requests.RequestException, CheckFailed, ValueError):
        return [None]
    return list(ids) if len(ids) > 1 else [None]


def validate_checks(only: list[str] | None) -> None:
    """An unknown check name is refused before any request."""
    unknown = set(only or ()) - {name for name, _ in CHECKS}
    if unknown:
        raise PyserveError(f"unknown check(s) {', '.join(sorted(unknown))}; choose from "
                           f"{', '.join(name for name, _ in CHECKS)}")


def run_checks(base_url: str, model: str | None = None, api_key: str | None = None,
               timeout: float = DEFAULT_TIMEOUT_S,
               only: list[str] | None = None) -> list[CheckResult]:
    """Run the checks in order (``only``: these names, "models" always); if the server cannot
    even list models the rest are skipped. An unknown name is refused before any request."""
    validate_checks(only)
    client = HealthClient(base_url, model, api_key, timeout)
    results = []
    for name, check in CHECKS:
        if only and name not in only and name != "models":
            continue
        start = time.monotonic()
        try:
            detail, passed = check(client), True
        except requests.RequestException as exc:
            detail, passed = f"{type(exc).__name__}: {exc}", False
        except (CheckFailed, KeyError, IndexError, TypeError, ValueError) as exc:
            detail, passed = f"{type(exc).__name__}: {exc}", False
        results.append(CheckResult(name, passed, detail, time.monotonic() - start,
                                   client.model))
        if name == "models" and not passed:
            break
    return results
