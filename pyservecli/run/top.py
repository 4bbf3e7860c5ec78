"""``pyserve top``: what a launch or fleet is doing now. Each server's vLLM ``/metrics``
(requests running and waiting, prompt and generation tokens per second between two reads,
KV-cache use, preemptions), the router's exporter (its view of each server: health, circuit
breaker, requests it sent there), the launch record (roles, nodes, states, deaths) and the GPU
telemetry each node writes while it serves (``gpu-HOST.csv`` in the launch's log directory,
from nvidia-smi; none on CPU nodes)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from pyservecli.run.status import latest_status

# vLLM's names (v1 engine); the older spelling second where one changed.
GAUGES = {"running": ("vllm:num_requests_running",),
          "waiting": ("vllm:num_requests_waiting",),
          "kv_cache": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")}
COUNTERS = {"preemptions": ("vllm:num_preemptions_total",),
            "prompt_tokens": ("vllm:prompt_tokens_total",),
            "generation_tokens": ("vllm:generation_tokens_total",)}
GPU_FIELDS = ("index", "util_pct", "memory_used_mib", "memory_total_mib", "power_w", "temp_c")
# `name{labels} value` (timestamps, if any, after the value are ignored).
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition: (name, labels, value) per sample."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        samples.append((match.group(1), labels, value))
    return samples


def total(samples, names: tuple[str, ...]) -> float | None:
    """The sum over label sets of the first of ``names`` present."""
    for name in names:
        values = [v for n, _l, v in samples if n == name]
        if values:
            return sum(values)
    return None


@dataclass
class Target:
    role: str  # server | replica | prefill | decode
    label: str
    url: str  # http://HOST:PORT
    model: str
    state: str
    deaths: int = 0
    log_dir: Path | None = None


@dataclass
class Top:
    """Reads a launch's servers again and again; counters become rates between two reads."""

    workspace: Path
    launch: str | None = None
    timeout: float = 2.0
    _last: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)

    def targets(self, record: dict) -> list[Target]:
        roles = record.get("roles")
        if not roles:
            return [Target("server", "server", record["endpoint"].removesuffix("/v1"),
                           record.get("served_model_name") or "", record.get("state") or "",
                           log_dir=Path(record["log_dir"]) if record.get("log_dir") else None)]
        found = []
        for replica in roles.get("replicas", []):
            launch_id = replica.get("launch_id")
            log_dir = self.workspace / "logs" / launch_id if launch_id else None
            found.append(Target(replica.get("role") or "replica",
                                replica.get("label") or f"replica {replica.get('index')}",
                                replica.get("url") or "", replica.get("model") or "",
                                replica.get("state") or "", int(replica.get("deaths") or 0),
                                log_dir))
        return found

    def read_server(self, target: Target, now: float) -> dict:
        row = {"role": target.role, "label": target.label, "url": target.url,
               "model": target.model, "state": target.state, "deaths": target.deaths,
               "answering": False}
        try:
            reply = requests.get(f"{target.url}/metrics", timeout=self.timeout)
            reply.raise_for_status()
        except requests.RequestException:
            return row
        samples = parse_metrics(reply.text)
        row["answering"] = True
        for key, names in GAUGES.items():
            row[key] = total(samples, names)
        counters = {key: total(samples, names) for key, names in COUNTERS.items()}
        row["preemptions"] = counters["preemptions"]
        before = self._last.get(target.url)
        self._last[target.url] = (now, counters)
        for key in ("prompt_tokens", "generation_tokens"):
            rate = None
            if before is not None and counters[key] is not None and \
                    before[1].get(key) is not None and now > before[0]:
                rate = max(0.0, (counters[key] - before[1][key]) / (now - before[0]))
            row[f"{key.split('_')[0]}_tok_s"] = rate
        return row

    def read_router(self, record: dict) -> dict | None:
        router = (record.get("roles") or {}).get("router")
        if not router or not router.get("metrics_port"):
            return None
        view = {"url": f"http://127.0.0.1:{router['metrics_port']}", "answering": False,
                "deaths": router.get("deaths", 0), "workers": {}}
        try:
            reply = requests.get(f"{view['url']}/metrics", timeout=self.timeout)
            reply.raise_for_status()
        except requests.RequestException:
            return view
        view["answering"] = True
        for name, labels, value in parse_metrics(reply.text):
            worker = labels.get("worker")
            if name == "vllm_router_active_workers":
                view["active_workers"] = int(value)
            elif name == "vllm_router_requests_total":
                view["requests"] = view.get("requests", 0) + int(value)
            elif worker:
                entry = view["workers"].setdefault(worker, {})
                if name == "vllm_router_worker_health":
                    entry["healthy"] = value == 1
                elif name == "vllm_router_cb_state":
                    entry["circuit"] = {0: "closed", 1: "open", 2: "half-open"}.get(
                        int(value), str(value))
                elif name == "vllm_router_processed_requests_total":
                    entry["requests"] = int(value)
        return view

    @staticmethod
    def read_gpus(log_dirs: list[Path]) -> list[dict]:
        gpus = []
        for log_dir in log_dirs:
            for path in sorted(log_dir.glob("gpu-*.csv")):
                host = path.stem.removeprefix("gpu-")
                try:
                    lines = path.read_text().splitlines()
                except OSError:
                    continue
                for line in lines:
                    values = [v.strip() for v in line.split(",")]
                    if len(values) != len(GPU_FIELDS):
                        continue
                    row = {"node": host}
                    for key, value in zip(GPU_FIELDS, values, strict=True):
                        try:
                            row[key] = float(value) if key != "index" else int(value)
                        except ValueError:
                            row[key] = None  # nvidia-smi's "[N/A]"
                    gpus.append(row)
        return gpus

    def snapshot(self) -> dict:
        info = latest_status(self.workspace, self.launch)
        now = time.monotonic()
        targets = self.targets(info)
        router = self.read_router(info)
        servers = [self.read_server(t, now) for t in targets]
        if router is not None:
            for row in servers:
                row["router"] = router["workers"].get(row["url"])
        return {"launch": info.get("launch_id"), "state": info.get("state"),
                "endpoint": info.get("endpoint"), "models": info.get("models") or
                [info.get("served_model_name")], "servers": servers, "router": router,
                "gpus": self.read_gpus([t.log_dir for t in targets if t.log_dir])}
