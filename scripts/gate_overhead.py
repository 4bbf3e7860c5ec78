"""What pyserve's gate (workers/gate.py) costs on the data path: requests and streamed chunks per
second through it against the same upstream reached directly, and the added latency per
request. The upstream is a minimal aiohttp server that answers a completion as N SSE chunks,
so the numbers are the gate's own ceiling, not a model's.

    .venv/bin/python scripts/gate_overhead.py [--concurrency 64] [--requests 2000] [--chunks 64]

Prints one line per path (direct, gate) and the ratio. Loopback only; ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def upstream(port: int, chunks: int):
    from aiohttp import web

    payload = b'data: {"choices":[{"text":"tok","index":0}]}\n\n'

    async def complete(request):
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(chunks):
            await response.write(payload)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", complete)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def load(url: str, concurrency: int, total: int) -> tuple[float, list[float], int]:
    from aiohttp import ClientSession, TCPConnector

    latencies: list[float] = []
    received = 0
    queue = list(range(total))

    async def worker(session):
        nonlocal received
        while queue:
            queue.pop()
            start = time.perf_counter()
            async with session.post(url, json={"model": "m", "prompt": "x", "stream": True},
                                    headers={"Authorization": "Bearer k"}) as answer:
                async for chunk in answer.content.iter_any():
                    received += len(chunk)
            latencies.append(time.perf_counter() - start)

    async with ClientSession(connector=TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - start, latencies, received


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=64)
    args = parser.parse_args()
    up, gate = free_port(), free_port()
    key = ROOT / ".gate-bench-key"
    key.write_text("k\n")
    process = subprocess.Popen([sys.executable, "-m", "pyservecli.workers.gate", "--listen",
                                "127.0.0.1", "--port", str(gate), "--upstream",
                                f"http://127.0.0.1:{up}", "--key-file", str(key)], cwd=ROOT)

    async def run():
        runner = await upstream(up, args.chunks)
        try:
            for _ in range(100):  # the gate is up
                try:
                    socket.create_connection(("127.0.0.1", gate), timeout=1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            rows = {}
            gate_cpu_ms = 0.0
            for name, port in (("direct", up), ("gate", gate)):
                await load(f"http://127.0.0.1:{port}/v1/completions", args.concurrency, 100)
                cpu = cpu_seconds(process.pid)
                wall, latencies, received = await load(
                    f"http://127.0.0.1:{port}/v1/completions", args.concurrency, args.requests)
                if name == "gate":
                    gate_cpu_ms = 1000 * (cpu_seconds(process.pid) - cpu) / args.requests
                rows[name] = (args.requests / wall, args.requests * (args.chunks + 1) / wall,
                              statistics.median(latencies) * 1000)
                print(f"{name:7} {rows[name][0]:9.0f} req/s {rows[name][1]:10.0f} chunks/s "
                      f"p50 {rows[name][2]:7.2f} ms  ({received} bytes)", flush=True)
            print(f"gate/direct: {rows['gate'][1] / rows['direct'][1]:.2f} of the chunk rate, "
                  f"{rows['gate'][2] - rows['direct'][2]:+.2f} ms p50 at {args.concurrency} in "
                  f"flight, {args.chunks} chunks per request; the gate's own CPU "
                  f"{gate_cpu_ms:.3f} ms per request")
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    finally:
        process.terminate()
        process.wait()
        key.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
