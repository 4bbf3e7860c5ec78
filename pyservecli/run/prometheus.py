"""Prometheus file-based service discovery for what pyserve serves: ``WORKSPACE/prometheus/
LAUNCH.json`` lists every server's metrics endpoint (vLLM serves ``/metrics`` on its API port)
and the router's, with role labels, in Prometheus' ``file_sd`` format. A site's Prometheus
that reads ``WORKSPACE/prometheus/*.json`` scrapes each launch while it serves, without SSH
tunnels; the file goes when the launch stops, so nothing dead is scraped.

The router's exporter listens on 127.0.0.1 (its admin side never leaves the launching host), so
its target is reachable by a Prometheus on that host only; its labels say so (``scope=local``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pyservecli.plan.fleet import worker_url

if TYPE_CHECKING:
    from pyservecli.plan.launch import LaunchPlan

METRICS_PATH = "/metrics"


def sd_path(workspace: Path, launch_id: str) -> Path:
    return workspace / "prometheus" / f"{launch_id}.json"


def target_group(address: str, *, launch_id: str, role: str, model: str, host: str,
                 scope: str = "network") -> dict:
    """One file_sd entry: a target and its labels (``__metrics_path__`` says where to scrape)."""
    return {"targets": [address],
            "labels": {"__metrics_path__": METRICS_PATH, "pyserve_launch": launch_id,
                       "pyserve_role": role, "pyserve_model": model, "pyserve_node": host,
                       "pyserve_scope": scope}}


def server_group(plan: LaunchPlan, *, launch_id: str, role: str) -> dict:
    """The file_sd entry of one server: where the router (or a client) reaches it, its
    served model and head node."""
    return target_group(worker_url(plan).removeprefix("http://"), launch_id=launch_id,
                        role=role, model=plan.served_model_name, host=plan.head_host)


def write_targets(path: Path, groups: list[dict]) -> None:
    """Replace ``path`` at once (Prometheus re-reads it on change; never half a file). World-
    readable on purpose: it holds addresses and labels only, for the site's Prometheus user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(groups, indent=2) + "\n")
    part.chmod(0o644)
    os.replace(part, path)


def remove_targets(path: Path) -> None:
    path.unlink(missing_ok=True)
