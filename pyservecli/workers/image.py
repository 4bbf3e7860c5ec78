"""``python -m pyservecli.workers.image VERB [--runtime NAME] ...``: the image verbs, run on each
node (by ``pyserve image`` through one srun step, and by a container entrypoint before it starts
its container). ``load``, ``pull``, ``ls`` and ``rm`` act on the docker or podman image store;
``build-sif`` (apptainer) and ``enroot-import`` (pyxis) convert an image once into a file in the
workspace."""

from __future__ import annotations

import os
import shutil
import sys

from pyservecli.errors import PyserveError
from pyservecli.run.runtimes import (
    DEFAULT_RUNTIME,
    build_sif_commands,
    convert_once,
    enroot_import,
    get_runtime,
)

USAGE = ("usage: python -m pyservecli.workers.image [--runtime NAME] "
         "load TARBALL TAG [--force] | pull REF | ls | rm TAG | "
         "build-sif SIF SOURCE [--force] | enroot-import TARBALL TAG SQSH [--force]")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    runtime_name = DEFAULT_RUNTIME
    if "--runtime" in args:
        at = args.index("--runtime")
        if at + 1 >= len(args):
            print(USAGE, file=sys.stderr)
            return 2
        runtime_name = args[at + 1]
        del args[at:at + 2]
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    try:
        runtime = get_runtime(runtime_name)
    except PyserveError as exc:  # an unknown name
        print(f"pyserve: error: {exc}", file=sys.stderr)
        return 2
    verbs = {"load": (2, lambda a: runtime.load(a[0], a[1], force)),
             "pull": (1, lambda a: runtime.pull(a[0])),
             "ls": (0, lambda _a: runtime.list_images()),
             "rm": (1, lambda a: runtime.remove_image(a[0])),
             "build-sif": (2, lambda a: convert_once(a[0], build_sif_commands(a[0], a[1]),
                                                     force)),
             "enroot-import": (3, lambda a: enroot_import(a[0], a[1], a[2], force))}
    if not args or args[0] not in verbs or len(args) - 1 != verbs[args[0]][0]:
        print(USAGE, file=sys.stderr)
        return 2
    needs = runtime.tool if args[0] in ("load", "pull", "ls", "rm") else None
    if needs and runtime.name in ("docker", "podman") and shutil.which(needs) is None:
        print(f"pyserve: error: {needs} is not installed on {os.uname().nodename}",
              file=sys.stderr)
        return 2
    return verbs[args[0]][1](args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
