"""Offset bookkeeping, both ends of each direction of the HTTP POST carrier.

``Outbox`` is the sending end: bytes kept at their offsets until the peer
acknowledges them, so any of them can be sent again. ``Reassembly`` is the
receiving end: pieces at offsets, in any order and any number of times, in
order out. The client sends uplink and reassembles downlink; the server the
other way round.
"""

from __future__ import annotations

import asyncio

__all__ = ["Outbox", "Reassembly"]


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
    """In-order delivery from offset-tagged pieces; early pieces wait, duplicates are cut."""

    def __init__(self, limit: int) -> None:
        self.next = 0  # every byte before this offset has been delivered
        self._limit = limit  # how far past ``next`` a piece may reach and still be kept
        self._early: dict[int, bytes] = {}

    def add(self, offset: int, data: bytes) -> list[bytes] | None:
        """Return the bytes this piece lets through, in order (often none).

        None means the piece reaches more than ``limit`` bytes ahead of the gap
        and was not kept: the sender has to send it again later.
        """
        end = offset + len(data)
        if not data or end <= self.next:
            return []  # a duplicate: a retried request or a resent envelope that had arrived
        if end - self.next > self._limit:
            return None
        if offset > self.next:
            self._early[offset] = data
            return []
        out = [data[self.next - offset :]]
        self.next = end
        while self._early:
            ready = sorted(o for o in self._early if o <= self.next)
            if not ready:
                break
            for o in ready:
                chunk = self._early.pop(o)
                if o + len(chunk) > self.next:
                    out.append(chunk[self.next - o :])
                    self.next = o + len(chunk)
        return out

    @property
    def waiting(self) -> int:
        """Bytes held until a gap before them fills."""
        return sum(map(len, self._early.values()))
