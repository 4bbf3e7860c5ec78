"""Run many `vllm bench serve` points in one process, so vLLM is imported once per sweep.

A fresh `vllm bench serve` per point spends seconds importing vLLM and loading the tokenizer
before its measured duration starts; over a sweep that start-up dominated the wall time on
small points. The worker reads one JSON job per line on stdin,
``{"argv": [...arguments of vllm bench serve...], "log": PATH}``, runs it with vLLM's own
``vllm.benchmarks.serve.main`` (the code behind `vllm bench serve`), and answers one JSON line
``{"code": N}``. Started by ``pyservecli.bench.runner``; not a user command.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback


def main() -> int:
    # Answers go on a private copy of the stdout pipe; fd 1 itself is pointed at stderr before
    # vLLM is imported, because vLLM's loggers bind the original stdout at import and would
    # interleave their lines with the answers (seen with vLLM 0.26 on GPU).
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", closefd=False)
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    for line in sys.stdin:
        job = json.loads(line)
        parser = FlexibleArgumentParser()
        add_cli_args(parser)
        code = 0
        with open(job["log"], "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            try:
                bench_main(parser.parse_args(job["argv"]))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - a point's failure is reported, not fatal
                traceback.print_exc()
                code = 1
        answers.write(json.dumps({"code": code}) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
