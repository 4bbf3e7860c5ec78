"""Is a port free on this host? The one place pyserve binds a socket to find out."""

from __future__ import annotations

import socket


def is_port_free(port: int) -> bool:
    """True when nothing listens on ``port`` on this host, over IPv4 or IPv6.

    SO_REUSEADDR as the servers themselves bind (uvicorn, ZMQ): connections of a server that
    just stopped linger in TIME_WAIT and must not count as "in use"; a listener still does.
    An IPv6-only listener (``[::]:PORT`` with V6ONLY) holds the port as much as an IPv4 one.
    """
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, address in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this host: nothing can listen there either
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True
