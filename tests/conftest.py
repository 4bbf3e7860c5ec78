import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyservecli.models.dummy import builtin_config

PYSERVE = [sys.executable, "-m", "pyservecli"]
ROOT = Path(__file__).resolve().parent.parent

# No test may reach a model hub (CI has no route to one) or read the developer's own Hugging Face
# cache: hub ids are looked up in an empty cache of the test tree, offline. Tests that need a
# cached config make their own cache and point HF_HUB_CACHE at it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = str(ROOT / "tests" / ".work" / "hf-cache-empty")


def run_pyserve(*args, env=None, cwd=None, timeout=60):
    """The real CLI in a subprocess: exit status and output as a user sees them."""
    full_env = {**os.environ, **(env or {})}
    for name in [k for k in full_env if k.startswith("SLURM_")]:
        if not (env and name in env):
            del full_env[name]
    return subprocess.run([*PYSERVE, *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)


@pytest.fixture
def config_dir(tmp_path):
    """A config-only directory (config.json alone) of a built-in model."""

    def make(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps(builtin_config(name)))
        return path

    return make



@pytest.fixture(scope="session")
def light_pyserve():
    """pyserve installed with only its light dependencies, as on a login node (no vllm, no
    torch), run through its console script with a PATH that has no engine either."""
    # Kept between runs (tests/.work is ignored) while pyproject.toml, which names the light
    # dependencies, is unchanged: the install is editable, so the code under test is current.
    import fcntl
    import hashlib

    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    venv = ROOT / "tests" / ".work" / f"light-venv-{key}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # `make unit` runs two pytest workers, each with its own session: one builds, the other
    # waits for it.
    with open(venv.parent / f"light-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            import shutil

            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "-e",
                                      str(ROOT)], capture_output=True, text=True)
            assert install.returncode == 0, install.stderr[-2000:]
            (venv / ".complete").touch()
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import importlib.util as u; print(u.find_spec('vllm'), "
                            "u.find_spec('torch'))"], capture_output=True, text=True)
    assert probe.stdout.split() == ["None", "None"], probe.stdout

    def run(*args, timeout=60):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "VIRTUAL_ENV"))}
        env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
        return subprocess.run([str(venv / "bin" / "pyserve"), *args], capture_output=True,
                              text=True, env=env, timeout=timeout)

    return run


@pytest.fixture(autouse=True, scope="session")
def _own_engine_mark(tmp_path_factory):
    """Engines this pytest starts carry its temporary base directory in their environment (see
    tests/engine.py:engine_leftovers)."""
    from . import engine

    engine.OWN_MARK = str(tmp_path_factory.getbasetemp())
    yield
    engine.OWN_MARK = None


@pytest.fixture(autouse=True)
def _foreign_engines():
    """The vLLM engine processes already running when a test starts are not its own (see
    tests/engine.py:engine_leftovers)."""
    from .engine import FOREIGN_ENGINES, renamed_engines

    FOREIGN_ENGINES.clear()
    FOREIGN_ENGINES.update(renamed_engines())
    yield


_HEAVY = ("engine", "cluster", "docker")


def pytest_collection_modifyitems(config, items):
    """The tests that need no engine, cluster or docker run first (in their own order): a
    mistake in the plan layer shows in two minutes, not after the engine tests, and the CPU
    image's build (tests/cpu_image.py) overlaps them."""
    light = [item for item in items if not any(item.get_closest_marker(m) for m in _HEAVY)]
    heavy = [item for item in items if any(item.get_closest_marker(m) for m in _HEAVY)]
    items[:] = light + heavy


def pytest_collection_finish(session):
    """Start the CPU image's build in the background when docker tests will run (not in a
    worker of ``-n``: each worker is a session of its own, and the one that gets the docker
    tests builds there and then)."""
    if session.config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if not any(item.get_closest_marker("docker") and "cpu_image" in
               getattr(item, "fixturenames", ()) for item in session.items):
        return
    from .cpu_image import BUILD, docker_unavailable
    from .engine import engine_available

    if docker_unavailable() is None and engine_available():
        BUILD.start()


def pytest_sessionfinish(session):
    from .cpu_image import BUILD

    BUILD.close()  # a build still running (its tests deselected by -x) stops; its tag goes
