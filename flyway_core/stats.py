"""Running totals of one process's tunnel traffic, shared by its sessions and streams."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    """Running totals across every session of the process."""

    sent: int = 0
    received: int = 0
    streams: int = 0
    sessions: int = 0
