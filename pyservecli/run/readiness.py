"""When is a server really ready, and what is it doing until then.

READY means all three: ``/health`` answers 200, ``/v1/models`` lists the served model, and a
one-token completion succeeds. The startup phases come from the head node's log, so a user
watching a 10-minute model load sees weights, compile and CUDA-graph progress instead of silence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import requests

# (phase shown to the user, pattern in vLLM's log). Order is startup order.
PHASES: tuple[tuple[str, re.Pattern], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        # --image: the node's entrypoint loads, pulls or converts the image first (minutes for
        # a large one), then starts the container.
        ("preparing image", r"^pyserve: (loading \S+ from|building \S+ on)"),
        ("container started", r"^pyserve: node \d+ \(.*\) (container|apptainer) "),
        ("starting engine", r"Initializing a V1 LLM engine"),
        ("loading weights", r"Starting to load model|Loading weights|Loading safetensors"),
        ("weights loaded", r"Loading weights took|Model loading took|Initializing model took"),
        ("compiling", r"Starting torch\.compile|Compiling a graph|Dynamo bytecode transform"),
        ("capturing CUDA graphs", r"Capturing CUDA graph|Graph capturing"),
        ("allocating KV cache", r"KV cache size|Available KV cache memory"),
        ("engine initialised", r"init engine .* took"),
        ("starting API server", r"Starting vLLM (API )?server on"),
        ("API server up", r"Application startup complete"),
    )
)
STARTUP_COMPLETE = "Application startup complete"
API_STARTING = "starting API server"  # from here on READY is seconds away: probe often
# vLLM's torch.compile cache: graphs loaded from it (hit) or compiled anew (miss). vLLM 0.26
# (GPU) says "Compiling a graph for" / "Directly load the compiled graph"; 0.32 (CPU) saves an
# AOT-compiled function ("saved AOT compiled function to") and, when the one in the cache does
# not load, says why before compiling again: a miss whose reason the user should see.
COMPILE_CACHE_HIT = re.compile(r"Directly load (the compiled graph|AOT compilation)")
COMPILE_CACHE_MISS = re.compile(r"Compiling a graph for|saved AOT compiled function to")
COMPILE_CACHE_LOAD_FAILED = re.compile(r"Compiling model again due to a load failure from \S+?,?"
                                       r" reason: (?P<why>.+)$")


class LogFollower:
    """Reads lines appended to a log file since the last call (the file may not exist yet)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [line.decode("utf-8", "replace") for line in lines]


@dataclass
class PhaseTracker:
    """The furthest startup phase seen so far in a stream of log lines."""

    index: int = -1
    startup_complete_seen: bool = False
    # phase name -> seconds (the caller's clock) when it was first seen: the startup ledger
    reached_at: dict[str, float] = field(default_factory=dict)
    compile_cache: str | None = None  # "hit" | "miss" | None (not compiled, or not said)
    # Why a graph the cache held was compiled again (vLLM's words), when it said so.
    compile_cache_why: str | None = None

    def feed(self, line: str, now: float | None = None) -> str | None:
        """Return the new phase name when ``line`` moves startup forward."""
        if STARTUP_COMPLETE in line:
            self.startup_complete_seen = True
        failed = COMPILE_CACHE_LOAD_FAILED.search(line)
        if failed:
            self.compile_cache = "miss"
            self.compile_cache_why = f"the cached graph did not load: {failed['why'].strip()}"
        elif COMPILE_CACHE_MISS.search(line):
            self.compile_cache = "miss"
        elif COMPILE_CACHE_HIT.search(line) and self.compile_cache is None:
            self.compile_cache = "hit"
        for i in range(len(PHASES) - 1, self.index, -1):
            if PHASES[i][1].search(line):
                self.index = i
                if now is not None:
                    self.reached_at.setdefault(PHASES[i][0], round(now, 2))
                return PHASES[i][0]
        return None

    def ledger(self) -> dict:
        """Seconds from launch at which each phase was first seen, and the compile cache."""
        ledger = {"phases_s": dict(self.reached_at), "compile_cache": self.compile_cache}
        if self.compile_cache_why:
            ledger["compile_cache_why"] = self.compile_cache_why
        return ledger

    @property
    def phase(self) -> str:
        return PHASES[self.index][0] if self.index >= 0 else "starting"

    def reached(self, phase: str) -> bool:
        """Whether startup got to ``phase`` (a name of PHASES) or further."""
        return self.index >= [name for name, _ in PHASES].index(phase)


_ERROR_LINE = re.compile(r"(?:^|[\s.])((?:[A-Z]\w*)(?:Error|Exception|Exit)\b: .+)$")


# What vLLM raises on top of the real cause, which it printed earlier in the log.
_WRAPPER_ERRORS = ("See root cause above", "See stack trace for root cause",
                   "exception in a background process")
_VALIDATION = re.compile(r"ValidationError: \d+ validation errors? for ")


def last_error(lines: list[str]) -> str | None:
    """The last ``SomethingError: message`` line of a log that says what went wrong: vLLM's
    wrappers ("Engine core initialization failed. See root cause above.") give way to the cause
    printed before them; a pydantic validation error keeps its first detail line."""
    found = []
    for index, line in enumerate(lines):
        match = _ERROR_LINE.search(line.rstrip())
        if match:
            found.append((index, match.group(1)))
    if not found:
        return None
    causes = [f for f in found if not any(w in f[1] for w in _WRAPPER_ERRORS)]
    index, message = (causes or found)[-1]
    if _VALIDATION.search(message):
        detail = next((line.strip() for line in lines[index + 1:] if line.strip()), "")
        if detail:
            message = f"{message}: {detail}"
    return message


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def model_cards(listing) -> list[dict]:
    """The models in a /v1/models answer, each a dict with at least a string ``id``: OpenAI's
    list (``{"data": [{"id": ...}]}``: vLLM, and vllm-router in front of one model) or
    vllm-router's gateway mode in front of several (``{"models": [...]}``, bare names as of
    0.1.17; cards with an ``id`` are taken too). ValueError for anything else."""
    if not isinstance(listing, dict) or not ("data" in listing or "models" in listing):
        raise ValueError("neither an OpenAI model list nor a router's gateway list")
    entries = listing["data"] if "data" in listing else listing["models"]
    if not isinstance(entries, list):
        raise ValueError("the model list is not a list")
    cards = [{"id": e} if isinstance(e, str) else e for e in entries]
    if not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in cards):
        raise ValueError("a listed model has no id")
    return cards


def _status(response) -> str:
    """``401 Unauthorized``: the code with its reason, which says more than the number."""
    return f"{response.status_code} {response.reason or ''}".strip()


def probe_ready(base_url: str, model: str, api_key: str | None = None,
                timeout: float = 5.0) -> tuple[bool, str]:
    """(True, "ready") when the server at ``base_url`` (no /v1) passes all three checks,
    else (False, what failed)."""
    http = requests
    headers = auth_headers(api_key)
    try:
        health = http.get(f"{base_url}/health", timeout=timeout)
        if health.status_code != 200:
            return False, f"/health answered {_status(health)}"
        models = http.get(f"{base_url}/v1/models", headers=headers, timeout=timeout)
        if models.status_code != 200:
            return False, f"/v1/models answered {_status(models)}"
        try:
            ids = [card["id"] for card in model_cards(models.json())]
        except ValueError as exc:
            return False, f"/v1/models: {exc}"
        if model not in ids:
            return False, f"/v1/models lists {ids}, not {model}"
        completion = http.post(
            f"{base_url}/v1/completions",
            json={"model": model, "prompt": "ping", "max_tokens": 1, "temperature": 0},
            headers=headers,
            timeout=max(timeout, 30.0),
        )
        if completion.status_code != 200:
            return False, f"1-token completion answered {_status(completion)}"
        if not completion.json().get("choices"):
            return False, "1-token completion returned no choices"
    except requests.RequestException as exc:
        return False, f"not answering ({type(exc).__name__})"
    except ValueError:
        return False, "answered with something that is not JSON"
    return True, "ready"
