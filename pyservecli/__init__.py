"""pyserve: launch and benchmark vLLM on SLURM and bare-metal GPU clusters.

The package keeps its start-up light: nothing here imports vllm or torch, so the CLI works on
login nodes that only have the base dependencies.
"""

__version__ = "0.1.0"
