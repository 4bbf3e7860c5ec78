"""Read the latest launch record of a workspace, and ask the endpoint whether it answers."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from .errors import PyserveError


def latest_status(workspace: Path) -> dict:
    record_path = Path(workspace) / "latest.json"
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        raise PyserveError(f"no launch recorded in {workspace} (no latest.json)") from None
    base = record["endpoint"].removesuffix("/v1")
    try:
        answering = requests.get(f"{base}/health", timeout=3).status_code == 200
    except requests.RequestException:
        answering = False
    return {**record, "answering": answering}
