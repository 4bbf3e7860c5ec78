"""What a GPU can do, for the planner's memory fit and estimates. Pure data.

Figures are the vendors' data-sheet numbers (dense 16-bit tensor TFLOPS, HBM TB/s, NVLink GB/s
one way); the estimator applies its own efficiency factors to them. A GPU is found by a
substring of its `nvidia-smi` name or of a SLURM gres type (``h100``), most specific first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyservecli.errors import PyserveError

GIB = 1024**3


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gib: float  # as nvidia-smi reports it
    bf16_tflops: float  # dense
    hbm_tbs: float
    link_gbs: float  # GPU-to-GPU inside a node, one direction


# (name substrings, spec): the first entry any substring of which is in the name wins.
GPUS: tuple[tuple[tuple[str, ...], GpuSpec], ...] = (
    (("gh200",), GpuSpec("GH200", 94.5, 989, 4.0, 450)),
    (("gb200",), GpuSpec("GB200", 184.0, 2450, 8.0, 900)),
    (("b300",), GpuSpec("B300", 268.0, 2250, 8.0, 900)),
    (("b200",), GpuSpec("B200", 178.4, 2250, 8.0, 900)),
    (("h200",), GpuSpec("H200", 140.4, 989, 4.8, 450)),
    (("h100 nvl", "h100nvl"), GpuSpec("H100 NVL", 93.6, 835, 3.9, 300)),
    (("h100 pcie", "h100-pcie"), GpuSpec("H100 PCIe", 79.6, 756, 2.0, 300)),
    (("h100",), GpuSpec("H100", 79.6, 989, 3.35, 450)),
    (("h800",), GpuSpec("H800", 79.6, 989, 3.35, 200)),
    (("h20",), GpuSpec("H20", 95.6, 148, 4.0, 450)),
    (("a100-sxm4-40gb", "a100 40gb", "a100-40"), GpuSpec("A100 40GB", 39.4, 312, 1.56, 300)),
    (("a100",), GpuSpec("A100 80GB", 79.3, 312, 2.04, 300)),
    (("l40s",), GpuSpec("L40S", 44.4, 362, 0.864, 32)),
    (("a10g", "a10"), GpuSpec("A10", 22.0, 125, 0.6, 32)),
    (("l4",), GpuSpec("L4", 22.0, 121, 0.3, 32)),
)
# What the estimator assumes for a GPU it does not know (the plan says so).
DEFAULT_GPU = next(spec for _keys, spec in GPUS if spec.name == "H100")


def find_gpu(name: str | None) -> GpuSpec | None:
    if not name:
        return None
    lowered = name.lower()
    for keys, spec in GPUS:
        if any(key in lowered for key in keys):
            return spec
    return None


def gpu_of_memory(gib: float) -> GpuSpec | None:
    """The GPU a ``--gpu-memory`` figure names when nothing else does (141 -> H200): the first
    in the table within 2 GiB of it (80 -> H100, which the A100 80GB shares)."""
    return next((spec for _keys, spec in GPUS if abs(spec.memory_gib - gib) <= 2.0), None)


def parse_memory_gib(text: str) -> float:
    """``--gpu-memory``: GiB per GPU, as '80', '80GiB', '141G' or '143771MiB'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(gib|gb|g|mib|mb|m)?\s*", str(text), re.I)
    if not match:
        raise PyserveError(f"--gpu-memory {text!r}: give GiB per GPU, e.g. 80 or 141GiB")
    value = float(match.group(1))
    unit = (match.group(2) or "gib").lower()
    gib = value / 1024 if unit in ("mib", "mb", "m") else value
    if not 1 <= gib <= 4096:
        raise PyserveError(f"--gpu-memory {text!r}: {gib:g} GiB per GPU is not plausible")
    return gib


@dataclass(frozen=True)
class GpuInfo:
    """The GPU the plan is for: memory per GPU and, when known, its spec."""

    memory_gib: float | None  # None: not known (no GPU here and none given)
    spec: GpuSpec | None  # None: not a GPU pyserve knows (estimates assume DEFAULT_GPU)
    source: str  # where the memory figure came from, for messages
    assumed: bool = False  # True: the memory is a default, not detected or given

    @property
    def memory_bytes(self) -> float | None:
        return None if self.memory_gib is None else self.memory_gib * GIB

    @property
    def estimate_spec(self) -> GpuSpec:
        return self.spec or DEFAULT_GPU
