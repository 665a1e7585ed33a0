"""The client's tunnel: keeps one session to the server up and opens streams on it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from flyway_core.errors import (
    CarrierError,
    DatagramsUnsupported,
    DialError,
    LocalProtocolError,
    TunnelRefused,
    TunnelUnavailable,
)
from flyway_core.events import DialFailed, Event, SessionDown, SessionUp
from flyway_core.protocol import (
    SUPPORTED_FEATURES,
    Cipher,
    ClientConnection,
    CloseReason,
    derive_master_key,
)
from flyway_core.session import Session
from flyway_core.stats import Stats

if TYPE_CHECKING:
    from flyway_core.address import Address, ServerURL
    from flyway_core.flow import TunnelFlow
    from flyway_core.interfaces import Transport
    from flyway_core.settings import Settings
    from flyway_core.stream import TunnelStream

__all__ = ["ClientTunnel"]

log = logging.getLogger(__name__)
DIAL_TIMEOUT = 15.0
SESSION_WAIT = 10.0  # seconds a new local connection waits for a session to come up
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_SECONDS = 5.0  # a session that lasted this long resets the backoff


class ClientTunnel:
    """A :class:`~flyway_core.interfaces.Tunnel` to one server, reconnecting with backoff."""

    def __init__(
        self,
        server: ServerURL,
        transport: Transport,
        settings: Settings,
        *,
        emit: Callable[[Event], None],
        stats: Stats | None = None,
    ) -> None:
        self.server = server
        self.transport = transport
        self.settings = settings
        self.stats = stats or Stats()
        self._emit = emit
        self._master = derive_master_key(settings.password)
        self._cipher = Cipher.parse(settings.cipher)
        self._session: Session | None = None
        self._failing = False  # the last dial failed and no session is up since
        self._changed = asyncio.Condition()

    @property
    def session(self) -> Session | None:
        """The live session, if any."""
        return self._session if self._session is not None and self._session.alive else None

    async def wait_ready(self) -> Session:
        """Wait until a session is up (for tests and tools)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.session is not None)
        assert self._session is not None
        return self._session

    async def _live_session(self) -> Session:
        """The live session, waiting up to ``SESSION_WAIT`` s for one; else TunnelUnavailable.

        Only a dial still in progress is waited for: once one failed (a wrong password,
        a server down) connections are refused at once until a session is up again.
        """
        try:
            async with asyncio.timeout(SESSION_WAIT), self._changed:
                await self._changed.wait_for(lambda: self.session is not None or self._failing)
        except TimeoutError:
            pass
        session = self.session
        if session is None:
            raise TunnelUnavailable(f"no tunnel to {self.server} is up")
        return session

    @asynccontextmanager
    async def open_stream(
        self, target: Address, *, origin: str = ""
    ) -> AsyncIterator[TunnelStream]:
        """Open a stream to ``target`` on the live session (no round trip).

        While a dial is under way (the first, or a reconnect) it waits for the session,
        up to ``SESSION_WAIT`` seconds: a connection made just after the client started
        should not fail. TunnelUnavailable once a dial failed, or after the wait.
        """
        session = await self._live_session()
        try:
            stream = session.open_stream(target, origin)
        except LocalProtocolError as exc:  # the session closed since we looked
            raise TunnelUnavailable(f"the tunnel to {self.server} is closing ({exc})") from None
        try:
            yield stream
        finally:
            session.close_stream(stream)

    @asynccontextmanager
    async def open_flow(self, *, origin: str = "") -> AsyncIterator[TunnelFlow]:
        """Open a datagram flow on the live session; closed (Reset) when the block ends.

        TunnelUnavailable if no session is up, DatagramsUnsupported if the server
        does not speak datagram flows.
        """
        session = await self._live_session()
        try:  # the Welcome says whether the server speaks flows
            async with asyncio.timeout(DIAL_TIMEOUT):
                await session.started.wait()
        except TimeoutError:
            raise TunnelUnavailable(f"the server {self.server} did not answer") from None
        if not session.datagram_flows:
            raise DatagramsUnsupported(f"the server {self.server} does not relay datagrams")
        try:
            flow = session.open_flow(origin)
        except LocalProtocolError as exc:  # the session closed since we looked
            raise TunnelUnavailable(f"the tunnel to {self.server} is closing ({exc})") from None
        try:
            yield flow
        finally:
            session.close_flow(flow)

    async def run(self) -> None:
        """Keep a session up until cancelled: dial, run, and dial again with backoff."""
        backoff = BACKOFF_FIRST
        while True:
            session, error = await self._connect()
            if session is None:
                self._emit(DialFailed(str(self.server), error, backoff))
                await self._failed()
                backoff = await _pause(backoff)
                continue
            await self._set_session(session)
            self._emit(
                SessionUp(session.id, str(self.server), self.transport.carried_by(), "client")
            )
            ran_from = time.monotonic()
            try:
                await session.run()
            except Exception as exc:  # a bug must not stop the tunnel: say so, dial again
                cause = _innermost(exc)
                log.error("session %s failed: %s: %s", session.id, type(cause).__name__, cause)
                log.debug("session %s failed", session.id, exc_info=True)
                session.error = session.error or f"internal error ({type(cause).__name__})"
            finally:
                await self._set_session(None)
            brief = time.monotonic() - ran_from < STABLE_SECONDS
            if session.closed_by is CloseReason.BUSY:  # full: back off as after a failed dial
                self._emit(SessionDown(session.id, str(self.server), session.error))
                self._emit(DialFailed(str(self.server), session.error or "busy", backoff))
                await self._failed()
            elif session.started.is_set():
                self._emit(SessionDown(session.id, str(self.server), session.error))
                if not brief:  # a session that lasted: the next dial may come at once
                    backoff = BACKOFF_FIRST
                    continue
                # up and gone at once, again and again: do not hammer the server
            else:  # the carrier opened, but the server never answered the handshake
                reason = str(TunnelRefused(str(self.server), session.error or ""))
                self._emit(DialFailed(str(self.server), reason, backoff))
                await self._failed()
            backoff = await _pause(backoff)

    async def _connect(self) -> tuple[Session | None, str]:
        connection = ClientConnection(
            self._master,
            now=time.time(),
            window=self.settings.window,
            cipher=self._cipher,
            idle_timeout=self.settings.idle_timeout,
            features=SUPPORTED_FEATURES,
        )
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                carrier = await self.transport.dial(self.server, connection.hello(), self.settings)
        except TimeoutError:
            return None, f"timed out connecting to {self.server}"
        except (DialError, CarrierError) as exc:
            return None, str(exc)
        except OSError as exc:  # a transport that forgot to map a socket error
            return None, f"{self.server}: {exc.strerror or exc}"
        session = Session(
            connection, carrier, peer=str(self.server), emit=self._emit, stats=self.stats
        )
        return session, ""

    async def _set_session(self, session: Session | None) -> None:
        async with self._changed:
            self._session = session
            if session is not None:
                self._failing = False
            self._changed.notify_all()

    async def _failed(self) -> None:
        """A dial failed: connections stop waiting for a session until one is up again."""
        async with self._changed:
            self._failing = True
            self._changed.notify_all()


def _innermost(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _pause(backoff: float) -> float:
    """Wait ``backoff`` seconds; return the next, doubled up to ``BACKOFF_MAX``."""
    await asyncio.sleep(backoff)
    return min(backoff * 2, BACKOFF_MAX)
