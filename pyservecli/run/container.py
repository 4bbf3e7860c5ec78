"""What ``pyserve launch --image`` runs: the image reference, its tarball or image file, extra
mounts and the runtime (``ContainerSpec``, checked before anything starts), and the node-side
load of a ``docker save`` tarball that docker and podman share. How each runtime starts a
container is in ``run/runtimes.py``.

Everything pyserve starts carries labels (``pyserve.job``, ``pyserve.rank``,
``pyserve.version``); cleanup and ``--force`` act on labelled objects only, never on a node's
other containers or images.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pyservecli.errors import PyserveError

LABEL_JOB = "pyserve.job"
LABEL_RANK = "pyserve.rank"
LABEL_VERSION = "pyserve.version"

# Host variables a node's container inherits (names only on the command line: docker reads the
# values from its own environment, so secrets never appear in argv).
FORWARDED_PREFIXES = ("VLLM_", "NCCL_", "FI_", "NVSHMEM_", "TORCH_", "PYTORCH_", "HF_", "UCX_",
                      "GLOO_", "OMP_", "CUDA_VISIBLE_DEVICES", "TRANSFORMERS_")


@dataclass
class ContainerSpec:
    tag: str  # the reference to run (from the tarball's manifest.json when loading one)
    tarball: str | None = None
    mounts: list[str] = field(default_factory=list)
    force: bool = False
    privileged: bool = False
    runtime: str = "docker"  # a name in runtimes.RUNTIMES
    # An image file the runtime runs as it is (apptainer's .sif, enroot's .sqsh).
    image_file: str | None = None


def is_tarball(image: str) -> bool:
    return image.endswith((".tar", ".tar.gz", ".tgz")) or Path(image).is_file()


def tarball_tag(path: Path) -> str:
    """The first RepoTags entry of a `docker save` archive's manifest.json (gzip or plain)."""
    if not path.is_file():
        raise PyserveError(f"image tarball {path} does not exist")
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.name.lstrip("./") == "manifest.json":
                    manifest = json.load(archive.extractfile(member))
                    break
            else:
                raise PyserveError(f"{path} has no manifest.json: not a `docker save` archive")
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise PyserveError(f"cannot read image tarball {path}: {exc}") from None
    tags = [t for entry in manifest for t in (entry.get("RepoTags") or [])]
    if not tags:
        raise PyserveError(f"{path} holds an untagged image; save it with a tag "
                           "(docker save NAME:TAG | pigz > FILE)")
    return tags[0]


def make_spec(image: str, mounts: list[str], force: bool, privileged: bool,
              runtime: str = "docker") -> ContainerSpec:
    from pyservecli.run.runtimes import RUNTIMES, get_runtime

    chosen = get_runtime(runtime)
    for mount in mounts:
        parts = mount.split(":")
        if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")) or \
                not all(parts[:2]):
            raise PyserveError(f"--container-mount {mount!r}: give DIR, DIR:DEST or "
                               "DIR:DEST:ro")
        if not all(os.path.isabs(part) for part in parts[:2]):
            raise PyserveError(f"--container-mount {mount!r}: give an absolute path")
        if any(c in mount for c in ",\n"):
            # pyxis joins mounts with commas; a comma inside one would split it.
            raise PyserveError(f"--container-mount {mount!r}: a path with a comma or a "
                               "newline cannot be mounted")
    common = dict(mounts=mounts, force=force, privileged=privileged, runtime=runtime)
    for other in RUNTIMES.values():
        for suffix in other.image_suffixes:
            if image.endswith(suffix):
                if other is not chosen:
                    raise PyserveError(f"--image {image}: a {suffix} file runs with --runtime "
                                       f"{other.name}, not {runtime}")
                path = Path(image).resolve()
                if not path.is_file():
                    raise PyserveError(f"--image {image}: no such file")
                return ContainerSpec(tag=path.name, image_file=str(path), **common)
    if is_tarball(image):
        path = Path(image).resolve()
        return ContainerSpec(tag=tarball_tag(path), tarball=str(path), **common)
    return ContainerSpec(tag=image, **common)


def launch_container_name(job_id: str) -> str:
    """``pyserve-ID``, with only characters every runtime takes in a name."""
    return "pyserve-" + "".join(c if c.isalnum() or c in "_.-" else "-" for c in job_id)


def container_name(job_id: str, rank: int) -> str:
    return f"{launch_container_name(job_id)}-r{rank}"


# ---- node side: one load of a tarball at a time (docker and podman) ------------------------

def load_locked(runtime, tarball: str, tag: str, force: bool) -> int:
    """Load ``tarball`` with ``runtime`` (runtimes.Docker or Podman) unless ``tag`` is already
    here; ``force`` replaces a pyserve image. One load of a tag at a time on a node: servers of
    one fleet packed on a node all start here at once, and the second waits and then finds the
    image present."""
    # /tmp, not $TMPDIR: the lock is the node's, whatever each job's TMPDIR.
    digest = hashlib.sha256(f"{runtime.name}:{tag}".encode()).hexdigest()[:16]
    with open(Path("/tmp") / f"pyserve-image-{digest}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _load(runtime, tarball, tag, force)


def _load(runtime, tarball: str, tag: str, force: bool) -> int:
    node = os.uname().nodename
    if runtime.image_present(tag):
        if not force:
            print(f"pyserve: image {tag} already present on {node}; not loading")
            return 0
        if LABEL_VERSION not in runtime.image_labels(tag):
            print(f"pyserve: error: {tag} exists and is not a pyserve image (no "
                  f"{LABEL_VERSION} label); --force removes only pyserve images", file=sys.stderr)
            return 2
        subprocess.run([runtime.tool, "image", "rm", tag], capture_output=True)
    print(f"pyserve: loading {tag} from {tarball} on {node} ({runtime.name})", flush=True)
    if tarball.endswith((".gz", ".tgz")):
        unzip = ["pigz", "-dc"] if shutil.which("pigz") else ["gzip", "-dc"]
        with subprocess.Popen([*unzip, tarball], stdout=subprocess.PIPE) as source:
            loaded = subprocess.run([runtime.tool, "load"], stdin=source.stdout, text=True,
                                    capture_output=True)
    else:
        loaded = subprocess.run([runtime.tool, "load", "-i", tarball], capture_output=True,
                                text=True)
    print(loaded.stdout.strip())
    if loaded.returncode != 0:
        print(f"pyserve: error: {runtime.tool} load failed: {loaded.stderr.strip()}",
              file=sys.stderr)
    return loaded.returncode
