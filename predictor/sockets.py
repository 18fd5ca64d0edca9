"""Listening sockets: one port shared by the --workers processes, and a bind check that
names the server and the address before anything starts."""

from __future__ import annotations

import socket


def bind_reuse_port(address: str, port: int) -> socket.socket:
    """A listening socket that other processes of this user may bind too: the kernel spreads
    connections over them, which is how --workers share one port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted sockets inherit it. Without it, under --workers, a REST reply at concurrency 1
    # took ~48 ms instead of ~7 ms: a small write waiting on the peer's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((address, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def check_port_free(address: str, port: int, name: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the servers bind: TIME_WAIT leftovers do not count as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as e:
            raise OSError(f"{name} cannot listen on {address}:{port}: {e.strerror or e}") from e
