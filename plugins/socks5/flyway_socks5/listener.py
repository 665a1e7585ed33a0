"""The ``-D`` listener: accept local clients; the first byte picks SOCKS5, SOCKS4 or HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flyway_core import Address, ConfigError
from flyway_socks5 import httpproxy, socks4, socks5
from flyway_socks5.base import Client, Credentials, HandshakeError, log

if TYPE_CHECKING:
    from flyway_core.interfaces import Tunnel

__all__ = ["Socks5Listener"]

BACKLOG = socket.SOMAXCONN  # a burst of connections must not wait for SYN retries


@dataclass(frozen=True, slots=True)
class Socks5Listener:
    """Accepts on ``bind``; each client's first byte says which proxy protocol it speaks."""

    bind: Address
    credentials: Credentials | None = None
    handshake_timeout: float = 10.0

    def __str__(self) -> str:
        auth = ", user/pass" if self.credentials else ""
        return f"socks5 {self.bind} (SOCKS5, SOCKS4a, HTTP{auth})"

    async def serve(self, tunnel: Tunnel, *, started: Callable[[Address], object]) -> None:
        loop = asyncio.get_running_loop()
        clients: set[asyncio.Task[None]] = set()

        def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = loop.create_task(self._handle(tunnel, reader, writer))
            clients.add(task)
            task.add_done_callback(clients.discard)

        try:
            server = await asyncio.start_server(
                on_client, self.bind.host, self.bind.port, backlog=BACKLOG
            )
        except OSError as exc:
            raise ConfigError(f"-D: cannot listen on {self.bind}: {exc.strerror or exc}") from exc
        try:
            async with server:
                started(Address(*server.sockets[0].getsockname()[:2]))
                await server.serve_forever()
        finally:
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)

    async def _handle(
        self, tunnel: Tunnel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        origin = str(Address(*peer[:2])) if peer else ""
        loop = asyncio.get_running_loop()
        client = Client(
            reader, writer, tunnel, self.credentials, loop.time() + self.handshake_timeout, origin
        )
        try:
            async with asyncio.timeout_at(client.deadline):
                first = await reader.read(1)
            if first == b"\x05":
                await socks5.serve(client)
            elif first == b"\x04":
                await socks4.serve(client)
            elif first:
                await httpproxy.serve(client, first)
            else:
                writer.close()
        except HandshakeError as exc:
            log.debug("%s: %s", origin, exc)
            await client.refuse(exc.answer)
        except TimeoutError:
            log.debug("%s: handshake took over %.1f s", origin, self.handshake_timeout)
            writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            log.debug("%s: %s", origin, exc or type(exc).__name__)
            writer.close()
        finally:
            if not writer.is_closing():
                writer.close()
            if not client.handed_over:  # else the relay closed it, unheard by the reader
                with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                    async with asyncio.timeout(1):
                        await writer.wait_closed()
