"""``python -m pyservecli.workers.reap JOB_ID NODE_RANK``: run by each node entrypoint as it
ends; stops whatever that node's rank of the launch left behind (see ``run.procs.reap``)."""

from __future__ import annotations

import os
import sys

from pyservecli.run.procs import reap


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m pyservecli.workers.reap JOB_ID NODE_RANK", file=sys.stderr)
        return 2
    job_id, rank = args
    # The entrypoint runs in a session of its own (the launcher or dispatch.sh start it with
    # setsid): then everything in that session is the job's. Otherwise trust only the env.
    session = os.getsid(0) if os.getsid(0) == os.getppid() else None
    pids = reap(job_id, rank, session)
    if pids:
        print(f"pyserve: stopped {len(pids)} leftover process(es) of job {job_id} on this node")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
