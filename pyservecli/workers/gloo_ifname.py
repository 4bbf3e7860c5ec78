"""``python -m pyservecli.workers.gloo_ifname``: print the interface gloo should bind on this
node (``run.cluster.gloo_interface``), nothing when there is none. Node entrypoints call it."""

from __future__ import annotations

import os

from pyservecli.run.cluster import gloo_interface


def main() -> int:
    interface = gloo_interface(os.environ)
    if interface:
        print(interface)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
