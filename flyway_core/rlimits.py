"""Open files: raise the soft limit to the hard one, and say how many streams that allows.

Each stream the server relays holds one socket to its target, and every client
connection one more. With the common soft limit of 1024, a server ran out of
descriptors at 21,000 streams' worth of demand and stopped answering anything.
``raise_open_files`` lifts the soft limit as far as the hard one allows; the
server then takes at most ``stream_budget()`` streams in all, keeping
``HEADROOM`` descriptors for the front door to go on answering.
"""

from __future__ import annotations

import contextlib

try:
    import resource
except ImportError:  # pragma: no cover - not on POSIX
    resource = None  # type: ignore[assignment]

__all__ = ["HEADROOM", "open_files_limit", "raise_open_files", "stream_budget"]

HEADROOM = 256  # descriptors kept for the front door, logs, and the process itself


def raise_open_files() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now."""
    if resource is None:  # pragma: no cover
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = hard == resource.RLIM_INFINITY
    targets = [1 << 20, 1 << 16, 10240, 4096] if infinite else [hard]
    for target in targets:  # "unlimited" still has a per-process ceiling (macOS): step down
        if target <= soft:
            break
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            break
    return open_files_limit()


def open_files_limit() -> int:
    """The soft limit on open files (0 where unknown)."""
    if resource is None:  # pragma: no cover
        return 0
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stream_budget() -> int | None:
    """How many streams the process may relay at once and still answer (None: unknown)."""
    limit = open_files_limit()
    return max(limit - min(HEADROOM, limit // 4), 16) if limit else None
