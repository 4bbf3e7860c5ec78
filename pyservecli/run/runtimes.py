"""Container runtimes behind ``pyserve launch --image``: the one seam where the way a node's
server gets into a container varies (``--runtime docker|podman|apptainer|pyxis``).

Whatever the runtime, a node's server sees the same things inside: the workspace, a local model
directory (read-only) and the API key file (read-only) at the same paths as outside, the extra
``--container-mount`` directories, the host's network and IPC, the GPUs, and the host
variables of ``container.FORWARDED_PREFIXES`` by name (values are read from the node's
environment at run time, so no secret is ever on a command line).

How each runtime gets there:

- **docker**, **podman**: a host-side entrypoint (``container-N.sh``) loads or pulls the image
  where it is missing, runs ``node-N.sh`` in a labelled container and removes it afterwards.
  Podman takes the same image (``docker save`` tarball or registry reference) and the same
  options, except GPUs (CDI: ``--device nvidia.com/gpu=all``) and limits: its defaults for
  open files and processes exceed what an unprivileged host grants, so the entrypoint passes
  the node's own hard limits.
- **apptainer**: the entrypoint builds a ``.sif`` once (from the tarball or the registry
  reference, into ``WORKSPACE/images/``, under a lock) and runs ``apptainer exec --nv``.
- **pyxis** (enroot through SLURM's srun): there is no host-side entrypoint: the srun step
  itself starts in the container (``srun --container-image=...``), so pyxis needs an allocation.
  A tarball is imported once to ``WORKSPACE/images/NAME.sqsh`` by a step on the head node
  before the servers start; a registry reference goes to pyxis as is (``REGISTRY#IMAGE``).

A new runtime is one class here with ``register`` on it: the launcher, the job files and the
CLI choices read the registry.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pyservecli import __version__
from pyservecli.errors import PyserveError
from pyservecli.run.container import (
    FORWARDED_PREFIXES,
    LABEL_JOB,
    LABEL_RANK,
    LABEL_VERSION,
    ContainerSpec,
    container_name,
    launch_container_name,
    load_locked,
)
from pyservecli.run.render import render

DEFAULT_RUNTIME = "docker"
# How `docker image inspect` (No such image) and podman's (image not known) say a tag is absent,
# as against a tool that could not look (a daemon that is down, no permission).
_NO_SUCH_IMAGE = re.compile(r"no such image|image not known", re.IGNORECASE)
RUNTIMES: dict[str, ContainerRuntime] = {}


def register(cls: type[ContainerRuntime]) -> type[ContainerRuntime]:
    RUNTIMES[cls.name] = cls()
    return cls


def get_runtime(name: str) -> ContainerRuntime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise PyserveError(f"--runtime {name!r}: choose one of {', '.join(RUNTIMES)}") from None


def forwarded_names(environ: dict[str, str]) -> list[str]:
    """Host variables a container inherits, by name; the API key travels as a file instead."""
    # Shell names only: a name reaches the entrypoint's text (apptainer's exports).
    return sorted(name for name in environ
                  if name.startswith(FORWARDED_PREFIXES) and name != "VLLM_API_KEY"
                  and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name))


def images_dir(workspace: Path) -> Path:
    """Where apptainer's .sif and enroot's .sqsh files are built once and shared by the nodes."""
    return workspace / "images"


def image_file_name(tag: str, suffix: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "+", tag) + suffix


@dataclass(frozen=True)
class NodeContainer:
    """What one node's container needs, the same for every runtime."""

    spec: ContainerSpec
    job_id: str
    rank: int
    host: str
    workspace: Path
    model_dir: Path | None
    api_key_file: str | None
    gpus: bool
    forwarded: tuple[str, ...]
    node_script: str
    log_file: str
    exit_file: str

    @property
    def name(self) -> str:
        return container_name(self.job_id, self.rank)

    def binds(self) -> list[tuple[str, str, str]]:
        """(source, destination, "rw"|"ro"): same paths inside as outside, so logs, launch
        records and models need no translation."""
        binds = [(str(self.workspace), str(self.workspace), "rw")]
        if self.model_dir is not None:
            binds.append((str(self.model_dir), str(self.model_dir), "ro"))
        if self.api_key_file:
            binds.append((self.api_key_file, self.api_key_file, "ro"))
        for mount in self.spec.mounts:
            parts = mount.split(":")
            binds.append((parts[0], parts[1] if len(parts) > 1 else parts[0],
                          parts[2] if len(parts) > 2 else "rw"))
        return binds


def image_helper() -> list[str]:
    """The node-side image verbs, run with this Python (on the host, outside the image)."""
    return [sys.executable, "-m", "pyservecli.workers.image"]


class ContainerRuntime:
    name: str = ""
    tool: str = ""  # the command each node needs on PATH
    needs_slurm: bool = False  # containers are made by srun (pyxis)
    # Image files this runtime runs as they are (``--image x.sif``); others are converted.
    image_suffixes: tuple[str, ...] = ()

    def entry_script(self, node: NodeContainer) -> str | None:
        """The host-side entrypoint that runs ``node.node_script`` in a container, or None
        when the srun step is itself the container (its ``srun_options``)."""
        raise NotImplementedError

    def srun_options(self, head: NodeContainer) -> list[str]:
        """Options of the srun step that runs the node scripts (pyxis only); every node's
        container sees what the head's does."""
        return []

    def prepare_argv(self, spec: ContainerSpec, workspace: Path) -> list[str] | None:
        """One step run once before any node starts (on the head node), or None."""
        return None

    def remove_job_containers(self, job_id: str) -> list[str]:
        """Remove this node's containers of one job that outlived their entrypoint."""
        return []

    # -- `pyserve image` verbs, run on each node --------------------------------------------
    def _no_image_store(self) -> int:
        print(f"pyserve: error: `pyserve image` manages docker and podman images; with "
              f"--runtime {self.name} the launch converts the image itself (into "
              "WORKSPACE/images)", file=sys.stderr)
        return 2

    def load(self, tarball: str, tag: str, force: bool) -> int:
        return self._no_image_store()

    def pull(self, ref: str) -> int:
        return self._no_image_store()

    def list_images(self) -> int:
        return self._no_image_store()

    def remove_image(self, tag: str) -> int:
        return self._no_image_store()


@register
class Docker(ContainerRuntime):
    name = "docker"
    tool = "docker"

    def gpu_options(self) -> list[str]:
        return ["--gpus", "all"]

    def run_options(self, node: NodeContainer) -> list[str]:
        """``run`` options without devices, limits, image and command: the entrypoint adds
        the RDMA devices it finds and the limits the node allows."""
        argv = ["--rm", "--name", node.name,
                "--label", f"{LABEL_JOB}={node.job_id}", "--label", f"{LABEL_RANK}={node.rank}",
                "--label", f"{LABEL_VERSION}={__version__}",
                "--network", "host", "--ipc", "host", "--ulimit", "stack=67108864"]
        if node.gpus:
            argv += self.gpu_options()
        if node.spec.privileged:
            argv.append("--privileged")
        for source, dest, mode in node.binds():
            argv += ["--volume", f"{source}:{dest}" + (":ro" if mode == "ro" else "")]
        for name in node.forwarded:
            argv += ["--env", name]
        return argv

    def entry_script(self, node: NodeContainer) -> str:
        helper = image_helper()
        spec = node.spec
        return render(
            "container.sh.j2", cli=self.tool, job_id=node.job_id,
            rank=node.rank, host=node.host, tag=spec.tag, name=node.name,
            tarball=spec.tarball,
            load=[*helper, "load", "--runtime", self.name, spec.tarball or "", spec.tag,
                  *(["--force"] if spec.force else [])],
            pull=[*helper, "pull", "--runtime", self.name, spec.tag],
            options=self.run_options(node), host_limits=self.host_limits,
            node_script=node.node_script, log_file=node.log_file, exit_file=node.exit_file)

    # Docker's daemon grants its own defaults; podman's exceed an unprivileged host's.
    host_limits = False

    def _cli(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([self.tool, *args], capture_output=True, text=True, **kw)

    def _failed(self, verb: str, out: subprocess.CompletedProcess) -> int:
        """One error line for a failed ``TOOL VERB`` (its own first line of stderr), exit 2."""
        reason = next((line.strip() for line in out.stderr.splitlines() if line.strip()),
                      f"exit status {out.returncode}")
        print(f"pyserve: error: {self.tool} {verb} failed on {os.uname().nodename}: {reason}",
              file=sys.stderr)
        return 2

    def image_present(self, tag: str) -> bool:
        return self._cli("image", "inspect", tag).returncode == 0

    def _inspect_labels(self, tag: str) -> subprocess.CompletedProcess:
        return self._cli("image", "inspect", "--format", "{{json .Config.Labels}}", tag)

    @staticmethod
    def _labels(out: subprocess.CompletedProcess) -> dict[str, str]:
        return json.loads(out.stdout.strip() or "null") or {} if out.returncode == 0 else {}

    def image_labels(self, tag: str) -> dict[str, str]:
        return self._labels(self._inspect_labels(tag))

    def load(self, tarball: str, tag: str, force: bool) -> int:
        return load_locked(self, tarball, tag, force)

    def pull(self, ref: str) -> int:
        if self.image_present(ref):
            print(f"pyserve: image {ref} already present on {os.uname().nodename}; not pulling")
            return 0
        return subprocess.run([self.tool, "pull", ref]).returncode

    def list_images(self) -> int:
        out = self._cli("images", "--filter", f"label={LABEL_VERSION}", "--format",
                        "{{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}\t{{.CreatedSince}}")
        node = os.uname().nodename
        if out.returncode != 0:  # e.g. the daemon is down: say so rather than list nothing
            return self._failed("images", out)
        for line in out.stdout.splitlines():
            print(f"{node}\t{line}")
        return 0

    def remove_image(self, tag: str) -> int:
        found = self._inspect_labels(tag)  # one inspect says both: present, and whose
        if found.returncode != 0:
            if not _NO_SUCH_IMAGE.search(found.stderr):  # not an absent image: the tool failed
                return self._failed("image inspect", found)
            print(f"pyserve: {tag} is not present on {os.uname().nodename}")
            return 0
        if LABEL_VERSION not in self._labels(found):
            print(f"pyserve: error: {tag} is not a pyserve image (no {LABEL_VERSION} label); "
                  "pyserve removes only its own images", file=sys.stderr)
            return 2
        out = self._cli("image", "rm", tag)
        print(out.stdout.strip() or out.stderr.strip())
        return out.returncode

    def remove_job_containers(self, job_id: str) -> list[str]:
        found = self._cli("ps", "-a", "--filter", f"label={LABEL_JOB}={job_id}", "--format",
                          "{{.Names}}")
        names = found.stdout.split()
        if names:
            self._cli("rm", "-f", *names)
        return names


@register
class Podman(Docker):
    name = "podman"
    tool = "podman"
    host_limits = True

    def gpu_options(self) -> list[str]:
        # Podman 4 reaches NVIDIA GPUs through CDI (`nvidia-ctk cdi generate` on the node).
        return ["--device", "nvidia.com/gpu=all", "--security-opt", "label=disable"]


@register
class Apptainer(ContainerRuntime):
    name = "apptainer"
    tool = "apptainer"
    image_suffixes = (".sif",)

    def sif(self, spec: ContainerSpec, workspace: Path) -> str:
        if spec.image_file:
            return spec.image_file
        return str(images_dir(workspace) / image_file_name(spec.tag, ".sif"))

    def build_source(self, spec: ContainerSpec) -> str:
        """What ``apptainer build`` converts: the saved archive, or the registry image."""
        return f"docker-archive://{spec.tarball}" if spec.tarball else f"docker://{spec.tag}"

    def exec_argv(self, node: NodeContainer) -> list[str]:
        # --cleanenv: only the forwarded names reach the server (as APPTAINERENV_ variables
        # the entrypoint exports); the host's network and IPC are apptainer's default.
        argv = ["apptainer", "exec", "--cleanenv", "--writable-tmpfs"]
        if node.gpus:
            argv.append("--nv")
        for source, dest, mode in node.binds():
            argv += ["--bind", f"{source}:{dest}:{mode}"]
        return [*argv, self.sif(node.spec, node.workspace)]

    def entry_script(self, node: NodeContainer) -> str:
        spec = node.spec
        sif = self.sif(spec, node.workspace)
        build = None if spec.image_file else [
            *image_helper(), "build-sif", sif, self.build_source(spec),
            *(["--force"] if spec.force else [])]
        return render(
            "apptainer.sh.j2", job_id=node.job_id, rank=node.rank, host=node.host,
            tag=spec.tag, sif=sif, build=build, forwarded=list(node.forwarded),
            exec_argv=self.exec_argv(node), node_script=node.node_script,
            log_file=node.log_file, exit_file=node.exit_file)


def pyxis_image(ref: str) -> str:
    """A registry reference as pyxis spells it: the registry host (the first part when it has a
    dot or a port, or is localhost) is followed by '#' instead of '/'."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return ref


@register
class Pyxis(ContainerRuntime):
    name = "pyxis"
    tool = "srun"
    needs_slurm = True
    image_suffixes = (".sqsh",)

    def squashfs(self, spec: ContainerSpec, workspace: Path) -> str | None:
        if spec.image_file:
            return spec.image_file
        if spec.tarball:
            return str(images_dir(workspace) / image_file_name(spec.tag, ".sqsh"))
        return None

    def entry_script(self, node: NodeContainer) -> None:
        return None

    def srun_options(self, head: NodeContainer) -> list[str]:
        spec = head.spec
        image = self.squashfs(spec, head.workspace) or pyxis_image(spec.tag)
        mounts = ",".join(f"{s}:{d}" + (":ro" if m == "ro" else "") for s, d, m in head.binds())
        # A container named after the launch (each launch id is new, so never one left from
        # another launch); writable for vLLM's caches; the home directory is not mounted, so
        # the host's ~/.cache and credentials stay out; an image entrypoint would wrap the node
        # script in something pyserve did not write, so it is skipped.
        return [f"--container-image={image}", f"--container-mounts={mounts}",
                f"--container-name={launch_container_name(head.job_id)}",
                "--container-writable", "--no-container-mount-home",
                "--no-container-entrypoint"]

    def prepare_argv(self, spec: ContainerSpec, workspace: Path) -> list[str] | None:
        if not spec.tarball:
            return None
        return [*image_helper(), "enroot-import", spec.tarball, spec.tag,
                str(self.squashfs(spec, workspace)), *(["--force"] if spec.force else [])]


def build_sif_commands(sif: str, source: str) -> list[list[str]]:
    """Build ``sif`` from ``source`` (``docker-archive://TAR`` or ``docker://REF``) into a
    temporary file renamed into place, so a node never runs half an image. A gzipped archive
    is unpacked next to it first (apptainer reads the plain archive)."""
    commands = []
    if source.startswith("docker-archive://") and source.endswith((".gz", ".tgz")):
        tarball = source[len("docker-archive://"):]
        commands.append(["sh", "-c", 'gzip -dc "$1" >"$2"', "sh", tarball, f"{sif}.part.tar"])
        source = f"docker-archive://{sif}.part.tar"
    commands.append(["apptainer", "build", "--force", f"{sif}.part", source])
    return commands


def convert_once(out: str, commands: list[list[str]], force: bool) -> int:
    """Run ``commands`` that build ``out`` (via ``out.part``) unless it exists; one node at a
    time (a lock beside it, on the shared file system), the others then find it built."""
    import fcntl

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    node = os.uname().nodename
    with open(f"{out}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists() and not force:
            print(f"pyserve: image {out} already built; {node} uses it")
            return 0
        print(f"pyserve: building {out} on {node}", flush=True)
        try:
            for argv in commands:
                done = subprocess.run(argv)
                if done.returncode != 0:
                    print(f"pyserve: error: {argv[0]} {argv[1]} failed with status "
                          f"{done.returncode}", file=sys.stderr)
                    return done.returncode
            os.replace(f"{out}.part", out)
        finally:
            for leftover in (f"{out}.part", f"{out}.part.tar"):
                Path(leftover).unlink(missing_ok=True)
    return 0


def enroot_import(tarball: str, tag: str, out: str, force: bool) -> int:
    """Import a ``docker save`` tarball to enroot's squashfs ``out`` through the node's podman
    or docker (see ``enroot_import_commands``)."""
    import shutil

    loader = next((tool for tool in ("podman", "docker") if shutil.which(tool)), None)
    if loader is None or shutil.which("enroot") is None:
        print("pyserve: error: importing a tarball for pyxis needs `enroot` and podman or "
              "docker on the head node; or give --image a .sqsh file or a registry reference",
              file=sys.stderr)
        return 2
    return convert_once(out, enroot_import_commands(loader, tarball, tag, out), force)


def enroot_import_commands(loader: str, tarball: str, tag: str, out: str) -> list[list[str]]:
    """The commands that turn a ``docker save`` tarball into enroot's squashfs: enroot imports
    from a local Docker daemon or Podman store (it reads no archive), so the tarball is loaded
    into whichever the node has, then imported to a temporary file that is renamed into place
    (a reader never sees half an image)."""
    scheme = {"docker": "dockerd", "podman": "podman"}[loader]
    return [[loader, "load", "-i", tarball],
            ["enroot", "import", "--output", f"{out}.part", f"{scheme}://{tag}"]]

