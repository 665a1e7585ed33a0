"""What every protocol handler shares: the client connection, credentials, and reaching a target."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from flyway_core import (
    Address,
    StreamResetError,
    TargetError,
    TunnelUnavailable,
    take_buffered,
)
from flyway_core.protocol import ResetReason

if TYPE_CHECKING:
    from flyway_core.interfaces import Stream, Tunnel

__all__ = [
    "Client",
    "Credentials",
    "HandshakeError",
    "give_up_stream",
    "valid_hostname",
    "wait_accepted",
]

log = logging.getLogger("flyway_socks5")

CONNECT_TIMEOUT = 30.0  # seconds from opening a stream to the server's answer
_LABELS = re.compile(rb"[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")


class HandshakeError(Exception):
    """A client broke its protocol: send ``answer`` (may be empty), then close."""

    def __init__(self, why: str, answer: bytes = b"") -> None:
        super().__init__(why)
        self.answer = answer


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password a client must present (RFC 1929, or HTTP Basic)."""

    user: bytes
    password: bytes

    def check(self, user: bytes, password: bytes) -> bool:
        """Return whether these are the configured credentials (constant time)."""
        same_user = hmac.compare_digest(user, self.user)
        return hmac.compare_digest(password, self.password) and same_user

    def __repr__(self) -> str:
        return f"Credentials({self.user!r}, ***)"


def valid_hostname(name: bytes) -> bool:
    """Return whether ``name`` is a domain name: letters, digits, ``-``, ``_``, dots."""
    return 0 < len(name) <= 255 and _LABELS.fullmatch(name) is not None


@dataclass(slots=True)
class Client:
    """One local connection on a ``-D`` port, and what its handler needs."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    tunnel: Tunnel
    credentials: Credentials | None
    deadline: float  # loop time by which the handshake must be done
    origin: str
    handed_over: bool = False  # the connection belongs to a stream's relay now

    async def refuse(self, answer: bytes) -> None:
        """Send ``answer`` (if any) and close the connection."""
        with contextlib.suppress(ConnectionError, OSError):
            if answer:
                self.writer.write(answer)
                async with asyncio.timeout(5):
                    await self.writer.drain()
        self.writer.close()

    async def connect(
        self,
        target: Address,
        *,
        success: Callable[[Address | None], bytes],
        failure: Callable[[int, str], bytes],
        already_read: bytes = b"",
    ) -> None:
        """Open a stream to ``target``; answer as the server's outcome says; relay on success.

        ``success`` gets the server's local address toward the target (``stream.bound``),
        or None when the server did not report it.
        """
        try:
            async with self.tunnel.open_stream(target, origin=self.origin) as stream:
                reason, message = await wait_accepted(stream, lambda: give_up_stream(stream))
                if reason is not None:
                    log.debug("%s -> %s: %s", self.origin, target, message)
                    await self.refuse(failure(reason, message))
                    return
                self.writer.write(success(stream.bound))
                self.handed_over = True
                await stream.relay(
                    self.writer.transport,
                    already_read=already_read + take_buffered(self.reader),
                    at_eof=self.reader.at_eof(),
                )
        except TunnelUnavailable as exc:
            log.debug("%s -> %s: %s", self.origin, target, exc)
            await self.refuse(failure(ResetReason.INTERNAL, "tunnel unavailable"))


def give_up_stream(stream: Stream) -> None:
    stream.reset(ResetReason.TIMED_OUT, "no answer from the server")


class Pending(Protocol):
    """A stream or flow waiting for the server's answer."""

    async def accepted(self) -> None: ...


async def wait_accepted(
    pending: Pending, give_up: Callable[[], object] | None = None
) -> tuple[int | None, str]:
    """Wait for the server's answer: (None, "") once reached, else (reason, text).

    ``give_up`` runs when no answer came in time (a stream resets itself as TIMED_OUT).
    """
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await pending.accepted()
    except TargetError as exc:
        return exc.reason, str(exc)
    except StreamResetError as exc:
        return int(getattr(exc, "reason", ResetReason.INTERNAL)), str(exc)
    except TimeoutError:
        if give_up is not None:
            give_up()
        return ResetReason.TIMED_OUT, "timed out"
    return None, ""
