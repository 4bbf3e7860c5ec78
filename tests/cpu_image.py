"""The CPU image the docker tests serve from: built once per pytest run, under a tag of that
run's own (the tests remove and reload that tag only, never the machine's pyserve-cpu:latest,
#28), then saved as the tarball `pyserve launch --image` loads.

From scratch the build (debootstrap, apt and pip layers, `docker save`) takes about 5 minutes,
mostly waiting on the package mirrors and the disk. So that the suite does not wait for it,
tests/conftest.py starts it in the background when collection ends, when docker tests are
selected, and runs the tests that need no engine first: the build overlaps them. The fixture
``cpu_image`` (tests/test_docker.py) waits for it; without the background start (a pytest
worker of ``-n``) it builds there and then."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# make's two steps, each argument a positional parameter of its own (never pasted into the
# script text).
_SCRIPT = ('make -s docker-cpu IMAGE_CPU="$1" && '
           'make -s save-cpu IMAGE_CPU="$1" IMAGE_TAR="$2"')


def docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "the Docker daemon is not running"
    return None


class ImageBuild:
    """One build and save of the CPU image; ``start`` in the background, ``wait`` for it."""

    def __init__(self):
        self.tag = f"pyserve-cpu:test-{os.getpid()}-{secrets.token_hex(3)}"
        self.folder: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    @property
    def tarball(self) -> Path:
        assert self.folder is not None
        return self.folder / "vllm-serve-latest.tar.gz"

    @property
    def log(self) -> Path:
        assert self.folder is not None
        return self.folder / "build.log"

    def start(self) -> None:
        if self.proc is not None:
            return
        self.folder = Path(tempfile.mkdtemp(prefix="pyserve-test-image-"))
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            # A session of its own: the stop at the end of the run takes make, docker and
            # pigz down together.
            self.proc = subprocess.Popen(["bash", "-c", _SCRIPT, "cpu-image", self.tag,
                                          str(self.tarball)], cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def wait(self, timeout: float = 3600) -> tuple[Path, str]:
        """(tarball, tag) once built; the build's own last lines when it failed."""
        self.start()
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the CPU image build took over {timeout:.0f} s: "
                                 f"{self._tail()}") from None
        assert code == 0 and self.tarball.is_file(), f"the CPU image build failed: {self._tail()}"
        return self.tarball, self.tag

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no build log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()

    def close(self) -> None:
        """Stop a build still running, remove this run's tag and tarball (and nothing else)."""
        if self.proc is None:
            return
        self.stop()
        subprocess.run(["docker", "image", "rm", self.tag], capture_output=True)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.proc = None


BUILD = ImageBuild()
