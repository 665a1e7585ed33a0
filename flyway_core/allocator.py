"""Keep glibc's malloc from handing a relay's buffers back to the kernel after every chunk.

Theory of operation: each chunk flyway relays passes through a few short-lived
buffers of 64 KiB to 1 MiB (the bytes a socket read, the sealed records, the joined
carrier write and, on a WebSocket client, aiohttp's masked copy of it). They are
freed together, and glibc then trims the top of its heap with ``brk`` whenever more
than ``M_TRIM_THRESHOLD`` lies free there (128 KiB, raised to twice the largest
``mmap``ed chunk freed so far). So every chunk gave those pages back and took them
again on the next one, a page fault per 4 KiB: most of the CPU a WebSocket client
spent sending (the masked copy makes its peak the highest). Pinning both thresholds
above the largest buffer keeps the memory in the process, at most ``TRIM_THRESHOLD``
of it idle. Only the command line calls this: a library user's process keeps its own
allocator settings.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator"]

MMAP_THRESHOLD = 4 << 20  # above any data-path buffer (a WebSocket message is at most 2 MiB)
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # glibc's own ratio when it moves the pair itself
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def tune_allocator() -> bool:
    """Pin glibc's mmap and trim thresholds for this process; return True if set.

    Does nothing (False) on another C library, or when the environment already
    tunes these (``MALLOC_*_`` variables, ``glibc.malloc`` in ``GLIBC_TUNABLES``).
    """
    if not _glibc() or _tuned_by_environment():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Setting either one stops glibc moving them itself: set both, mmap first.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or not glibc
        return False


def _tuned_by_environment() -> bool:
    return any(name in os.environ for name in _ENVIRONMENT) or "glibc.malloc." in os.environ.get(
        "GLIBC_TUNABLES", ""
    )
