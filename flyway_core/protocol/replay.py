"""The replay cache: refuse a Hello whose clock is off or whose salt was already seen.

A Hello is accepted only if its timestamp is within ``window`` seconds of the server's clock,
so a captured Hello can be replayed for at most ``2 * window`` seconds after it was first
seen (it could have arrived up to ``window`` early). Each accepted salt is remembered that
long, which makes a replay inside the acceptance window a cache hit.

Memory is bounded by ``capacity``: when full, the oldest salt is forgotten. That is safe in
practice because only holders of the key can produce an authenticated Hello (the server checks
authentication before it consults the cache), so nobody without the password can fill the
cache to push out a salt they want to replay. Overflow needs more than ``capacity`` genuine
sessions in ``2 * window`` seconds.
"""

from __future__ import annotations

from collections import OrderedDict

from flyway_core.protocol.constants import CLOCK_SKEW

__all__ = ["ReplayCache"]


class ReplayCache:
    """Salts of recently accepted handshakes, each kept for ``2 * window`` seconds."""

    __slots__ = ("_seen", "capacity", "window")

    def __init__(self, window: float = CLOCK_SKEW, capacity: int = 1_000_000) -> None:
        if window <= 0 or capacity <= 0:
            raise ValueError("replay cache window and capacity must be positive")
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # salt -> when it may be forgotten

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, salt: bytes, timestamp: float, now: float) -> str | None:
        """Return why a Hello must be refused, or None after remembering its ``salt``.

        ``timestamp`` is the Hello's clock and ``now`` the server's, both in seconds.
        """
        skew = abs(timestamp - now)
        if skew > self.window:
            return f"clock skew {skew:.0f} s"
        self._expire(now)
        if salt in self._seen:
            return "replayed handshake"
        self._seen[salt] = now + 2 * self.window
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return None

    def _expire(self, now: float) -> None:
        # Insertion order is expiry order while the clock moves forward; if it steps back, a
        # later entry may expire first and merely lingers until those ahead of it go.
        seen = self._seen
        while seen:
            salt = next(iter(seen))
            if seen[salt] >= now:
                return
            del seen[salt]
