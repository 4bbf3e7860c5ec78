"""pyserve: launch and benchmark vLLM on SLURM and bare-metal GPU clusters.

The package keeps its start-up light: nothing here imports vllm or torch, so the CLI works on
login nodes that only have the base dependencies.
"""

__version__ = "0.1.0"

DEFAULT_WORKSPACE = "pyserve-work"


def default_workspace() -> str:
    """Where logs, rendered scripts and launch records go unless told: $PYSERVE_WORKSPACE (set
    for `launch --then` commands), else ./pyserve-work. The CLI and the Python API share it."""
    import os

    return os.environ.get("PYSERVE_WORKSPACE", DEFAULT_WORKSPACE)
