"""Reassembly: bytes that arrive at offsets, in any order and any number of times, in order out.

Both directions of the HTTP POST carrier need it: the server for uplink
slices (concurrent and retried requests), the client for downlink envelopes
(two answers in flight, rewinds). Sans-I/O.
"""

from __future__ import annotations

__all__ = ["Reassembly"]


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
