"""The bench worker's answers stay parseable when the benchmark code prints to stdout.

vLLM 0.26 (GPU) binds its loggers to stdout at import and logs during `vllm bench serve`; the
worker's answer line then came after a log line and pyserve bench crashed on the first point.
This stands in a `vllm.benchmarks.serve` that does exactly that (logger bound to stdout at
import, prints and logs while running) and talks to the real worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FAKE_SERVE = '''
import logging, sys
log = logging.getLogger("vllm")
log.addHandler(logging.StreamHandler(sys.stdout))
log.setLevel(logging.INFO)
log.info("INFO vllm imported")
def add_cli_args(parser):
    parser.add_argument("--exit-code", type=int, default=0)
def main(args):
    log.info("INFO starting benchmark")
    print("plain print from the benchmark")
    sys.stdout.flush()
    if args.exit_code:
        raise SystemExit(args.exit_code)
'''
FAKE_ARGPARSE = "from argparse import ArgumentParser as FlexibleArgumentParser\n"


def test_answers_survive_stdout_logging(tmp_path: Path):
    fake = tmp_path / "site"
    (fake / "vllm" / "benchmarks").mkdir(parents=True)
    (fake / "vllm" / "utils").mkdir(parents=True)
    for package in ("vllm", "vllm/benchmarks", "vllm/utils"):
        (fake / package / "__init__.py").write_text("")
    (fake / "vllm" / "benchmarks" / "serve.py").write_text(FAKE_SERVE)
    (fake / "vllm" / "utils" / "argparse_utils.py").write_text(FAKE_ARGPARSE)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{repo}"}
    jobs = [{"argv": [], "log": str(tmp_path / "a.log")},
            {"argv": ["--exit-code", "3"], "log": str(tmp_path / "b.log")}]
    done = subprocess.run([sys.executable, "-m", "pyservecli.workers.bench_worker"], env=env,
                          input="".join(json.dumps(job) + "\n" for job in jobs),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers == [{"code": 0}, {"code": 3}]
    # What the benchmark printed is kept in the point's log; the logger's lines went to stderr.
    assert "plain print from the benchmark" in (tmp_path / "a.log").read_text()
    assert "starting benchmark" in done.stderr
