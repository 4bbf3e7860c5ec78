"""Containers for ``pyserve launch --image`` and ``pyserve image``: pure argv builders plus the
node-side verbs (run as ``python -m pyservecli.workers.image``) that load, list and remove
images.

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

from pyservecli import __version__
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


def make_spec(image: str, mounts: list[str], force: bool, privileged: bool) -> ContainerSpec:
    for mount in mounts:
        parts = mount.split(":")
        if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")) or \
                not all(parts[:2]):
            raise PyserveError(f"--container-mount {mount!r}: give DIR, DIR:DEST or "
                               "DIR:DEST:ro")
        if not all(os.path.isabs(part) for part in parts[:2]):
            raise PyserveError(f"--container-mount {mount!r}: give an absolute path")
    if is_tarball(image):
        path = Path(image).resolve()
        return ContainerSpec(tag=tarball_tag(path), tarball=str(path),
                             mounts=mounts, force=force, privileged=privileged)
    return ContainerSpec(tag=image, mounts=mounts, force=force,
                         privileged=privileged)


def container_name(job_id: str, rank: int) -> str:
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in job_id)
    return f"pyserve-{safe}-r{rank}"


def run_options(spec: ContainerSpec, job_id: str, rank: int, workspace: Path,
                model_dir: Path | None, api_key_file: str | None, gpus: bool,
                environ: dict[str, str]) -> list[str]:
    """``docker run`` options (without devices, memlock, image and command: the node script
    adds the devices it finds, /dev/infiniband/uverbs* and /dev/gdrdrv, and an unlimited
    memlock where the node allows one)."""
    argv = ["--rm", "--name", container_name(job_id, rank),
            "--label", f"{LABEL_JOB}={job_id}", "--label", f"{LABEL_RANK}={rank}",
            "--label", f"{LABEL_VERSION}={__version__}",
            "--network", "host", "--ipc", "host", "--ulimit", "stack=67108864"]
    if gpus:
        argv += ["--gpus", "all"]
    if spec.privileged:
        argv.append("--privileged")
    # Same paths inside as outside, so logs, launch records and models need no translation.
    volumes = [f"{workspace}:{workspace}"]
    if model_dir is not None:
        volumes.append(f"{model_dir}:{model_dir}:ro")
    if api_key_file:
        volumes.append(f"{api_key_file}:{api_key_file}:ro")
    for mount in spec.mounts:
        volumes.append(mount if ":" in mount else f"{mount}:{mount}")
    for volume in volumes:
        argv += ["--volume", volume]
    for name in sorted(environ):
        if name.startswith(FORWARDED_PREFIXES) and name != "VLLM_API_KEY":
            argv += ["--env", name]
    return argv


# ---- node-side verbs (python -m pyservecli.workers.image load|pull|ls|rm) ---------------------

def _docker(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, **kw)


def image_present(tag: str) -> bool:
    return _docker("image", "inspect", tag).returncode == 0


def image_labels(tag: str) -> dict[str, str]:
    out = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag)
    if out.returncode != 0:
        return {}
    return json.loads(out.stdout.strip() or "null") or {}


def load(tarball: str, tag: str, force: bool) -> int:
    """Load ``tarball`` unless ``tag`` is already here; ``force`` replaces a pyserve image.
    One load of a tag at a time on a node: servers of one fleet packed on a node all start
    here at once, and the second waits and then finds the image present."""
    # /tmp, not $TMPDIR: the lock is the node's, whatever each job's TMPDIR.
    lock_path = Path("/tmp") / f"pyserve-image-{hashlib.sha256(tag.encode()).hexdigest()[:16]}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _load_locked(tarball, tag, force)


def _load_locked(tarball: str, tag: str, force: bool) -> int:
    if image_present(tag):
        if not force:
            print(f"pyserve: image {tag} already present on {os.uname().nodename}; not loading")
            return 0
        if LABEL_VERSION not in image_labels(tag):
            print(f"pyserve: error: {tag} exists and is not a pyserve image (no "
                  f"{LABEL_VERSION} label); --force removes only pyserve images", file=sys.stderr)
            return 2
        _docker("image", "rm", tag)
    print(f"pyserve: loading {tag} from {tarball} on {os.uname().nodename}", flush=True)
    if tarball.endswith((".gz", ".tgz")):
        unzip = ["pigz", "-dc"] if shutil.which("pigz") else ["gzip", "-dc"]
        with subprocess.Popen([*unzip, tarball], stdout=subprocess.PIPE) as source:
            loaded = subprocess.run(["docker", "load"], stdin=source.stdout, text=True,
                                    capture_output=True)
    else:
        loaded = _docker("load", "-i", tarball)
    print(loaded.stdout.strip())
    if loaded.returncode != 0:
        print(f"pyserve: error: docker load failed: {loaded.stderr.strip()}", file=sys.stderr)
    return loaded.returncode


def pull(ref: str) -> int:
    if image_present(ref):
        print(f"pyserve: image {ref} already present on {os.uname().nodename}; not pulling")
        return 0
    return subprocess.run(["docker", "pull", ref]).returncode


def list_images() -> int:
    out = _docker("images", "--filter", f"label={LABEL_VERSION}", "--format",
                  "{{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}\t{{.CreatedSince}}")
    node = os.uname().nodename
    for line in out.stdout.splitlines():
        print(f"{node}\t{line}")
    return out.returncode


def remove_image(tag: str) -> int:
    if not image_present(tag):
        print(f"pyserve: {tag} is not present on {os.uname().nodename}")
        return 0
    if LABEL_VERSION not in image_labels(tag):
        print(f"pyserve: error: {tag} is not a pyserve image (no {LABEL_VERSION} label); "
              "pyserve removes only its own images", file=sys.stderr)
        return 2
    out = _docker("image", "rm", tag)
    print(out.stdout.strip() or out.stderr.strip())
    return out.returncode


def remove_job_containers(job_id: str) -> list[str]:
    """Remove this node's containers of one pyserve job (by label); returns their names."""
    found = _docker("ps", "-a", "--filter", f"label={LABEL_JOB}={job_id}", "--format",
                    "{{.Names}}")
    names = found.stdout.split()
    if names:
        _docker("rm", "-f", *names)
    return names
