"""Freshness: each request of a session is taken once, in any order within a window.

Theory of operation. The client numbers its requests 1, 2, 3, ... as it seals them
(the OPEN is 0; a retry is a new request with a new number). Up to four SENDs, two
POLLs, a probe and an acknowledgement may be in flight at once and may arrive in
any order, so "strictly increasing" is checked as IPsec and DTLS check their
sequence numbers (RFC 4303 section 3.4.3): the server keeps the highest number
seen and a bitmap of the ``WINDOW`` numbers below it. A number above the highest is
new; one inside the window is new unless its bit is set; one below the window, or
seen, is a replay. A legitimate request is refused only when more than ``WINDOW``
later requests of its session overtook it on the way, and then its sender just
retries it under a new number. PINGs touch no session: they carry the client's
clock instead and are refused outside the handshake's clock skew or when their
salt was seen (``flyway_core.protocol.ReplayCache``).
"""

from __future__ import annotations

__all__ = ["WINDOW", "RequestWindow"]

WINDOW = 1 << 16  # numbers below the highest seen that are still told apart (8 KiB a session)
_MASK = (1 << WINDOW) - 1


class RequestWindow:
    """Which request numbers of one session have been taken (the OPEN's 0 is)."""

    __slots__ = ("_seen", "top")

    def __init__(self) -> None:
        self.top = 0  # the highest number taken
        self._seen = 1  # bit i: number top - i was taken

    def take(self, number: int) -> bool:
        """Take ``number`` if it is new (True); False for a replay or one too old to tell."""
        if number > self.top:
            shift = number - self.top
            self._seen = ((self._seen << shift) & _MASK | 1) if shift < WINDOW else 1
            self.top = number
            return True
        age = self.top - number
        if age >= WINDOW or self._seen >> age & 1:
            return False
        self._seen |= 1 << age
        return True
