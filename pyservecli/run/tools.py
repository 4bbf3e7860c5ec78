"""Checks that a tool a command needs is installed here, made before anything starts."""

from __future__ import annotations

import shutil

from pyservecli.errors import PyserveError


def require_nsys() -> None:
    if shutil.which("nsys") is None:
        raise PyserveError("--nsys needs Nsight Systems' `nsys` on PATH (not found here); "
                           "install the Nsight Systems CLI or use the serving image")


def require_viztracer() -> None:
    import importlib.util

    if importlib.util.find_spec("viztracer") is None:
        raise PyserveError("--viztracer needs the viztracer package "
                           "(pip install 'pyserve[engine]')")
