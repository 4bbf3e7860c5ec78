"""A stand-in ``vllm`` executable for launcher tests that need no engine: ``vllm serve MODEL
[--port P] ...`` prints vLLM's startup line and serves the stand-in OpenAI API
(tests/standin_openai.py) with MODEL as the served name, until stopped. With FAKE_VLLM_ENV set,
it first writes its environment there (JSON), and with FAKE_VLLM_ARGV its argv. With
FAKE_VLLM_TERM_DELAY=S it takes S seconds to stop after SIGTERM (a server slow to stop), and
with FAKE_VLLM_TERM_LOG it appends "PORT TIME" there when the signal arrives. With
FAKE_VLLM_START_DELAY=DEVICES:S the server pinned to CUDA_VISIBLE_DEVICES=DEVICES (one replica
of a fleet) takes S seconds more to start."""

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import standin_openai  # noqa: E402


def main(argv: list[str]) -> int:
    if argv[:1] != ["serve"] or len(argv) < 2:
        print(f"fake vllm: only `serve MODEL` is known, got {argv}", file=sys.stderr)
        return 2
    if os.environ.get("FAKE_VLLM_ENV"):
        Path(os.environ["FAKE_VLLM_ENV"]).write_text(json.dumps(dict(os.environ)))
    if os.environ.get("FAKE_VLLM_ARGV"):
        Path(os.environ["FAKE_VLLM_ARGV"]).write_text(json.dumps(argv))
    model = argv[1]
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 8000
    standin_openai.MODEL = model
    devices, _, delay = (os.environ.get("FAKE_VLLM_START_DELAY") or "").partition(":")
    if delay and os.environ.get("CUDA_VISIBLE_DEVICES") == devices:
        print("fake vllm: starting slowly", flush=True)
        time.sleep(float(delay))

    def on_signal(*_args):
        if os.environ.get("FAKE_VLLM_TERM_LOG"):
            with open(os.environ["FAKE_VLLM_TERM_LOG"], "a") as log:
                log.write(f"{port} {time.time()}\n")
        delay = float(os.environ.get("FAKE_VLLM_TERM_DELAY") or 0)
        if delay:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(delay)
        raise SystemExit(0)

    # The server runs in the main thread, so the signal's handler runs there promptly.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = standin_openai.make_server(port=port, api_key=os.environ.get("VLLM_API_KEY"),
                                        host=argv[argv.index("--host") + 1]
                                        if "--host" in argv else None)
    print("INFO:     Application startup complete.", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        print("fake vllm: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
