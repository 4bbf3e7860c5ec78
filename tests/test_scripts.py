"""Rendered entrypoints: hostile arguments reach vLLM intact, secrets stay out of argv and files,
and every shell script we ship or render passes shellcheck."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyservecli.plan.launch import LaunchRequest, make_plan
from pyservecli.run.cluster import detect
from pyservecli.run.launcher import LaunchOptions, write_job_files
from pyservecli.run.render import render

from .engine import must_have

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = [
    "--chat-template", "it's $(touch PWNED) `touch PWNED2`; rm -rf PWNED3 \"q\"",
    "--served-model-name", "a b",
    "--x", "$HOME",
    "--y=;echo injected",
    "--z", "line1\nline2",
    "--glob", "*",
]
FAKE_VLLM = """#!{python}
import json, os, sys
with open(os.environ["ARGV_OUT"], "w") as out:
    json.dump({{"argv": sys.argv[1:], "key": os.environ.get("VLLM_API_KEY")}}, out)
"""


def render_node(tmp_path, argv, api_key_file=None, stop_signal="TERM"):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "vllm"
    fake.write_text(FAKE_VLLM.format(python=sys.executable))
    fake.chmod(0o755)
    script = tmp_path / "node.sh"
    heartbeat = tmp_path / "launcher.heartbeat"
    heartbeat.touch()
    script.write_text(render(
        "node.sh.j2", job_id="t", rank=0, host="h",
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ARGV_OUT": str(tmp_path / "argv.json")},
        api_key_file=api_key_file, exit_file=str(tmp_path / "h.exit"), argv=argv,
        log_file=str(tmp_path / "h.log"),
        display=" ".join(argv), setup=[], backend="single", reap=["true"],
        secrets_file=None, heartbeat=str(heartbeat), heartbeat_timeout=45, cache_base=None,
        stop_signal=stop_signal))
    return script


def test_hostile_arguments_reach_vllm_unchanged(tmp_path):
    argv = ["vllm", "serve", "/models/my model", *HOSTILE]
    script = render_node(tmp_path, argv)
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "argv.json").read_text())["argv"] == argv[1:]
    assert not any((tmp_path / name).exists() for name in ("PWNED", "PWNED2"))
    assert (tmp_path / "h.exit").read_text().strip() == "0"


def test_api_key_reaches_vllm_by_environment_only(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("sk-top-secret\n")
    script = render_node(tmp_path, ["vllm", "serve", "m"], api_key_file=str(key_file))
    assert "sk-top-secret" not in script.read_text()
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True)
    seen = json.loads((tmp_path / "argv.json").read_text())
    assert seen["key"] == "sk-top-secret"
    assert "sk-top-secret" not in json.dumps(seen["argv"]) + result.stdout + result.stderr


def test_exit_status_of_the_server_is_recorded(tmp_path):
    script = render_node(tmp_path, ["false"])
    result = subprocess.run(["bash", str(script)], cwd=tmp_path)
    assert result.returncode == 1
    assert (tmp_path / "h.exit").read_text().strip() == "1"


def shellcheck(*paths):
    if shutil.which("shellcheck") is None:
        if must_have():
            pytest.fail("shellcheck is not installed (CI must install it)")
        pytest.skip("shellcheck not installed")
    result = subprocess.run(["shellcheck", "-x", "-P", "SCRIPTDIR", *map(str, paths)],
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout


def test_rendered_job_files_pass_shellcheck(tmp_path):
    env = {"SLURM_JOB_ID": "99", "SLURM_JOB_NODELIST": "a,b", "SLURM_GPUS_ON_NODE": "8"}
    for backend in ("rpc", "ray"):
        plan = make_plan(LaunchRequest(model="m", tp=8, backend=backend, vllm_args=HOSTILE),
                         detect(env), is_free=lambda _p: True,
                         resolve=str)
        files = write_job_files(plan, LaunchOptions(workspace=tmp_path / backend,
                                                    api_key_file=tmp_path / "key"))
        shellcheck(*files.node_scripts, files.dispatch)
        # vLLM's sockets get a directory of each node's own, except under Ray, which copies
        # VLLM_* variables to the other nodes' workers (tests/test_engine_launch.py runs it).
        for script in files.node_scripts:
            assert ("VLLM_RPC_BASE_PATH=" in script.read_text()) == (backend != "ray"), backend


def test_image_launch_runs_each_node_script_in_a_labelled_container(tmp_path):
    from pyservecli.run.container import ContainerSpec

    env = {"SLURM_JOB_ID": "99", "SLURM_JOB_NODELIST": "a,b", "SLURM_GPUS_ON_NODE": "8"}
    plan = make_plan(LaunchRequest(model="m", tp=8, vllm_args=HOSTILE), detect(env),
                     is_free=lambda _p: True, resolve=str)
    spec = ContainerSpec(tag="pyserve:latest", tarball="/img/v.tar.gz")
    files = write_job_files(plan, LaunchOptions(workspace=tmp_path, container=spec))
    assert [p.name for p in files.node_scripts] == ["container-0.sh", "container-1.sh"]
    assert '"container-${rank}.sh"' in files.dispatch.read_text()
    shellcheck(*files.node_scripts, *files.script_dir.glob("node-*.sh"), files.dispatch)
    wrapper = files.node_scripts[1].read_text()
    assert "--label pyserve.job=99 --label pyserve.rank=1" in wrapper
    assert "pyservecli.workers.image load --runtime docker /img/v.tar.gz pyserve:latest" in wrapper
    assert "--privileged" not in wrapper
    inner = (files.script_dir / "node-1.sh").read_text()
    # Inside the image: the image's python and PATH, not this host's virtualenv.
    assert "python3 -m pyservecli.workers.reap 99 1" in inner
    assert sys.executable not in inner and "export PATH=" not in inner


def test_shipped_shell_scripts_pass_shellcheck():
    # What the project ships (tracked, or new and not ignored), not what launches rendered
    # into an ignored workspace such as ./pyserve-work.
    git = shutil.which("git")
    tracked = subprocess.run([git, "ls-files", "--cached", "--others", "--exclude-standard",
                              "*.sh"], cwd=ROOT, capture_output=True, text=True) if git else None
    if tracked is not None and tracked.returncode == 0:
        scripts = [ROOT / name for name in tracked.stdout.split()]
    else:  # an unpacked source tree, or no git
        scripts = [p for p in ROOT.rglob("*.sh")
                   if not {".venv", ".work", "pyserve-work"} & set(p.parts)]
    scripts += [ROOT / "slurm" / "run.sbatch", ROOT / ".ci" / "run"]
    shellcheck(*[p for p in scripts if p.exists()])


SIGNAL_RECORDER = """#!{python}
import os, signal, sys, time
out = os.environ["SIGNAL_OUT"]
def record(signum, _frame):
    open(out, "w").write(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGINT, record)
signal.signal(signal.SIGTERM, record)
open(out + ".ready", "w").close()
time.sleep(60)
"""


@pytest.mark.parametrize("stop_signal", ["TERM", "INT"])
def test_entrypoint_stops_its_server_with_the_planned_signal(tmp_path, stop_signal):
    # Under nsys the entrypoint must send SIGINT (nsys then writes its report); else SIGTERM.
    recorder = tmp_path / "server"
    recorder.write_text(SIGNAL_RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    script = render_node(tmp_path, [str(recorder)], stop_signal=stop_signal)
    env = dict(os.environ, SIGNAL_OUT=str(tmp_path / "got"))
    proc = subprocess.Popen(["bash", str(script)], env=env, start_new_session=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "got.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what the launcher sends the entrypoint
    assert proc.wait(timeout=20) == 0
    assert (tmp_path / "got").read_text() == f"SIG{stop_signal}"


def test_system_tools_missing_are_named_with_the_command_when_not_installing(tmp_path):
    """`make test` runs scripts/install-system-deps.sh: as root it installs what is missing;
    otherwise (here PYSERVE_NO_INSTALL=1, so the test never touches the machine) it names the
    packages and the apt-get line, and exits 2."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(
        [shutil.which("bash"), str(ROOT / "scripts" / "install-system-deps.sh")],
        env={"PATH": str(bin_dir), "PYSERVE_NO_INSTALL": "1"}, capture_output=True, text=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "missing shellcheck shfmt" in result.stderr
    assert "apt-get install -y shellcheck shfmt" in result.stderr
    # Every tool there (stand-ins, so the answer does not depend on what this machine has):
    # nothing to do, nothing said.
    for tool in ("shellcheck", "shfmt", "slurmctld", "slurmd", "srun", "munged", "ip",
                 "nsenter", "prometheus", "tmux"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    present = subprocess.run(
        [shutil.which("bash"), str(ROOT / "scripts" / "install-system-deps.sh")],
        env={"PATH": str(bin_dir), "PYSERVE_NO_INSTALL": "1"}, capture_output=True, text=True)
    assert (present.returncode, present.stderr) == (0, "")


def test_gloo_binds_the_interface_holding_the_node_address(tmp_path):
    """The node script picks GLOO_SOCKET_IFNAME from `ip -o -4 addr show` in bash (no Python
    start-up per node): the line whose address, less its prefix length, is VLLM_HOST_IP; a
    user's own GLOO_SOCKET_IFNAME is kept."""
    script = render_node(tmp_path, ["vllm", "serve", "m"])
    (tmp_path / "bin" / "ip").write_text(
        "#!/bin/sh\n"
        "echo '1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever'\n"
        "echo '2: eth0    inet 10.9.8.70/24 brd 10.9.8.255 scope global eth0'\n"
        "echo '3: ib0    inet 10.9.8.7/16 brd 10.9.255.255 scope global ib0'\n")
    (tmp_path / "bin" / "ip").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "VLLM_HOST_IP": "10.9.8.7", "ARGV_OUT": str(tmp_path / "argv.json")}
    env.pop("GLOO_SOCKET_IFNAME", None)
    assert subprocess.run(["bash", str(script)], cwd=tmp_path, env=env).returncode == 0
    assert "GLOO_SOCKET_IFNAME=ib0 (holds 10.9.8.7)" in (tmp_path / "h.log").read_text()
    (tmp_path / "h.log").unlink()
    env["GLOO_SOCKET_IFNAME"] = "mine"
    assert subprocess.run(["bash", str(script)], cwd=tmp_path, env=env).returncode == 0
    assert "GLOO_SOCKET_IFNAME" not in (tmp_path / "h.log").read_text()
