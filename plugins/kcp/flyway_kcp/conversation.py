"""One KCP conversation, sans-I/O: siokcp's ikcp core behind a typed face; time is passed in.

siokcp (ikcp in C) does the ARQ; this wrapper fixes how we use it: stream mode, the preset,
the MTU less the seal, and writes split below ikcp's 128-fragment limit. Segments leave
through ``output`` (a plain callable: ikcp's handle to it must not point back at us, since
siokcp's objects take no part in garbage collection, and a cycle through one would leak).
"""

from __future__ import annotations

from collections.abc import Callable

from siokcp import KCPConnection  # type: ignore[import-untyped]

from flyway_kcp.config import KcpConfig

__all__ = ["FRAGMENTS_PER_SEND", "Conversation"]

FRAGMENTS_PER_SEND = 64  # segments per ikcp_send call; ikcp refuses 128 or more
_DEAD = 0xFFFFFFFF  # ikcp's state once a segment was sent dead_link times unanswered
_CLOCK = 0xFFFFFFFF  # ikcp's clock: milliseconds, modulo 2**32


def _no_log(message: str) -> None:
    pass


def _discard(segment: bytes) -> int:
    return 0


class Conversation:
    """A KCP conversation: ``send`` bytes, ``input`` segments, ``update`` by the clock."""

    __slots__ = ("_kcp", "_split", "mss")

    def __init__(
        self, conv: int, config: KcpConfig, output: Callable[[bytes], int], *, overhead: int
    ) -> None:
        kcp = KCPConnection(conv, output, _no_log)
        kcp.stream = 1
        kcp.nodelay(*config.nodelay)
        kcp.wndsize(config.sndwnd, config.rcvwnd)
        if kcp.setmtu(config.mtu - overhead) < 0:
            raise ValueError(f"KCP refuses an MTU of {config.mtu - overhead}")
        self._kcp = kcp
        self.mss: int = kcp.mss
        self._split = self.mss * FRAGMENTS_PER_SEND

    @property
    def waitsnd(self) -> int:
        """Segments queued or in flight, not yet acknowledged."""
        waiting: int = self._kcp.waitsnd()
        return waiting

    @property
    def dead(self) -> bool:
        """True once a segment went unanswered ``dead_link`` times."""
        return bool(self._kcp.state & 0xFFFFFFFF == _DEAD)

    @property
    def timeouts(self) -> int:
        """Segments sent again after their retransmission timeout (ikcp's ``xmit``).

        Fast resends and early retransmits are not in it: the output counts every resend
        (``DatagramOutput.resent_segments``).
        """
        sent: int = self._kcp.xmit
        return sent

    def send(self, data: bytes | memoryview) -> None:
        """Queue ``data`` (any size) for sending; segments go out at the next flush."""
        kcp, split = self._kcp, self._split
        if len(data) <= split:
            kcp.send(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), split):
            kcp.send(view[start : start + split])

    def input(self, segment: bytes | memoryview, now: int) -> bool:
        """Feed one datagram's KCP segments at ``now``; False if ikcp found them malformed.

        ikcp measures round trips against its own clock, so it is set first: left where the
        last flush put it, it would read every round trip short and resend too early.
        """
        kcp = self._kcp
        kcp.current = now & _CLOCK
        ok: bool = kcp.receive_data(segment) >= 0
        return ok

    def recv(self) -> bytes | None:
        """Return the next received bytes in order, or None when there are none yet."""
        data: bytes | None = self._kcp.next_event()
        return data

    def update(self, now: int) -> None:
        """Run the clock to ``now`` (ms): flush when the interval is up, resend what timed out."""
        self._kcp.update(now & _CLOCK)

    def flush(self, now: int) -> None:
        """Send acknowledgements and whatever the window allows, now (after a batch)."""
        kcp = self._kcp
        kcp.current = now & _CLOCK
        kcp.flush()

    def check(self, now: int) -> int:
        """The time (ms) at which ``update`` must next run.

        ikcp's clock is 32 bits of milliseconds; ours is not, so the answer is taken as
        a distance from ``now`` (a session may outlive the 49.7 days to a wrap).
        """
        due: int = self._kcp.check(now & _CLOCK)
        return now + ((due - now) & _CLOCK)

    def release(self) -> None:
        """Stop output: later flushes send nothing (ikcp itself goes with the object)."""
        self._kcp.send_cb = _discard
