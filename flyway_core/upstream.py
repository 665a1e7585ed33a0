"""The server's side of streams: dial each target a client opens, then relay to it.

A ``Session`` on the server hands every stream the client opened to an
``Upstream`` (its ``on_stream``). The upstream asks the dialer plugins how to
reach the target, connects with the stream's ``LocalLink`` as the connection's
protocol, and then either accepts the stream and relays until both directions
end, or resets it with the reason the dial failed for (refused, unreachable,
name not found, timed out, not allowed). The server's policy (``--allow``,
``--deny``, ``--deny-private``) comes first: with any rule, the target is resolved
and checked before a dialer plugin is asked, and the dialer connects to one
checked address at a time, so no plugin bypasses the policy and nothing is
resolved twice (no DNS-rebinding window). A dialer that crashes or claims success
without connecting resets only its own stream: the session lives on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from flyway_core.address import Address
from flyway_core.errors import FlywayError, TargetError
from flyway_core.events import Event, StreamUp
from flyway_core.flow_relay import FlowRelay, Resolvers
from flyway_core.link import LocalLink
from flyway_core.policy import Policy
from flyway_core.protocol import ResetReason

if TYPE_CHECKING:
    from flyway_core.flow import TunnelFlow
    from flyway_core.interfaces import Dialer
    from flyway_core.session import Session
    from flyway_core.stream import TunnelStream

__all__ = ["TARGET_TIMEOUT", "Upstream"]

log = logging.getLogger(__name__)
TARGET_TIMEOUT = 10.0  # seconds a dial to a stream's target may take
FLOWS_PER_SESSION = 256  # datagram flows (UDP associations) open at once in one session


class Upstream:
    """Serves the streams clients open: dial, accept or reset, relay (``Session.on_stream``).

    A stream beyond ``streams_per_session`` in its session, or beyond ``streams_in_all``
    in the process (what its file descriptors allow, with headroom for the front door),
    is reset as BUSY before anything is dialed.
    """

    def __init__(
        self,
        dialer_for: Callable[[Address], Dialer],
        emit: Callable[[Event], None],
        *,
        streams_per_session: int = 2048,
        streams_in_all: int | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._dialer_for = dialer_for
        self._policy = policy or Policy()
        self._emit = emit
        self._per_session = streams_per_session
        self._in_all = streams_in_all
        self._resolvers = Resolvers()  # flows' name lookups, shared by the whole server

    def __call__(self, session: Session, stream: TunnelStream) -> None:
        why = self._busy(session)
        if why is None:
            session.spawn(self._serve(session, stream))
            return
        stream.error = why
        stream.reset(ResetReason.BUSY, why)
        session.close_stream(stream)

    def serve_flow(self, session: Session, flow: TunnelFlow) -> None:
        """Serve a datagram flow the client opened (``Session.on_flow``), within the limits."""
        why = self._busy(session)
        if why is None and session.open_flows > FLOWS_PER_SESSION:
            why = f"busy: {FLOWS_PER_SESSION} datagram flows are open in this session"
        if why is None:
            relay = FlowRelay(flow, self._policy, self._resolvers)
            session.spawn(self._relay_flow(session, relay))
            return
        flow.error = why
        session.reset_stream(flow.stream_id, ResetReason.BUSY, why)
        session.close_flow(flow)

    def _busy(self, session: Session) -> str | None:
        """Why one more stream or flow in ``session`` is too many, or None."""
        if session.open_streams > self._per_session:
            return f"busy: {self._per_session} streams are open in this session"
        if self._in_all is not None and session.stats.streams > self._in_all:
            return f"busy: the server holds {self._in_all} streams, all it has descriptors for"
        return None

    async def _relay_flow(self, session: Session, relay: FlowRelay) -> None:
        flow = relay.flow
        try:
            await relay.run(lambda: session.accept_flow(flow))
        except FlywayError as exc:
            session.reset_stream(
                flow.stream_id, getattr(exc, "reason", ResetReason.INTERNAL), str(exc)
            )
        except Exception as exc:  # a bug in one flow must not end the session (or others)
            log.warning("flow %d failed: %s", flow.stream_id, exc, exc_info=True)
            session.reset_stream(flow.stream_id, ResetReason.INTERNAL, type(exc).__name__)
        finally:
            session.close_flow(flow)

    async def _serve(self, session: Session, stream: TunnelStream) -> None:
        link = LocalLink()
        try:
            try:
                if not await self._dial_unless_reset(stream, link):
                    return  # the client gave up on the stream (reset it): nothing to answer
            except FlywayError as exc:
                if isinstance(exc, TargetError):
                    stream.error, reason = f"{stream.target}: {exc}", exc.reason
                else:
                    stream.error, reason = str(exc), ResetReason.INTERNAL
                stream.reset(reason, str(exc))
                return
            session.accept_stream(stream, _bound(link))
            self._emit(StreamUp(session.id, stream.stream_id, stream.target, session.peer))
            await link.run(stream)
        except Exception as exc:  # a bug in one stream must not end the session (or others)
            log.warning("stream to %s failed: %s", stream.target, exc, exc_info=True)
            stream.reset(ResetReason.INTERNAL, f"internal error ({type(exc).__name__})")
        finally:
            session.close_stream(stream)  # also when cancelled: the slot is counted out
            if link.transport is not None and not link.transport.is_closing():
                link.transport.abort()

    async def _dial_unless_reset(self, stream: TunnelStream, link: LocalLink) -> bool:
        """Dial the stream's target; False if the client reset the stream meanwhile.

        A client that gives up (its connect timeout, a SOCKS client gone) resets the
        stream: the dial stops then, not at ``TARGET_TIMEOUT``. The reset cancels this
        task; that one cancellation is taken back here, any other goes on.
        """
        if stream.is_reset:  # the Reset came in the same read as the Open
            return False
        task = asyncio.current_task()
        assert task is not None
        stream.on_reset = task.cancel
        try:
            await self._dial(stream.target, link)
        except asyncio.CancelledError:
            if stream.on_reset is not None or task.uncancel() > 0:
                raise  # not (only) the reset's cancellation
            return False
        finally:
            stream.on_reset = None
        return True

    async def _dial(self, target: Address, link: LocalLink) -> None:
        dialer: Dialer | None = None
        try:
            async with asyncio.timeout(TARGET_TIMEOUT):
                if self._policy.allows_all:
                    dialer = self._dialer_for(target)
                    await dialer.connect(target, link)
                else:
                    dialer = await self._dial_checked(target, link)
        except TimeoutError:
            raise TargetError("timed out", reason=ResetReason.TIMED_OUT) from None
        except FlywayError:
            raise
        except Exception as exc:  # a plugin's failing dialer must not end the session
            log.debug("dialing %s failed", target, exc_info=True)
            raise TargetError(
                f"dialer failed ({type(exc).__name__}: {exc})", reason=ResetReason.INTERNAL
            ) from exc
        if link.transport is None:
            raise TargetError(f"dialer {dialer} did not connect", reason=ResetReason.INTERNAL)

    async def _dial_checked(self, target: Address, link: LocalLink) -> Dialer:
        """Admit ``target`` by the policy, then connect to its checked addresses in turn."""
        addresses = await self._policy.admit(target)  # TargetError: not allowed, not found
        dialer = self._dialer_for(target)
        for address in addresses:
            try:
                await dialer.connect(address, link)
                break
            except TargetError as exc:
                if address is addresses[-1] or link.transport is not None:
                    raise
                log.debug("%s at %s: %s; trying the next address", target, address, exc)
        return dialer


def _bound(link: LocalLink) -> Address | None:
    """Return the local address of the dialed connection (what the target sees), if known."""
    sockname = None if link.transport is None else link.transport.get_extra_info("sockname")
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = sockname[0], sockname[1]
        if isinstance(host, str) and isinstance(port, int):
            return Address(host, port)
    return None
