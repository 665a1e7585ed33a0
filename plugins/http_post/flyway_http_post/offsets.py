"""Offset bookkeeping, both ends of each direction of the HTTP POST carrier.

``Outbox`` is the sending end: bytes kept at their offsets until the peer
acknowledges them, so any of them can be sent again. ``Reassembly`` is the
receiving end: pieces at offsets, in any order and any number of times, in
order out. The client sends uplink and reassembles downlink; the server the
other way round.
"""

from __future__ import annotations

import asyncio
import bisect

__all__ = ["MAX_PIECES", "Outbox", "Reassembly"]

MAX_PIECES = 4096  # early pieces a Reassembly holds at most (small pieces cost more than bytes)


class Outbox:
    """Bytes from offset ``base`` on, kept until acknowledged; writers wait past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.base = 0  # offset of the oldest byte not yet acknowledged
        self._data = bytearray()
        self._limit = limit
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    def __len__(self) -> int:
        """Bytes not yet acknowledged (sent or not)."""
        return len(self._data)

    @property
    def end(self) -> int:
        """The offset after the newest byte."""
        return self.base + len(self._data)

    def append(self, data: bytes) -> None:
        self._data += data

    def slice(self, start: int, end: int) -> bytes:
        """The kept bytes between two offsets (clamped to what is kept)."""
        start = max(start, self.base)
        return bytes(self._data[start - self.base : max(end, start) - self.base])

    def acknowledge(self, offset: int) -> None:
        """Forget every byte before ``offset``: the peer has them."""
        drop = min(max(offset - self.base, 0), len(self._data))
        if drop:
            del self._data[:drop]
            self.base += drop
            if len(self._data) <= self._limit:
                self._room.set()

    async def wait_room(self) -> None:
        """Wait while more than ``limit`` bytes are unacknowledged (or until closed)."""
        while len(self._data) > self._limit and not self._closed:
            self._room.clear()
            await self._room.wait()

    def close(self) -> None:
        """Release every waiter for good."""
        self._closed = True
        self._room.set()


class Reassembly:
    """In-order delivery from offset-tagged pieces; early pieces wait, duplicates are cut.

    Early pieces are kept without overlap (a byte already held or delivered is never
    kept twice), and what they hold in all is capped: ``held`` never exceeds ``cap``
    bytes, nor ``MAX_PIECES`` pieces, however a peer repeats or overlaps its pieces.
    """

    def __init__(self, limit: int, cap: int | None = None) -> None:
        self.next = 0  # every byte before this offset has been delivered
        self._limit = limit  # how far past ``next`` a piece may reach and still be kept
        self._cap = limit if cap is None else cap  # early bytes held at most, in all
        self._starts: list[int] = []  # sorted offsets of the early pieces (no overlaps)
        self._early: dict[int, bytes] = {}
        self.held = 0  # bytes in the early pieces

    def add(self, offset: int, data: bytes) -> list[bytes] | None:
        """Return the bytes this piece lets through, in order (often none).

        None means the piece was not kept: it reaches more than ``limit`` bytes
        ahead of the gap, or keeping it would hold more than the cap. The sender
        has to send it again later.
        """
        end = offset + len(data)
        if not data or end <= self.next:
            return []  # a duplicate: a retried request or a resent envelope that had arrived
        if end - self.next > self._limit:
            return None
        if offset > self.next:
            return self._keep(offset, data)
        out = [data[self.next - offset :]]
        self.next = end
        while self._starts and self._starts[0] <= self.next:
            start = self._starts.pop(0)
            chunk = self._early.pop(start)
            self.held -= len(chunk)
            if start + len(chunk) > self.next:
                out.append(chunk[self.next - start :])
                self.next = start + len(chunk)
        return out

    def _keep(self, offset: int, data: bytes) -> list[bytes] | None:
        """Hold the parts of an early piece not held yet; None (nothing kept) past the cap."""
        end = offset + len(data)
        new: list[tuple[int, int]] = []  # the gaps between held pieces that this piece fills
        position = offset
        index = bisect.bisect_right(self._starts, offset) - 1
        index = max(index, 0)
        while position < end and index <= len(self._starts):
            if index == len(self._starts):
                new.append((position, end))
                break
            start = self._starts[index]
            stop = start + len(self._early[start])
            if stop <= position:
                index += 1
                continue
            if start > position:
                new.append((position, min(start, end)))
            position = max(position, stop)
            index += 1
        if not new:
            return []  # every byte of it is held already
        size = sum(b - a for a, b in new)
        if self.held + size > self._cap or len(self._starts) + len(new) > MAX_PIECES:
            return None
        for a, b in new:
            bisect.insort(self._starts, a)
            self._early[a] = data[a - offset : b - offset]
        self.held += size
        return []

    @property
    def waiting(self) -> int:
        """Bytes held until a gap before them fills."""
        return self.held
