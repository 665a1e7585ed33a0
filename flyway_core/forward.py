"""Built-in plugin: ``-L`` port forwarding, in goflyway's (and ssh's) syntax.

Each connection accepted on the local address becomes one tunnel stream to the
target, which the server dials. Forms (IPv6 in brackets anywhere)::

    -L LPORT                  same port on the server's own host
    -L LPORT::HPORT           HPORT on the server's own host
    -L LPORT:HOST:HPORT       HOST:HPORT as the server sees it
    -L BIND:LPORT:HOST:HPORT  listen on BIND instead of 127.0.0.1
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from flyway_core.address import Address
from flyway_core.errors import ConfigError, TunnelUnavailable
from flyway_core.hookspecs import hookimpl
from flyway_core.link import LocalLink

if TYPE_CHECKING:
    from flyway_core.interfaces import Tunnel
    from flyway_core.settings import Settings

__all__ = ["ForwardListener", "parse_forward"]

log = logging.getLogger(__name__)
DEFAULT_BIND = "127.0.0.1"
SERVER_HOST = "localhost"  # the server's own host, resolved on the server
BACKLOG = socket.SOMAXCONN  # a burst of connections must not wait for SYN retries


@hookimpl
def add_options() -> list[click.Option]:
    return [
        click.Option(
            ["-L", "forward"],
            multiple=True,
            metavar="[BIND:]LPORT[:HOST:HPORT]",
            help="Forward local port LPORT to HOST:HPORT as the server sees it (repeatable).",
        )
    ]


@hookimpl
def register_listeners(settings: Settings) -> list[ForwardListener]:
    return [parse_forward(rule) for rule in settings.option("forward", default=())]


def _split(rule: str) -> list[str]:
    """Split on colons outside square brackets, dropping the brackets."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in rule:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == ":" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    if depth:
        raise ConfigError(f"-L {rule}: unbalanced brackets")
    return [part.removeprefix("[").removesuffix("]") for part in parts]


def _port(text: str, rule: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ConfigError(f"-L {rule}: {text!r} is not a port (1-65535)")
    return int(text)


def parse_forward(rule: str) -> ForwardListener:
    """Parse one ``-L`` value; ConfigError says what is wrong with it."""
    parts = _split(rule.strip())
    match parts:
        case [lport]:
            bind, port = DEFAULT_BIND, _port(lport, rule)
            target = Address(SERVER_HOST, port)
        case [lport, host, hport]:
            bind, port = DEFAULT_BIND, _port(lport, rule)
            target = Address(host or SERVER_HOST, _port(hport, rule))
        case [bind, lport, host, hport]:
            port = _port(lport, rule)
            target = Address(host or SERVER_HOST, _port(hport, rule))
            bind = bind or DEFAULT_BIND
        case _:
            raise ConfigError(f"-L {rule}: expected [BIND:]LPORT[:HOST:HPORT]")
    return ForwardListener(Address(bind, port), target)


@dataclass(frozen=True, slots=True)
class ForwardListener:
    """Accepts on ``bind``; every connection is a stream to ``target``."""

    bind: Address
    target: Address

    def __str__(self) -> str:
        return f"forward {self.bind} -> {self.target}"

    async def serve(self, tunnel: Tunnel, *, started: Callable[[Address], object]) -> None:
        loop = asyncio.get_running_loop()
        relays: set[asyncio.Task[None]] = set()

        def on_connect(link: LocalLink) -> None:
            task = loop.create_task(self._relay(tunnel, link))
            relays.add(task)
            task.add_done_callback(relays.discard)

        try:
            server = await loop.create_server(
                lambda: LocalLink(on_connect), self.bind.host, self.bind.port, backlog=BACKLOG
            )
        except OSError as exc:
            raise ConfigError(f"-L: cannot listen on {self.bind}: {exc.strerror or exc}") from exc
        try:
            async with server:
                started(Address(*server.sockets[0].getsockname()[:2]))
                await server.serve_forever()
        finally:
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

    async def _relay(self, tunnel: Tunnel, link: LocalLink) -> None:
        origin = link.peer
        transport = link.transport
        assert transport is not None  # on_connect runs in connection_made
        try:
            async with tunnel.open_stream(self.target, origin=origin) as stream:
                await stream.relay(transport)  # the link is its protocol already: it stays
        except TunnelUnavailable as exc:
            log.debug("refused %s: %s", origin, exc)
            transport.abort()
