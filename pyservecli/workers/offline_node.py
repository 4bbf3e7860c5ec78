"""``python -m pyservecli.workers.offline_node PLAN_JSON``: inside ``srun`` on each node, exec
this node's torchrun (picked by SLURM_NODEID) with the node's environment."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pyservecli.run.cluster import gloo_interface


def node_main(plan_path: str) -> int:
    plan = json.loads(Path(plan_path).read_text())
    node = plan["nodes"][int(os.environ["SLURM_NODEID"])]
    os.environ.update(node["env"])
    interface = gloo_interface(os.environ)
    if interface:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
        print(f"pyserve: GLOO_SOCKET_IFNAME={interface} (holds {os.environ['VLLM_HOST_IP']})",
              flush=True)
    os.execvp(node["argv"][0], node["argv"])
    return 127


if __name__ == "__main__":
    raise SystemExit(node_main(sys.argv[1]))
