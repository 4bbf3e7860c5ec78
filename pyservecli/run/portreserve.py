"""Ports planned on this host but not bound yet: a launch plans its ports seconds to minutes
before its servers bind them (a model loads first), and a second launch planned meanwhile
would find them free. Each launcher records the ports it planned in a directory shared by the
launchers of this host; a port recorded by another live launcher counts as taken.

One file per port (``/tmp/pyserve-ports/PORT``) holding the owner's PID and its start time, so
a record of a launcher that has ended (or a reused PID) counts for nothing.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

_mine: set[int] = set()


def directory() -> Path:
    return Path(os.environ.get("PYSERVE_PORT_RESERVATIONS")
                or Path(tempfile.gettempdir()) / "pyserve-ports")


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _me() -> str:
    return f"{os.getpid()} {_start_time(os.getpid())}"


def _owner(port: int) -> str | None:
    """The live owner's "PID START" of a port's record, None when unrecorded or stale."""
    try:
        text = (directory() / str(port)).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    pid, _, start = text.partition(" ")
    if not pid.isdigit() or _start_time(int(pid)) != start:
        return None
    return text


def reserved_by_other(port: int) -> bool:
    owner = _owner(port)
    return owner is not None and owner != _me()


def is_free_here(port: int) -> bool:
    """Free on this host and not planned by another live launcher of it."""
    from pyservecli.run.portprobe import is_port_free

    return is_port_free(port) and not reserved_by_other(port)


def _ensure_directory() -> Path:
    path = directory()
    try:
        path.mkdir(mode=0o1777, parents=True)
        os.chmod(path, 0o1777)  # every user's launchers share it; each removes only its own
    except FileExistsError:
        pass
    return path


def reserve(ports: Iterable[int]) -> list[int]:
    """Record ``ports`` as this process's; returns those another live launcher holds."""
    path = _ensure_directory()
    lost = []
    for port in sorted(set(ports)):
        record = path / str(port)
        for _ in range(2):
            try:
                fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _owner(port)
                if owner == _me():
                    break
                if owner is not None:
                    lost.append(port)
                    break
                try:  # a stale record: its launcher has ended
                    record.unlink()
                except OSError:
                    lost.append(port)  # another user's: leave it, pick another port
                    break
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(_me() + "\n")
            _mine.add(port)
            break
    return lost


def release(ports: Iterable[int] | None = None) -> None:
    """Remove this process's records (all of them by default; at exit in any case)."""
    for port in list(_mine if ports is None else ports):
        if _owner(port) == _me():
            try:
                (directory() / str(port)).unlink()
            except OSError:
                pass
        _mine.discard(port)


atexit.register(release)
