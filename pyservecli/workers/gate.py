"""``python -m pyservecli.workers.gate --listen HOST --port PORT --upstream URL [--key-file F]``:
the public face of a fleet's router.

vllm-router (0.1.17) serves its management API (``/add_worker``, ``/remove_worker``,
``POST /workers``, ``/flush_cache``, ...) on the same port as the OpenAI API and checks no key on
any of it: anyone who reaches the port can add a worker of their own and receive every prompt
and the clients' key. In P/D mode it also answers requests without a key (it sends its own to
the servers). So the router listens on loopback only, where the launcher manages it, and this
gate takes the public port: it passes on the OpenAI API (``/v1/...``) and ``/health`` only,
and with a key it refuses (401) any ``/v1/`` request that does not carry it, as vLLM does.

aiohttp comes with vllm-router, so wherever a router runs this does too. Request and response
bodies are streamed through unchanged; no header or body is ever logged.
"""

from __future__ import annotations

import argparse
import hmac
import re
import sys
from pathlib import Path

# Paths served to clients: vLLM's OpenAI API and the health check. Everything else is the
# router's management API (or unknown) and is not reachable through the gate.
OPEN_PATHS = frozenset({"/health", "/ping", "/version"})  # no key needed, as in vLLM
API_PREFIX = "/v1/"
# A path is passed on only in plain form: no percent-encoding, no dot segments, no empty
# segments; otherwise the router could read a path the gate did not check (/v1/../add_worker).
_PLAIN_PATH = re.compile(r"^(/[A-Za-z0-9_~\-][A-Za-z0-9._~\-]*)+/?$")
METHODS = frozenset({"GET", "POST", "DELETE", "HEAD", "OPTIONS"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host",
                        "content-length"})
MAX_BODY = 512 * 1024 * 1024  # the router's own default --max-payload-size


def allowed(method: str, raw_path: str) -> bool:
    """Whether a request for ``raw_path`` (no query) is one the gate passes on."""
    if method not in METHODS or not _PLAIN_PATH.match(raw_path):
        return False
    if any(segment in (".", "..") for segment in raw_path.split("/")):
        return False
    return raw_path in OPEN_PATHS or raw_path.startswith(API_PREFIX)


def needs_key(raw_path: str) -> bool:
    return raw_path not in OPEN_PATHS


def key_matches(header: str | None, key: str) -> bool:
    expected = f"Bearer {key}".encode()
    return hmac.compare_digest((header or "").encode(errors="replace"), expected)


def read_key(path: str) -> str:
    key = Path(path).read_text().strip()
    if not key:
        raise SystemExit(f"pyserve gate: the key file {path} is empty")
    return key


def make_app(upstream: str, key: str | None):
    from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

    async def start_session(app):
        # No connection cap and no total timeout: a long generation is a long request.
        app["session"] = ClientSession(
            connector=TCPConnector(limit=0), auto_decompress=False,
            timeout=ClientTimeout(total=None, sock_connect=30))

    async def close_session(app):
        await app["session"].close()

    def refuse(status: int, message: str):
        return web.json_response({"error": message}, status=status)

    async def forward(request: web.Request):
        raw_path = request.raw_path.split("?", 1)[0]
        if not allowed(request.method, raw_path):
            return refuse(404, "not served here: pyserve's gateway passes on the OpenAI API "
                               "(/v1/...) and /health only")
        if key is not None and needs_key(raw_path) and \
                not key_matches(request.headers.get("Authorization"), key):
            return refuse(401, "Unauthorized")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read() if request.can_read_body else None
        try:
            upstream_response = await request.app["session"].request(
                request.method, upstream + request.raw_path, headers=headers, data=body,
                allow_redirects=False)
        except (ClientError, OSError) as exc:
            return refuse(502, f"the router did not answer ({type(exc).__name__})")
        async with upstream_response:
            response = web.StreamResponse(status=upstream_response.status,
                                          reason=upstream_response.reason)
            for name, value in upstream_response.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            if upstream_response.headers.get("Content-Length") is not None and \
                    "chunked" not in upstream_response.headers.get("Transfer-Encoding", ""):
                response.content_length = int(upstream_response.headers["Content-Length"])
            try:
                await response.prepare(request)
                async for chunk in upstream_response.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ClientError, ConnectionResetError):
                # The client left (or the router cut the stream): closing the upstream
                # response aborts the request there too.
                pass
            return response

    app = web.Application(client_max_size=MAX_BODY)
    app.on_startup.append(start_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyservecli.workers.gate")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the router, e.g. http://127.0.0.1:P")
    parser.add_argument("--key-file", help="clients must send this key (Bearer)")
    args = parser.parse_args(argv)
    from aiohttp import web

    key = read_key(args.key_file) if args.key_file else None
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(f"pyserve gate: {args.listen}:{args.port} -> {args.upstream} "
          f"({'key required' if key else 'no key'})", flush=True)
    # handler_cancellation: a client that leaves cancels its request here, which closes the
    # connection to the router, which aborts the request on the server (abandoned requests
    # would otherwise run to the end and pile up, e.g. READY probes that timed out).
    web.run_app(make_app(args.upstream.rstrip("/"), key), host=args.listen, port=args.port,
                access_log=None, print=None, shutdown_timeout=5, reuse_address=True,
                handler_cancellation=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
