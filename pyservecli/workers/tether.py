"""``python -m pyservecli.workers.tether PID COMMAND [ARGS...]``: run COMMAND so that it ends
(SIGTERM) when process PID, the one that started it, dies, however it dies. Used for the
processes a launcher runs on its own host, such as a fleet's router: a SIGKILLed launcher must
not leave them serving."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or not args[0].isdigit():
        print("usage: python -m pyservecli.workers.tether PID COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent, command = int(args[0]), args[1:]
    # Linux keeps the parent-death signal across execve: COMMAND gets SIGTERM when the thread
    # that started this process exits.
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        print(f"pyserve: tether: prctl failed (errno {ctypes.get_errno()})", file=sys.stderr)
        return 1
    if os.getppid() != parent:  # it died before the signal was armed
        return 1
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
