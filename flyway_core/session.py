"""Run one protocol connection over one carrier with asyncio: read, write, keep alive.

Theory of operation: the reader feeds carrier bytes to the protocol and routes
its events to streams, whose local sides write them to their sockets. Whatever
the protocol queues (Data from a link's ``data_received``, acknowledgements,
pongs) goes out through ``send_soon``: at once, without a task switch, when the
carrier's ``send_nowait`` takes it; otherwise the writer task wakes and sends
everything queued in one carrier write, so small frames coalesce while the
carrier is busy. The timer runs keepalives and the idle timeout, unless the
carrier watches liveness itself (``Carrier.keepalive`` False).

One class serves both roles. A client opens streams (``open_stream``) and runs
each in its listener's task; a server hands each stream the client opened to
``on_stream`` (``flyway_core.upstream``), which may run it in the session's task
group (``spawn``). When the session ends every stream is failed, and a protocol
error first sends the peer a Close saying why.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

from flyway_core.errors import CarrierError, RemoteProtocolError
from flyway_core.events import Event, StreamDown, StreamUp
from flyway_core.flow import DATAGRAM_BUDGET, TunnelFlow
from flyway_core.protocol import (
    CloseReason,
    CreditAvailable,
    DatagramReceived,
    DataReceived,
    Feature,
    FlowOpened,
    PongReceived,
    ResetReason,
    SessionClosed,
    SessionStarted,
    StreamAccepted,
    StreamEnded,
    StreamOpened,
    StreamReset,
    max_datagram,
)
from flyway_core.stats import Stats
from flyway_core.stream import TunnelStream

if TYPE_CHECKING:
    from flyway_core.address import Address
    from flyway_core.interfaces import Carrier
    from flyway_core.protocol import Connection

__all__ = ["Session", "Stats"]

log = logging.getLogger(__name__)
CLOSE_FLUSH_SECONDS = 1.0  # how long a goodbye (Close) may take to leave
QUEUE_LIMIT = 4 << 20  # stream bytes a session holds for a slow carrier before the
# sockets feeding it pause; they resume once half of it has gone out
_session_ids = itertools.count(1)


class _SessionOver(Exception):
    """Raised inside the session's task group to end it; carries the reason."""


class Session:
    """One protocol connection over one carrier, and the streams riding on it."""

    def __init__(
        self,
        connection: Connection,
        carrier: Carrier,
        *,
        peer: str,
        emit: Callable[[Event], None],
        stats: Stats,
        on_stream: Callable[[Session, TunnelStream], None] | None = None,
        on_flow: Callable[[Session, TunnelFlow], None] | None = None,
    ) -> None:
        self.id = f"s{next(_session_ids)}"
        self.peer = peer
        self.started = asyncio.Event()
        self.error: str | None = None
        self.closed_by: CloseReason | None = None  # the reason of the peer's Close, if any
        self.rtt: float | None = None
        self._conn = connection
        self._carrier = carrier
        self._emit = emit
        self.stats = stats
        self._on_stream = on_stream
        self._on_flow = on_flow
        self._streams: dict[int, TunnelStream] = {}
        self._flows: dict[int, TunnelFlow] = {}
        self._wake = asyncio.Event()
        self._sending = False
        self._backlog = b""  # taken from the protocol, refused by send_nowait: goes first
        self._in_flight = 0  # bytes handed to carrier.send() that it has not finished with
        self._gated = False  # a stream was refused credit because the queue was full
        self._send_nowait = carrier.send_nowait
        self._tasks: asyncio.TaskGroup | None = None
        self._done = False
        if not carrier.keepalive:  # the carrier notices a dead peer itself: stay quiet
            connection.carrier_watches_liveness()

    @property
    def alive(self) -> bool:
        """False once the session is over or closing (no new stream may open on it)."""
        return not self._done and not self._conn.closed

    @property
    def datagram_flows(self) -> bool:
        """True when both ends speak datagram flows (known once the session started)."""
        return bool(self._conn.features & Feature.DATAGRAM_FLOWS)

    @property
    def open_flows(self) -> int:
        """How many datagram flows of this session are open."""
        return len(self._flows)

    @property
    def open_streams(self) -> int:
        """How many streams and flows of this session are open (being dialed, or relaying)."""
        return len(self._streams) + len(self._flows)

    # --- protocol operations for streams ------------------------------------------------

    def open_stream(self, target: Address, origin: str) -> TunnelStream:
        """Open a client stream now; data may follow at once (no round trip)."""
        stream_id = self._conn.open_stream(target)
        stream = TunnelStream(self, stream_id, target, origin)
        self._streams[stream_id] = stream
        self.stats.streams += 1
        self._wake.set()
        self._emit(StreamUp(self.id, stream_id, target, origin))
        return stream

    def close_stream(self, stream: TunnelStream) -> None:
        """Forget a stream whose relay ended, resetting it if it is still open."""
        if self._streams.pop(stream.stream_id, None) is None:
            return
        if not self._done and self._conn.has_stream(stream.stream_id):
            stream.reset(ResetReason.CANCELLED)
        self.stats.streams -= 1
        self._emit(
            StreamDown(
                self.id,
                stream.stream_id,
                stream.target,
                stream.sent,
                stream.received,
                time.monotonic() - stream.started,
                stream.error,
            )
        )

    def open_flow(self, origin: str) -> TunnelFlow:
        """Open a datagram flow now; LocalProtocolError if the server speaks no flows."""
        stream_id = self._conn.open_flow()
        flow = TunnelFlow(self, stream_id, origin)
        self._flows[stream_id] = flow
        self.stats.streams += 1
        self._wake.set()
        return flow

    def close_flow(self, flow: TunnelFlow) -> None:
        """Forget a flow whose user is done with it, resetting it if it is still open."""
        if self._flows.pop(flow.stream_id, None) is None:
            return
        flow.close()
        # A flow the peer ended (End) is over for us but still open in the protocol: forget it.
        self.reset_stream(flow.stream_id, ResetReason.CANCELLED, "flow over")
        self.stats.streams -= 1
        log.debug(
            "%s flow %d over: %d datagrams sent, %d received, %d dropped",
            self.id,
            flow.stream_id,
            flow.sent,
            flow.received,
            flow.dropped,
        )

    def send_datagram(self, stream_id: int, address: Address, data: bytes) -> bool:
        """Queue one datagram of a flow; False (dropped) if it is over the datagram budget,
        too large for one frame, or the flow or session is gone.

        Datagrams never wait: with ``DATAGRAM_BUDGET`` bytes of them already queued for
        a carrier that is behind, more are dropped, and stream credit is not touched.
        """
        if (
            self._done
            or not self._conn.has_stream(stream_id)
            or len(data) > max_datagram(address)
            or self._conn.queued_datagrams + len(data) > DATAGRAM_BUDGET
        ):
            return False
        self._conn.send_datagram(stream_id, address, data)
        self.send_soon()
        return True

    def send_window(self, stream_id: int) -> int:
        """Bytes the stream may send now: its credit, within the session's queue limit."""
        if self._done:
            return 0
        room = QUEUE_LIMIT - self.queued
        credit = self._conn.send_window(stream_id)
        if room <= credit:  # the queue, not the peer, limits this stream: _ungate wakes it
            self._gated = True
        return max(0, min(credit, room))

    @property
    def queued(self) -> int:
        """Stream bytes waiting for the carrier: queued, backlogged, or in a send()."""
        return self._conn.queued_data + len(self._backlog) + self._in_flight

    def _ungate(self) -> None:
        """The queue drained below half its limit: let the paused streams send again."""
        if self._gated and self.queued < QUEUE_LIMIT // 2:
            self._gated = False
            for stream in list(self._streams.values()):
                stream.feed_credit()

    def send_data(self, stream_id: int, data: bytes) -> None:
        """Queue data; the caller then calls ``send_soon()``."""
        self._conn.send_data(stream_id, data)

    def end_stream(self, stream_id: int) -> None:
        if not self._done and self._conn.has_stream(stream_id):
            self._conn.end_stream(stream_id)
            self._wake.set()

    def reset_stream(self, stream_id: int, reason: int, message: str) -> None:
        if not self._done:
            self._conn.reset_stream(stream_id, ResetReason(reason), message)
            self._wake.set()

    def acknowledge(self, stream_id: int, n: int) -> None:
        if not self._done and self._conn.has_stream(stream_id):
            self._conn.acknowledge(stream_id, n)
            self.send_soon()  # a Window frame may be due (every quarter window)

    def buffered(self, stream_id: int) -> int:
        """Bytes of ``stream_id`` received and not yet acknowledged (at most one window)."""
        return self._conn.buffered(stream_id)

    def accept_stream(self, stream: TunnelStream, bound: Address | None = None) -> None:
        """Server side: tell the client its stream reached the target.

        ``bound`` (our local address toward the target) reaches the client when the
        session uses ``Feature.BOUND_ADDRESS``.
        """
        if not self._done and self._conn.has_stream(stream.stream_id):
            self._conn.accept_stream(stream.stream_id, bound)
            self._wake.set()

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` in the session's task group: it is cancelled when the session ends."""
        if self._tasks is None:
            coro.close()
            raise RuntimeError("the session is not running")
        self._tasks.create_task(coro)

    # --- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until the carrier closes, the peer closes, or the session times out."""
        self.stats.sessions += 1
        self._wake.set()  # what the handshake queued (the server's Welcome) goes out now
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._write_loop())
                tasks.create_task(self._timer_loop())
                # Read in the group's body, not a task: Python 3.11's TaskGroup leaves a
                # stale cancel request on a parent that a failing child interrupts in
                # __aexit__, which would read below as an outside cancellation.
                await self._read_loop()
        except* _SessionOver as group:
            self.error = self.error or _first_message(group) or None
        except* RemoteProtocolError as group:
            self.error = _first_message(group)
            await self._say_goodbye()  # the protocol queued a Close saying why
        except* (CarrierError, ConnectionError, OSError) as group:
            self.error = _first_message(group)
        finally:
            self._done = True
            self.stats.sessions -= 1
            for stream in list(self._streams.values()):
                stream.feed_reset(ResetReason.INTERNAL, self.error or "session closed")
                self.close_stream(stream)  # counted out even if its task never ran
            for flow in list(self._flows.values()):
                flow.feed_reset(ResetReason.INTERNAL, self.error or "session closed")
                self.close_flow(flow)
            await self._carrier.close()
        # A task group cancelled while a child failed raises the failure, not the
        # cancellation (Python 3.11): keep the cancellation, or the caller never stops.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    async def close(self, message: str = "") -> None:
        """Tell the peer the session is over and stop."""
        if not self._done:
            self._conn.close()
            await self._say_goodbye()
        self._done = True
        await self._carrier.close()

    async def _say_goodbye(self) -> None:
        """Send what is queued (a Close, at least) if the carrier takes it in time."""
        data, self._backlog = self._backlog + self._conn.data_to_send(), b""
        if data:
            try:
                async with asyncio.timeout(CLOSE_FLUSH_SECONDS):
                    await self._carrier.send(data)
            except (TimeoutError, CarrierError, ConnectionError, OSError):
                pass

    async def _read_loop(self) -> None:
        while True:
            data = await self._carrier.receive()
            if not data:
                raise _SessionOver(
                    "the peer closed the connection"
                    if self.started.is_set()
                    else "the connection closed before the server answered"
                )
            for event in self._conn.receive_data(data, time.time()):
                self._dispatch(event)
            self.send_soon()

    def send_soon(self) -> None:
        """Send what the protocol queued: now if the carrier takes it without waiting.

        Otherwise (no ``send_nowait``, a send under way, or a carrier that is
        full) the writer task sends it, after anything queued before.
        """
        if self._done or not self._conn.wants_to_send:
            return
        if self._sending or self._backlog:
            self._wake.set()
            return
        data = self._conn.data_to_send()
        if not self._send_nowait(data):
            self._backlog = data
            self._wake.set()
        elif self._gated:
            self._ungate()

    async def _send_queued(self) -> None:
        self._sending = True
        try:
            while data := self._backlog + self._conn.data_to_send():
                self._backlog = b""
                self._in_flight = len(data)
                await self._carrier.send(data)
                self._in_flight = 0
                if self._gated:
                    self._ungate()
        finally:
            self._sending = False
            self._in_flight = 0

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._sending:  # else the sender in flight takes these bytes too
                await self._send_queued()

    async def _timer_loop(self) -> None:
        while True:
            deadline = self._conn.next_deadline()
            # No deadline (closed, or a carrier that checks liveness itself): just idle.
            if deadline is None or math.isinf(deadline):
                delay = 3600.0
            else:
                delay = max(0.0, deadline - time.time())
            await asyncio.sleep(delay)
            for event in self._conn.tick(time.time()):
                self._dispatch(event)
            self._wake.set()

    def _dispatch(self, event: object) -> None:
        match event:
            case DataReceived(stream_id, data):
                if stream := self._streams.get(stream_id):
                    stream.feed(data)
            case CreditAvailable(stream_id):
                if stream := self._streams.get(stream_id):
                    stream.feed_credit()
            case DatagramReceived(stream_id, address, data):
                if flow := self._flows.get(stream_id):
                    flow.feed_datagram(address, data)
            case StreamEnded(stream_id):
                if member := self._streams.get(stream_id) or self._flows.get(stream_id):
                    member.feed_eof()
            case StreamReset(stream_id, reason, message):
                if member := self._streams.get(stream_id) or self._flows.get(stream_id):
                    member.feed_reset(reason, message)
            case StreamAccepted(stream_id, bound):
                if member := self._streams.get(stream_id) or self._flows.get(stream_id):
                    member.feed_accept(bound)
            case StreamOpened(stream_id, target, data):
                self._opened(stream_id, target, data)
            case FlowOpened(stream_id):
                self._flow_opened(stream_id)
            case SessionStarted():
                self.started.set()
            case PongReceived(rtt):
                self.rtt = rtt
            case SessionClosed(reason, message):
                self.closed_by = reason
                raise _SessionOver(message or "the peer closed the session")

    def _opened(self, stream_id: int, target: Address, data: bytes) -> None:
        stream = TunnelStream(self, stream_id, target, self.peer)
        self._streams[stream_id] = stream
        self.stats.streams += 1
        if data:
            stream.feed(data)
        if self._on_stream is None:
            stream.reset(ResetReason.NOT_ALLOWED, "this side does not accept streams")
            self.close_stream(stream)
            return
        self._on_stream(self, stream)

    def _flow_opened(self, stream_id: int) -> None:
        flow = TunnelFlow(self, stream_id, self.peer)
        self._flows[stream_id] = flow
        self.stats.streams += 1
        if self._on_flow is None:
            self._conn.reset_stream(stream_id, ResetReason.NOT_ALLOWED, "this side takes no flows")
            self.close_flow(flow)
            return
        self._on_flow(self, flow)

    def accept_flow(self, flow: TunnelFlow) -> None:
        """Server side: tell the client its flow is ready for datagrams."""
        if not self._done and self._conn.has_stream(flow.stream_id):
            self._conn.accept_stream(flow.stream_id)
            self._wake.set()


def _first_message(group: BaseExceptionGroup[BaseException]) -> str:
    exc = group.exceptions[0]
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__
