"""A small stand-in for vLLM's OpenAI server (no engine): enough of /v1/models, completions and
chat completions to drive ``pyserve health``, with faults to switch on one at a time. It
answers like a server with random weights would: arbitrary text, but every constraint kept."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "standin-model"
# Each fault breaks exactly one promise of the API (the check of the same name must fail).
FAULTS = {
    "batch prompt": "one choice for a list of prompts",
    "sampling params": "a seed that does not repeat",
    "streaming": "a stream without [DONE]",
    "logprobs": "a positive logprob",
    "stop sequences": "stop strings left in the text",
    "echo": "the prompt not echoed",
    "n=2": "one choice for n=2",
    "json_schema": "JSON of the wrong shape",
    "regex": "text outside the regex",
    "choice": "an answer outside the choices",
    "grammar": "a word outside the grammar",
}


def _completion_text(body: dict, faults: set[str], counter: list[int]) -> str:
    text = "w x\ny"  # holds both stop strings of the stop-sequence check
    if body.get("stop") and "stop sequences" not in faults:
        text = "xyz"
    if body.get("seed") is not None and "sampling params" in faults:
        counter[0] += 1
        text = f"{text}{counter[0]}"
    if body.get("echo") and "echo" not in faults:
        text = str(body["prompt"]) + text
    return text


def _chat_content(body: dict, faults: set[str]) -> str:
    structured = body.get("structured_outputs") or {}
    if body.get("response_format", {}).get("type") == "json_schema":
        return '{"name": 7}' if "json_schema" in faults else '{"name": "ab", "age": 3}'
    if "regex" in structured:
        return "abcd" if "regex" in faults else "abc-12"
    if "choice" in structured:
        return "maybe" if "choice" in faults else structured["choice"][0]
    if "grammar" in structured:
        return "bird" if "grammar" in faults else "cat"
    return "hello there"


def make_handler(faults: set[str], api_key: str | None, models: list[str] | None = None):
    """``models``: serve these names and list them as vllm-router's gateway mode does
    (``{"models": [...]}``); default: MODEL, in OpenAI's list."""
    counter = [0]
    # What vLLM's /metrics would say (its names): tokens served so far, requests in flight.
    served = {"prompt": 0, "generation": 0, "running": 0}
    served_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args):  # quiet
            pass

        def _send(self, status: int, payload) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                self._send(401, {"error": "Unauthorized"})
                return False
            return True

        def do_GET(self):
            if self.path == "/health":
                return self._send(200, {})
            if self.path == "/metrics":  # unauthenticated, as vLLM's
                with served_lock:
                    text = (f'vllm:num_requests_running{{model_name="{MODEL}"}} '
                            f'{served["running"]}\n'
                            f'vllm:num_requests_waiting{{model_name="{MODEL}"}} 0\n'
                            f'vllm:kv_cache_usage_perc{{model_name="{MODEL}"}} 0.25\n'
                            f'vllm:num_preemptions_total{{model_name="{MODEL}"}} 0\n'
                            f'vllm:prompt_tokens_total{{model_name="{MODEL}"}} '
                            f'{served["prompt"]}\n'
                            f'vllm:generation_tokens_total{{model_name="{MODEL}"}} '
                            f'{served["generation"]}\n').encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
                return None
            if not self._authorised():
                return None
            if self.path == "/v1/models":
                if models:
                    return self._send(200, {"models": list(models)})
                return self._send(200, {"data": [{"id": MODEL, "max_model_len": 2048}]})
            return self._send(404, {"error": self.path})

        def do_POST(self):
            if not self._authorised():
                return None
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                return self._send(404, {"error": self.path})  # as vLLM without dev mode
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body.get("model") not in (models or [MODEL]):
                return self._send(404, {"error": f"model {body.get('model')} not served"})
            if self.path == "/v1/completions":
                with served_lock:
                    served["running"] += 1
                try:
                    return self._completions(body)
                finally:
                    with served_lock:
                        served["running"] -= 1
                        served["prompt"] += len(str(body.get("prompt", "")).split())
                        served["generation"] += min(body.get("max_tokens", 16), 3)
            if self.path == "/v1/chat/completions":
                return self._chat(body)
            return self._send(404, {"error": self.path})

        def _completions(self, body):
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            if "batch prompt" in faults:
                prompts = prompts[:1]
            n = 1 if "n=2" in faults else body.get("n", 1)
            tokens = min(body.get("max_tokens", 16), 3)
            choices = []
            for index in range(len(prompts) * n):
                choice = {"index": index, "finish_reason": "length",
                          "text": _completion_text({**body, "prompt": prompts[index // n]},
                                                   faults, counter)}
                if body.get("logprobs"):
                    value = 0.5 if "logprobs" in faults else -0.5
                    choice["logprobs"] = {
                        "token_logprobs": [value] * tokens,
                        "top_logprobs": [{"a": -0.5, "b": -1.0}] * tokens}
                choices.append(choice)
            return self._send(200, {"model": body["model"], "choices": choices,
                                    "usage": {"completion_tokens": tokens}})

        def _chat(self, body):
            content = _chat_content(body, faults)
            if body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for word in content.split():
                    chunk = {"choices": [{"delta": {"content": word}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if "streaming" not in faults:
                    self.wfile.write(b"data: [DONE]\n\n")
                return None
            return self._send(200, {
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"completion_tokens": 2}})

    return Handler


def make_server(faults: set[str] = frozenset(), api_key: str | None = None,
                port: int = 0, models: list[str] | None = None,
                host: str | None = None) -> ThreadingHTTPServer:
    ThreadingHTTPServer.allow_reuse_address = True
    host = host or ("0.0.0.0" if port else "127.0.0.1")  # vLLM's default: every interface
    return ThreadingHTTPServer((host, port),
                               make_handler(set(faults), api_key, models))


@contextmanager
def standin_server(faults: set[str] = frozenset(), api_key: str | None = None, port: int = 0,
                   models: list[str] | None = None):
    """Yields the base URL (http://127.0.0.1:PORT) of a running stand-in; stops it after."""
    unknown = set(faults) - set(FAULTS)
    assert not unknown, unknown
    server = make_server(faults, api_key, port, models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
