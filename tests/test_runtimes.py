"""The container-runtime seam (`--runtime docker|podman|apptainer|pyxis`): each runtime's exact
command lines, the same mounts, GPUs and forwarded names under every one, secrets never on a
command line, the rendered entrypoints pass shellcheck, the one-time image conversion, and the
clear refusals before anything starts. Podman runs for real in tests/test_docker.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pyservecli import __version__
from pyservecli.errors import PyserveError
from pyservecli.plan.launch import LaunchRequest, make_plan
from pyservecli.run.cluster import detect
from pyservecli.run.container import ContainerSpec, make_spec
from pyservecli.run.launcher import LaunchOptions, write_job_files
from pyservecli.run.runtimes import (
    RUNTIMES,
    NodeContainer,
    build_sif_commands,
    convert_once,
    enroot_import_commands,
    forwarded_names,
    get_runtime,
    pyxis_image,
)

from .conftest import run_pyserve
from .test_scripts import HOSTILE, shellcheck

ENVIRON = {"NCCL_DEBUG": "INFO", "VLLM_API_KEY": "sekrit", "HOME": "/root",
           "FI_PROVIDER": "efa", "HF_TOKEN": "hf_secret", "VLLM_bad;name": "x"}


def node(tmp_path, runtime="docker", gpus=True, **spec_fields) -> NodeContainer:
    spec = ContainerSpec(tag="img:1", mounts=["/data", "/scratch:/mnt/s:ro"], runtime=runtime,
                         **spec_fields)
    return NodeContainer(spec=spec, job_id="4242", rank=1, host="n1", workspace=tmp_path / "ws",
                         model_dir=tmp_path / "model", api_key_file="/keys/k", gpus=gpus,
                         forwarded=tuple(forwarded_names(ENVIRON)),
                         node_script=str(tmp_path / "node-1.sh"), log_file="/l/n1.log",
                         exit_file="/l/n1.exit")


def test_the_registry_is_what_the_cli_offers():
    assert list(RUNTIMES) == ["docker", "podman", "apptainer", "pyxis"]
    with pytest.raises(PyserveError, match="choose one of docker, podman, apptainer, pyxis"):
        get_runtime("lxc")
    out = run_pyserve("launch", "m", "--image", "img:1", "--runtime", "lxc", "--dry-run")
    assert out.returncode == 2 and "'lxc' is not one of" in out.stderr


def test_forwarded_names_are_names_only_never_the_key_nor_a_non_shell_name():
    # HF_TOKEN goes by name (its value is read on the node); the API key travels as a file.
    assert forwarded_names(ENVIRON) == ["FI_PROVIDER", "HF_TOKEN", "NCCL_DEBUG"]


def test_docker_run_options_label_everything_and_keep_secrets_off_argv(tmp_path):
    argv = get_runtime("docker").run_options(node(tmp_path))
    assert argv == [
        "--rm", "--name", "pyserve-4242-r1", "--label", "pyserve.job=4242",
        "--label", "pyserve.rank=1", "--label", f"pyserve.version={__version__}",
        "--network", "host", "--ipc", "host", "--ulimit", "stack=67108864", "--gpus", "all",
        "--volume", f"{tmp_path}/ws:{tmp_path}/ws",
        "--volume", f"{tmp_path}/model:{tmp_path}/model:ro",
        "--volume", "/keys/k:/keys/k:ro", "--volume", "/data:/data",
        "--volume", "/scratch:/mnt/s:ro",
        "--env", "FI_PROVIDER", "--env", "HF_TOKEN", "--env", "NCCL_DEBUG"]
    privileged = get_runtime("docker").run_options(node(tmp_path, gpus=False, privileged=True))
    assert "--privileged" in privileged and "--gpus" not in privileged


def test_podman_takes_dockers_options_but_gpus_through_cdi_and_the_hosts_limits(tmp_path):
    docker = get_runtime("docker").run_options(node(tmp_path))
    podman = get_runtime("podman").run_options(node(tmp_path, runtime="podman"))
    at = docker.index("--gpus")
    assert podman == [*docker[:at], "--device", "nvidia.com/gpu=all", "--security-opt",
                      "label=disable", *docker[at + 2:]]
    script = get_runtime("podman").entry_script(node(tmp_path, runtime="podman"))
    assert "command -v podman" in script and "podman run " in script
    assert not [line for line in script.splitlines() if "docker " in line]
    assert '--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc"' in script
    assert "load --runtime podman '' img:1" not in script  # a registry reference is pulled
    assert "pull --runtime podman img:1" in script
    docker_script = get_runtime("docker").entry_script(node(tmp_path))
    assert "nofile" not in docker_script and "docker run " in docker_script


def test_apptainer_exec_line_binds_the_same_paths_and_passes_names_not_values(tmp_path):
    runtime = get_runtime("apptainer")
    sif = f"{tmp_path}/ws/images/img+1.sif"
    assert runtime.exec_argv(node(tmp_path, runtime="apptainer")) == [
        "apptainer", "exec", "--cleanenv", "--writable-tmpfs", "--nv",
        "--bind", f"{tmp_path}/ws:{tmp_path}/ws:rw",
        "--bind", f"{tmp_path}/model:{tmp_path}/model:ro",
        "--bind", "/keys/k:/keys/k:ro", "--bind", "/data:/data:rw",
        "--bind", "/scratch:/mnt/s:ro", sif]
    no_gpu = runtime.exec_argv(node(tmp_path, runtime="apptainer", gpus=False))
    assert "--nv" not in no_gpu
    script = runtime.entry_script(node(tmp_path, runtime="apptainer"))
    # Values come from the node's environment when the script runs, never from here.
    assert '[ -n "${HF_TOKEN+x}" ] && export APPTAINERENV_HF_TOKEN="${HF_TOKEN}"' in script
    assert "hf_secret" not in script and "sekrit" not in script and "INFO" not in script
    assert "VLLM_API_KEY" not in script
    assert f"build-sif {sif} docker://img:1" in script
    from_tarball = runtime.entry_script(node(tmp_path, runtime="apptainer",
                                             tarball="/img/v.tar.gz"))
    assert f"build-sif {sif} docker-archive:///img/v.tar.gz" in from_tarball
    ready = runtime.entry_script(node(tmp_path, runtime="apptainer", image_file="/img/v.sif"))
    assert "build-sif" not in ready and "sif=/img/v.sif" in ready


def test_build_sif_and_enroot_import_follow_the_runtimes_documented_options():
    assert build_sif_commands("/w/a.sif", "docker://reg.io/x:1") == [
        ["apptainer", "build", "--force", "/w/a.sif.part", "docker://reg.io/x:1"]]
    # apptainer reads a plain `docker save` archive: a gzipped one is unpacked beside it first.
    assert build_sif_commands("/w/a.sif", "docker-archive:///t/v.tar.gz") == [
        ["sh", "-c", 'gzip -dc "$1" >"$2"', "sh", "/t/v.tar.gz", "/w/a.sif.part.tar"],
        ["apptainer", "build", "--force", "/w/a.sif.part", "docker-archive:///w/a.sif.part.tar"]]
    # enroot imports from a local daemon or store only (`enroot import --help`: docker://,
    # dockerd://, podman://), so the tarball is loaded there first.
    assert enroot_import_commands("podman", "/t/v.tar", "pyserve:1", "/w/p.sqsh") == [
        ["podman", "load", "-i", "/t/v.tar"],
        ["enroot", "import", "--output", "/w/p.sqsh.part", "podman://pyserve:1"]]
    assert enroot_import_commands("docker", "/t/v.tar", "pyserve:1", "/w/p.sqsh")[1][-1] == \
        "dockerd://pyserve:1"


def test_pyxis_image_references_use_a_hash_after_the_registry():
    assert pyxis_image("nvcr.io/nvidia/pytorch:25.01-py3") == "nvcr.io#nvidia/pytorch:25.01-py3"
    assert pyxis_image("localhost:5000/pyserve:1") == "localhost:5000#pyserve:1"
    assert pyxis_image("vllm/vllm-openai:v0.26.0") == "vllm/vllm-openai:v0.26.0"  # Docker Hub
    assert pyxis_image("ubuntu") == "ubuntu"


def slurm_plan(runtime: str, image: str, tmp_path: Path):
    env = {"SLURM_JOB_ID": "99", "SLURM_JOB_NODELIST": "a,b", "SLURM_GPUS_ON_NODE": "8"}
    plan = make_plan(LaunchRequest(model="m", tp=8, vllm_args=HOSTILE), detect(env),
                     is_free=lambda _p: True, resolve=str)
    spec = make_spec(image, ["/data"], False, False, runtime)
    return plan, write_job_files(plan, LaunchOptions(workspace=tmp_path / "ws",
                                                     api_key_file=tmp_path / "key",
                                                     container=spec))


def test_pyxis_step_is_the_container_and_imports_a_tarball_once(tmp_path):
    tarball = tmp_path / "v.tar"
    import io
    import tarfile

    with tarfile.open(tarball, "w") as tar:
        data = json.dumps([{"RepoTags": ["pyserve:1"]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    plan, files = slurm_plan("pyxis", str(tarball), tmp_path)
    # No host-side entrypoint: srun runs the node scripts inside the container.
    assert [p.name for p in files.node_scripts] == ["node-0.sh", "node-1.sh"]
    assert '"node-${rank}.sh"' in files.dispatch.read_text()
    inner = files.node_scripts[1].read_text()
    assert "python3 -m pyservecli.workers.reap 99 1" in inner and sys.executable not in inner
    runtime = get_runtime("pyxis")
    ws = tmp_path / "ws"
    sqsh = f"{ws}/images/pyserve+1.sqsh"
    assert runtime.srun_options(files.containers[0]) == [
        f"--container-image={sqsh}",
        f"--container-mounts={ws}:{ws},{tmp_path}/key:{tmp_path}/key:ro,/data:/data",
        "--container-name=pyserve-99", "--container-writable", "--no-container-mount-home",
        "--no-container-entrypoint"]
    assert runtime.prepare_argv(files.containers[0].spec, ws) == [
        sys.executable, "-m", "pyservecli.workers.image", "enroot-import", str(tarball),
        "pyserve:1", sqsh]
    _, by_ref = slurm_plan("pyxis", "nvcr.io/nvidia/vllm:1", tmp_path / "ref")
    assert runtime.srun_options(by_ref.containers[0])[0] == \
        "--container-image=nvcr.io#nvidia/vllm:1"
    assert runtime.prepare_argv(by_ref.containers[0].spec, ws) is None
    shellcheck(*files.node_scripts, files.dispatch)


@pytest.mark.parametrize("runtime", ["docker", "podman", "apptainer"])
def test_every_runtimes_entrypoint_passes_shellcheck_with_hostile_arguments(tmp_path, runtime):
    _, files = slurm_plan(runtime, "reg.io/team/pyserve:1", tmp_path)
    assert [p.name for p in files.node_scripts] == ["container-0.sh", "container-1.sh"]
    assert '"container-${rank}.sh"' in files.dispatch.read_text()
    shellcheck(*files.node_scripts, *files.script_dir.glob("node-*.sh"), files.dispatch)


def test_image_files_go_with_their_runtime_and_clear_errors_before_launch(tmp_path, config_dir):
    sif = tmp_path / "v.sif"
    sif.write_bytes(b"SIF")
    spec = make_spec(str(sif), [], False, False, "apptainer")
    assert spec.image_file == str(sif) and spec.tarball is None
    with pytest.raises(PyserveError, match=r"a \.sif file runs with --runtime apptainer, "
                                           "not docker"):
        make_spec(str(sif), [], False, False, "docker")
    with pytest.raises(PyserveError, match="no such file"):
        make_spec(str(tmp_path / "missing.sqsh"), [], False, False, "pyxis")
    with pytest.raises(PyserveError, match="comma"):
        make_spec("img:1", ["/a,b"], False, False, "pyxis")
    model = config_dir("qwen3-tiny")
    out = run_pyserve("launch", str(model), "--runtime", "podman", "--gpus-per-node", "1",
                      "--dry-run")
    assert out.returncode == 2 and "--runtime, --container-mount, --force and --privileged " \
        "need --image" in out.stderr
    # pyxis makes containers through srun: refused outside an allocation, before anything runs.
    out = run_pyserve("launch", str(model), "--image", "reg.io/p:1", "--runtime", "pyxis",
                      "--workspace", str(tmp_path / "ws"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "pyserve: error: --runtime pyxis starts containers through srun: launch inside a "
        "SLURM allocation (salloc/sbatch)"]
    assert not (tmp_path / "ws" / "logs").exists() or not any((tmp_path / "ws" / "logs").iterdir())
    dry = run_pyserve("launch", str(model), "--image", str(sif), "--runtime", "apptainer",
                      "--gpus-per-node", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"image v.sif (from {sif}), runtime apptainer" in dry.stdout


def test_convert_once_builds_one_file_for_every_node_and_never_half_of_one(tmp_path):
    out = tmp_path / "images" / "x.sif"
    calls = tmp_path / "calls"
    build = [["sh", "-c", 'echo run >>"$1"; sleep 0.3; echo image >"$2"', "sh", str(calls),
              f"{out}.part"]]
    results = []
    threads = [threading.Thread(target=lambda: results.append(convert_once(str(out), build,
                                                                           False)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [0, 0, 0]
    assert calls.read_text() == "run\n"  # built once; the other two waited, then used it
    assert out.read_text() == "image\n" and not Path(f"{out}.part").exists()
    failing = [["sh", "-c", 'echo half >"$1"; exit 3', "sh", f"{out}.part"]]
    assert convert_once(str(out), failing, True) == 3
    assert out.read_text() == "image\n"  # the good image stays; the half one is gone
    assert not Path(f"{out}.part").exists()


def test_image_verbs_say_which_stores_they_manage():
    run = [sys.executable, "-m", "pyservecli.workers.image"]
    out = subprocess.run([*run, "--runtime", "apptainer", "ls"], capture_output=True, text=True)
    assert out.returncode == 2 and "manages docker and podman images" in out.stderr
    out = subprocess.run([*run, "--runtime", "lxc", "ls"], capture_output=True, text=True)
    assert out.returncode == 2 and "choose one of" in out.stderr
    out = subprocess.run([*run, "load", "only-one-arg"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("usage:")
    out = run_pyserve("image", "--runtime", "apptainer", "ls")
    assert out.returncode == 2 and "'apptainer' is not one of 'docker', 'podman'" in out.stderr


def test_an_image_verb_without_its_runtime_installed_is_one_clear_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pyservecli.workers.image", "--runtime",
                          "podman", "ls"], capture_output=True, text=True,
                         env={"PATH": str(tmp_path)})
    assert out.returncode == 2
    assert out.stderr.strip().startswith("pyserve: error: podman is not installed on ")
    assert "Traceback" not in out.stderr


def test_an_image_verb_whose_tool_cannot_reach_its_daemon_says_so(tmp_path):
    """`image ls` / `image rm` when docker answers with an error (its daemon down): one error
    line with docker's own reason and exit 2, not an empty listing or "not present"; an absent
    tag is still "not present" and exit 0."""
    tool = tmp_path / "docker"
    tool.write_text("#!/bin/sh\n"
                    'if [ "$STANDIN_ABSENT" = 1 ]; then echo "Error: No such image: $3" >&2; '
                    "exit 1; fi\n"
                    "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                    "Is the docker daemon running?' >&2\nexit 1\n")
    tool.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    run = [sys.executable, "-m", "pyservecli.workers.image"]
    for verb in (["ls"], ["rm", "pyserve:latest"]):
        out = subprocess.run([*run, *verb], capture_output=True, text=True, env=env)
        assert out.returncode == 2, (verb, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyserve: error: docker "), lines
        assert "Cannot connect to the Docker daemon" in lines[0]
        assert out.stdout == ""
    out = subprocess.run([*run, "rm", "pyserve:latest"], capture_output=True, text=True,
                         env={**env, "STANDIN_ABSENT": "1"})
    assert out.returncode == 0 and "pyserve:latest is not present on" in out.stdout
