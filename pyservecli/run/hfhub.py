"""A hub id's config.json: from the local Hugging Face cache, else fetched alone.

Login nodes usually have the network and no weights; compute nodes often have the reverse. Only
config.json is ever fetched (a few KB), with a short timeout, so planning never waits on a hub.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

# org/name or name, as the hub spells repository ids.
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_TRUE = ("1", "true", "yes", "on")
FETCH_TIMEOUT_S = 10


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
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
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
    # huggingface_hub reads its download timeout once, when imported: set it first.
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(FETCH_TIMEOUT_S))
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None, "huggingface_hub is not installed and the config is not cached: model " \
            "checks skipped"
    try:
        path = Path(hf_hub_download(repo_id, "config.json", revision=revision,
                                    cache_dir=str(cache), etag_timeout=FETCH_TIMEOUT_S))
    except Exception as exc:  # any hub failure (network, 404, gated) only skips the checks
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return None, f"config.json could not be fetched ({reason}): model checks skipped"
    return path, "config.json fetched from the Hugging Face hub"
