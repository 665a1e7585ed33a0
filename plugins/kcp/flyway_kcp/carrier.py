"""The asyncio driver of one KCP conversation, and the Carrier the session runs over.

Theory of operation. Nothing here busy-ticks: three things move a conversation.

- A batch of datagrams arrives (``datagram_in`` for each, then ``batch_done`` once): the
  segments go into ikcp, one flush sends the acknowledgements (and any data the acks made
  room for), and what arrived in order moves to our inbound queue for ``receive``.
- The session writes (``send_nowait`` / ``send``): the bytes go into ikcp and one flush is
  scheduled with ``call_soon``, so a burst of records costs one flush.
- The clock: a timer at ``check()``'s time runs ``update``, which resends what timed out.

Writers are gated on ``waitsnd`` against the send window, as kcp-go does (ikcp itself never
refuses a write, so without the gate its queue would grow without bound): a write goes in only
as far as ``(sndwnd - waitsnd) * mss`` bytes reach, ``send_nowait`` refuses one that does not
fit (so the session's writer waits, and the streams' frames queued meanwhile interleave), and
``send`` feeds a large one in gated chunks. ikcp then holds at most ``sndwnd`` segments (one
more when stream mode tops up a half-full last one). We take only ``rcvwnd`` segments' worth
of received bytes ahead of ``receive``: past that ikcp's receive window fills and the peer is
told to stop. Memory is bounded by the two windows.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from flyway_core import CarrierClosed
from flyway_core.interfaces import Carrier
from flyway_core.protocol.crypto import DATAGRAM_OVERHEAD, DatagramOpener
from flyway_kcp.config import KcpConfig
from flyway_kcp.conversation import Conversation
from flyway_kcp.fec import FEC_HEADER, FecDecoder
from flyway_kcp.output import DatagramOutput

__all__ = ["KcpCarrier"]


class KcpCarrier(Carrier):
    """A reliable byte pipe over one KCP conversation; the endpoint feeds it datagrams."""

    keepalive = True  # the session pings and times out: that is the dead-peer detection

    def __init__(
        self,
        conv: int,
        config: KcpConfig,
        output: DatagramOutput,
        opener: DatagramOpener | None,
        *,
        on_close: Callable[[], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._epoch = self._loop.time()
        k, m = config.fec
        self._fec = FecDecoder(k, m) if k else None
        overhead = DATAGRAM_OVERHEAD + (FEC_HEADER if k else 0)
        self._conversation = Conversation(conv, config, output, overhead=overhead)
        self.output = output
        self.opener = opener  # the server's, for its endpoint; the client's endpoint keeps its own
        self._sndwnd = config.sndwnd
        self._resume = max(1, config.sndwnd // 8) * self._conversation.mss  # a waiting send's
        self._inbound: list[bytes] = []
        self._inbound_size = 0
        self._inbound_cap = config.rcvwnd * self._conversation.mss
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._flush_due = False
        self._on_close = on_close
        self.closed = False
        self.heard = asyncio.Event()  # set by the first authenticated datagram
        self.received = 0  # datagrams taken in
        self._tick()

    @property
    def recovered(self) -> int:
        """Datagrams FEC rebuilt (0 without FEC)."""
        return 0 if self._fec is None else self._fec.recovered

    @property
    def retransmits(self) -> int:
        """Data segments sent again, for whatever reason (timeouts and fast resends)."""
        return self.output.resent_segments

    @property
    def timeouts(self) -> int:
        """Segments ikcp sent again after their retransmission timeout (a part of those)."""
        return self._conversation.timeouts

    def _now(self) -> int:
        return int((self._loop.time() - self._epoch) * 1000)

    # --- the endpoint's side ------------------------------------------------------------

    def datagram_in(self, segments: bytes) -> None:
        """Take one authenticated datagram's KCP segments (call ``batch_done`` after a batch)."""
        if self.closed:
            return
        self.received += 1
        self.heard.set()
        if self._fec is None:
            self._conversation.input(segments, self._now())
            return
        now = self._now()
        for payload in self._fec.payloads(segments):
            self._conversation.input(payload, now)

    def batch_done(self) -> None:
        """Flush once after a batch of datagrams, and pass on what arrived."""
        if not self.closed:
            self._flush()

    # --- the clock and the flush --------------------------------------------------------

    def _flush(self) -> None:
        now = self._now()
        self._conversation.flush(now)
        self._settle(now)

    def _tick(self) -> None:
        self._timer, self._timer_at = None, math.inf
        if self.closed:
            return
        now = self._now()
        self._conversation.update(now)
        if self._conversation.dead:
            self.shutdown()
            return
        self._settle(now)

    def _settle(self, now: int) -> None:
        """After ikcp ran: move received bytes on, open or close the gate, set the timer."""
        self._drain()
        if self._room() >= self._resume:
            self._writable.set()
        else:
            self._writable.clear()
        at = self._epoch + self._conversation.check(now) / 1000
        if at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(at, self._tick)
            self._timer_at = at

    def _drain(self) -> None:
        conversation, inbound = self._conversation, self._inbound
        while self._inbound_size < self._inbound_cap:
            data = conversation.recv()
            if data is None:
                break
            inbound.append(data)
            self._inbound_size += len(data)
        if inbound:
            self._readable.set()

    def _flush_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_due = False
        if not self.closed:
            self._flush()

    # --- the Carrier interface ----------------------------------------------------------

    def _room(self) -> int:
        """Bytes the send window has room for now."""
        conversation = self._conversation
        return max(0, self._sndwnd - conversation.waitsnd) * conversation.mss

    def send_nowait(self, data: bytes) -> bool:
        """Queue ``data`` at once if it all fits the send window (else ``send`` feeds it)."""
        if self.closed or len(data) > self._room():
            return False
        self._conversation.send(data)
        self._flush_soon()
        return True

    async def send(self, data: bytes) -> None:
        """Queue ``data``, as much at a time as the send window has room for."""
        view, start = memoryview(data), 0
        while True:
            room = 0 if self.closed else self._room()
            while not self.closed and room < min(self._resume, len(data) - start):
                self._writable.clear()
                await self._writable.wait()
                room = self._room()
            if self.closed:
                raise CarrierClosed("the KCP conversation is closed")
            end = start + room
            self._conversation.send(data if start == 0 and end >= len(data) else view[start:end])
            self._flush_soon()
            if end >= len(data):
                return
            start = end

    async def receive(self) -> bytes:
        while not self._inbound:
            if self.closed:
                return b""
            self._readable.clear()
            await self._readable.wait()
        inbound = self._inbound
        data = inbound[0] if len(inbound) == 1 else b"".join(inbound)
        inbound.clear()
        was_full = self._inbound_size >= self._inbound_cap
        self._inbound_size = 0
        if was_full and not self.closed:  # ikcp may hold more, its window shut: reopen it
            self._drain()
            self._flush_soon()
        return data

    def shutdown(self) -> None:
        """Close now: send what is queued once, stop the clock, wake every waiter."""
        if self.closed:
            return
        self._conversation.flush(self._now())
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._conversation.release()
        self._readable.set()
        self._writable.set()
        self._on_close()

    async def close(self) -> None:
        self.shutdown()
