"""A hub id's config.json: from the local Hugging Face cache, else fetched alone.

Login nodes usually have the network and no weights; compute nodes often have the reverse. Only
config.json is ever fetched (a few KB), with a short timeout, so planning never waits on a hub.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pyservecli.plan.modelconfig import is_repo_id

_TRUE = ("1", "true", "yes", "on")
FETCH_TIMEOUT_S = 10
# How long the hub (or the proxy in front of it) gets to accept a connection before planning
# goes on without the config: huggingface_hub itself retries a failed first request five times
# with backoff (~23 s of warnings) when nothing is cached.
REACH_TIMEOUT_S = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_cache(env: Mapping[str, str]) -> Path:
    """Where huggingface_hub keeps repositories: HF_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") \
        else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def is_offline(env: Mapping[str, str]) -> bool:
    return any(env.get(k, "").strip().lower() in _TRUE
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cached_config(cache: Path, repo_id: str, revision: str = "main") -> Path | None:
    """config.json of ``repo_id`` at ``revision`` (a branch, tag or commit) in the cache
    layout models--ORG--NAME/{refs/REVISION, snapshots/COMMIT/config.json}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    if re.fullmatch(r"[0-9a-f]{40}", commit) and (snapshots / commit / "config.json").is_file():
        return snapshots / commit / "config.json"
    if revision != "main":
        return None
    # No ref for main (a cache filled by a pinned download): the newest snapshot with a config.
    found = [p / "config.json" for p in snapshots.iterdir() if (p / "config.json").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def find_config(repo_id: str, revision: str | None = None,
                env: Mapping[str, str] | None = None) -> tuple[Path | None, str]:
    """(config.json path or None, where it came from or why not), for messages."""
    env = os.environ if env is None else env
    revision = revision or "main"
    if not is_repo_id(repo_id):
        return None, f"{repo_id!r} is not a hub id (org/name) nor a local directory"
    cache = hub_cache(env)
    try:
        path = cached_config(cache, repo_id, revision)
    except OSError as exc:
        return None, f"cannot read the Hugging Face cache {cache}: {exc.strerror}"
    if path is not None:
        return path, f"config.json from the Hugging Face cache ({cache})"
    if is_offline(env):
        return None, "config.json not in the Hugging Face cache and HF_HUB_OFFLINE is set: " \
            "model checks skipped"
    unreachable = hub_unreachable(env)
    if unreachable:
        return None, f"config.json not in the Hugging Face cache and {unreachable}: model " \
            "checks skipped (set HF_HUB_OFFLINE=1 to skip the attempt)"
    # huggingface_hub reads its download timeout once, when imported: set it first.
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(FETCH_TIMEOUT_S))
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None, "huggingface_hub is not installed and the config is not cached: model " \
            "checks skipped"
    # Its retry warnings would interleave with the plan; a failure is reported below, once.
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        path = Path(hf_hub_download(repo_id, "config.json", revision=revision,
                                    cache_dir=str(cache), etag_timeout=FETCH_TIMEOUT_S))
    except Exception as exc:  # any hub failure (network, 404, gated) only skips the checks
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return None, f"config.json could not be fetched ({reason}): model checks skipped"
    finally:
        hub_logger.setLevel(level)
    return path, "config.json fetched from the Hugging Face hub"


def hub_unreachable(env: Mapping[str, str], timeout: float = REACH_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached from here, or None if a TCP connection to it (or to the
    HTTPS proxy in front of it) opens within ``timeout`` seconds. Name lookup runs in a thread
    because getaddrinfo has no timeout of its own."""
    endpoint = env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    target = urlsplit(endpoint)
    scheme = "HTTPS" if target.scheme == "https" else "HTTP"
    proxy = next((env[k] for k in (f"{scheme}_PROXY", f"{scheme.lower()}_proxy", "ALL_PROXY",
                                   "all_proxy") if env.get(k)), None)
    no_proxy = env.get("NO_PROXY") or env.get("no_proxy")
    if proxy and no_proxy and target.hostname and \
            urllib.request.proxy_bypass_environment(target.hostname, {"no": no_proxy}):
        proxy = None  # the hub is reached directly (NO_PROXY names it)
    if proxy:
        target = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        host = target.hostname
        port = target.port or (443 if target.scheme == "https" else 80)
    except ValueError as exc:
        return f"{proxy or endpoint!r} is not a valid URL ({exc})"
    if not host:
        return f"{proxy or endpoint!r} is not a valid URL"
    what = f"the proxy {host}:{port}" if proxy else f"the hub {host}:{port}"
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or type(exc).__name__)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        return f"{what} does not answer within {timeout:g} s"
    return f"{what} is not reachable ({outcome[0]})" if outcome[0] else None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def tokenizer_cached(cache: Path, repo_id: str) -> bool:
    """Whether some snapshot of ``repo_id`` in the cache has tokenizer files."""
    snapshots = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    try:
        return any((snap / name).is_file() for snap in snapshots.iterdir()
                   for name in TOKENIZER_FILES)
    except OSError:
        return False


def tokenizer_access(name: str, env: Mapping[str, str]) -> tuple[str | None, bool]:
    """For a client about to load ``name``'s tokenizer (a directory or a hub id): (why it
    cannot, or None; whether to run it with HF_HUB_OFFLINE=1). A hub id that is cached while
    the hub is out of reach is read offline (the client would otherwise retry the hub for
    minutes); one that is neither cached nor reachable is refused with what to do."""
    if Path(name).expanduser().is_dir():
        return None, False
    if not is_repo_id(name):  # a path on the server's side, a typo: the client would fail
        return f"the tokenizer {name!r} is neither a directory here nor a hub id (ORG/NAME): " \
            "give --tokenizer DIR (a model directory with its tokenizer)", False
    cache = hub_cache(env)
    if tokenizer_cached(cache, name):
        return None, is_offline(env) or hub_unreachable(env) is not None
    hint = "give --tokenizer DIR (a model directory with its tokenizer)"
    if is_offline(env):
        return f"the tokenizer of {name} is not in the Hugging Face cache ({cache}) and " \
            f"HF_HUB_OFFLINE is set: {hint}", False
    unreachable = hub_unreachable(env)
    if unreachable:
        return f"the tokenizer of {name} is not in the Hugging Face cache ({cache}) and " \
            f"{unreachable}: {hint}", False
    return None, False
