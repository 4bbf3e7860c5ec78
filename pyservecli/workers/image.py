"""``python -m pyservecli.workers.image load|pull|ls|rm ...``: the image verbs, run on each node
(by ``pyserve image`` through one srun step, and by the container entrypoint before it starts its
container)."""

from __future__ import annotations

import sys

from pyservecli.run.container import list_images, load, pull, remove_image

USAGE = ("usage: python -m pyservecli.workers.image "
         "load TARBALL TAG [--force] | pull REF | ls | rm TAG")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verbs = {"load": (2, lambda a: load(a[0], a[1], "--force" in a[2:])),
             "pull": (1, lambda a: pull(a[0])),
             "ls": (0, lambda _a: list_images()),
             "rm": (1, lambda a: remove_image(a[0]))}
    if not args or args[0] not in verbs or len(args) - 1 < verbs[args[0]][0]:
        print(USAGE, file=sys.stderr)
        return 2
    return verbs[args[0]][1](args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
