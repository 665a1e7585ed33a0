"""Sizes and timings both ends of the HTTP POST carrier work to (from the plugin's options)."""

from __future__ import annotations

__all__ = ["MAX_BODY", "MIN_BODY", "PROBE_SECONDS", "PROBE_WAIT", "Limits"]

PROBE_SECONDS = 0.3  # a PROBE response: one envelope at once, the next this much later...
PROBE_WAIT = 2.0  # ...or once the client said it has the first, but never later than this
MIN_BODY = 4096  # the smallest --http-max-body, and the floor a client shrinks its bodies to
MAX_BODY = 16 << 20  # the largest --http-max-body
DEFAULT_BODY = 1 << 20  # nginx's stock client_max_body_size 1m: whole bodies, envelope included


class Limits:
    """Sizes and timeouts shared by client and server (from the plugin's options).

    ``max_body`` is the largest body, envelope included, that either end sends.
    """

    def __init__(self, *, max_body: int = DEFAULT_BODY, poll_timeout: float = 30.0) -> None:
        self.max_body = max_body
        self.poll_timeout = poll_timeout

    @property
    def dead_after(self) -> float:
        """Silence after which the other side counts as gone."""
        return self.poll_timeout + 15.0
