"""The ``socks5`` column: a flyway client with ``-D``, the driver speaking SOCKS5 to it.

The same server as every column; the client gets one ``-D`` port instead of one ``-L``
per target, and every connection the workloads open does a SOCKS5 CONNECT (no auth,
IPv4 target) before its first byte (``wire.ViaSocks5``), so the connect row includes the
handshake as a browser or curl does it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .processes import Tunnel, free_ports
from .wire import HOST, TARGETS, ViaSocks5

__all__ = ["Socks5Tunnel"]


@dataclass
class Socks5Tunnel(Tunnel):
    """One flyway server plus one client serving SOCKS5 on one ``-D`` port."""

    async def start(self, target_ports: dict[str, int]) -> bool:
        """Start server and client; False (and ``skipped`` says why) if the column cannot run."""
        password = secrets.token_urlsafe(12)
        server_port, socks_port = free_ports(2)
        window = ["-W", str(self.window)] if self.window else []
        if not await self._start_server(server_port, password, window):
            return False
        self.forwards = {name: ViaSocks5(socks_port, target_ports[name]) for name in TARGETS}
        self.client = self._spawn(
            [
                *self.client_flags,
                "-q",
                *window,
                "-D",
                f"{HOST}:{socks_port}",
                f"{HOST}:{server_port}",
                "-p",
                password,
            ],
            self.client_log,
        )
        return await self._started([socks_port])
