"""``python -m pyservecli.workers.portcheck PORT...``: exit 3 naming the ports in use on this node.

Run by the launcher on the head node (through srun) before any rank starts, because only the
node itself can tell whether its ports are free.
"""

from __future__ import annotations

import sys

from pyservecli.run.portprobe import is_port_free


def main(argv: list[str] | None = None) -> int:
    ports = [int(p) for p in (sys.argv[1:] if argv is None else argv)]
    busy = [p for p in ports if not is_port_free(p)]
    if busy:
        print(" ".join(map(str, busy)))
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
