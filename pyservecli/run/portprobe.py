"""Is a port free on this host? The one place pyserve binds a socket to find out."""

from __future__ import annotations

import socket


def is_port_free(port: int, host: str = "") -> bool:
    """True when nothing listens on ``port`` on this host.

    SO_REUSEADDR as the servers themselves bind (uvicorn, ZMQ): connections of a server that
    just stopped linger in TIME_WAIT and must not count as "in use"; a listener still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
