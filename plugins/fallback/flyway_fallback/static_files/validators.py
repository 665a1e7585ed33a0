"""What the client has already and which part it wants: ETag, Last-Modified, 304, Range.

As nginx decides them: the ETag is ``"mtime-size"`` in hex; ``If-Unmodified-Since``
and ``If-Match`` (strong comparison) must hold, else 412; ``If-None-Match`` (weak
comparison, ``*``) and ``If-Modified-Since`` (an exact match, nginx's default) must
both say the client has it for a 304; ``Range`` is ``bytes=`` with ranges in the
request's order, an ``If-Range`` that does not match the ETag or date sends the
whole file, and a ``Range`` nginx would not parse is ignored.
"""

from __future__ import annotations

import functools
import os
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "Unsatisfiable",
    "byte_ranges",
    "etag_of",
    "http_date",
    "not_modified",
    "precondition_failed",
]


def etag_of(st: os.stat_result) -> str:
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


def precondition_failed(request: web.Request, etag: str, mtime: int) -> bool:
    """nginx's 412: an ``If-Unmodified-Since`` before the file's time (or unreadable), or
    an ``If-Match`` that names neither ``*`` nor the ETag (a strong comparison)."""
    since = request.headers.get("If-Unmodified-Since")
    if since is not None:
        try:
            if int(parsedate_to_datetime(since).timestamp()) < mtime:
                return True
        except (TypeError, ValueError):
            return True
    match = request.headers.get("If-Match")
    if match is None or match.strip() == "*":
        return False
    return etag not in [t.strip() for t in match.split(",")]


def not_modified(request: web.Request, etag: str, mtime: int) -> bool:
    """nginx's not-modified filter: every condition given must say the client has it."""
    since = request.headers.get("If-Modified-Since")
    match = request.headers.get("If-None-Match")
    if since is None and match is None:
        return False
    if since is not None:
        try:
            if int(parsedate_to_datetime(since).timestamp()) != mtime:
                return False
        except (TypeError, ValueError):
            return False
    if match is not None:
        tags = [t.strip().removeprefix("W/") for t in match.split(",")]
        if "*" not in tags and etag not in tags:
            return False
    return True


def byte_ranges(
    request: web.Request, size: int, etag: str, mtime: int
) -> list[tuple[int, int]] | None:
    """The satisfiable ranges, as (start, end inclusive), in the request's order.

    None: send it whole (no ``Range``, one not of ``bytes``, an ``If-Range`` that does
    not match). Raises ``Unsatisfiable`` when no range fits the file, and for a
    ``bytes=`` range nginx cannot parse (``bytes=abc``, a trailing comma), as nginx.
    """
    header = request.headers.get("Range", "")
    if len(header) < 7 or header[:6].lower() != "bytes=":
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != etag and if_range != http_date(mtime):
        return None
    ranges = []
    for part in header[6:].split(","):
        first, dash, last = part.strip().partition("-")
        if not dash or not (first.isdigit() or (not first and last.isdigit())):
            raise Unsatisfiable
        if last and not last.isdigit():
            raise Unsatisfiable
        if not first:
            start, end = max(size - int(last), 0), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if start > end and start < size:
                return None
        if start < size:
            ranges.append((start, end))
    if not ranges:
        raise Unsatisfiable
    return ranges


class Unsatisfiable(Exception):
    """No range of the request's ``Range`` lies within the file."""


@functools.lru_cache(maxsize=1024)
def http_date(when: int) -> str:
    return formatdate(when, usegmt=True)
