"""Sizes and timings both ends of the HTTP POST carrier work to (from the plugin's options)."""

from __future__ import annotations

__all__ = ["PROBE_SECONDS", "Limits"]

PROBE_SECONDS = 0.3  # a PROBE response: one envelope at once, the next this much later


class Limits:
    """Sizes and timeouts shared by client and server (from the plugin's options)."""

    def __init__(self, *, max_body: int = 1 << 20, poll_timeout: float = 30.0) -> None:
        self.max_body = max_body
        self.poll_timeout = poll_timeout

    @property
    def dead_after(self) -> float:
        """Silence after which the other side counts as gone."""
        return self.poll_timeout + 15.0
