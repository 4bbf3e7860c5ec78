"""Wait until a Ray cluster counts the expected number of live nodes (run on the Ray head).

    python -m pyservecli.workers.raywait --address HEAD:PORT --nodes N [--timeout S]

Exits 0 once N nodes are alive, 1 on timeout, printing the count as it changes so the head's log
shows which nodes joined.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyservecli.workers.raywait")
    parser.add_argument("--address", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    import ray  # only on nodes that run the ray backend

    ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
    deadline = time.monotonic() + args.timeout
    seen = -1
    try:
        while time.monotonic() < deadline:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) != seen:
                seen = len(alive)
                resources = ray.cluster_resources()
                print(f"pyserve: ray cluster has {seen}/{args.nodes} nodes, "
                      f"{resources.get('GPU', 0):g} GPUs, {resources.get('CPU', 0):g} CPUs",
                      flush=True)
            if seen >= args.nodes:
                return 0
            time.sleep(1.0)
    finally:
        ray.shutdown()
    print(f"pyserve: ray cluster reached only {seen}/{args.nodes} nodes in {args.timeout:.0f}s",
          file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
