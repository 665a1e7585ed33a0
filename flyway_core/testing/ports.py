"""Ports on 127.0.0.1 for tests and scripts: pick a free one, wait until one listens.

Plain blocking sockets, no event loop: for code that starts servers in other processes.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

__all__ = ["blackhole", "free_port", "udp_port_free", "wait_port", "wait_port_on"]


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that is free now (another process may take it later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A port of 127.0.0.1 that takes no more connections: a connect to it hangs.

    It listens with its accept queue full (one connection made, never accepted), so
    Linux drops every further SYN, as a silent network would.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # room for one connection not yet accepted, and it is never
        port = int(listener.getsockname()[1])
        first = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        assert first.getpeername()[1] == port  # the queue is full from here on
        yield port


def udp_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Say whether a UDP socket could bind ``host`` ``port`` now (nothing holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts on 127.0.0.1 ``port``; TimeoutError after ``timeout``."""
    wait_port_on("127.0.0.1", port, timeout)


def wait_port_on(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts on ``host`` ``port`` (a host with ``:`` is IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(family) as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host} port {port} after {timeout:g}s")
