"""Where a request target points under the root, or nowhere: nothing outside the root, ever.

The target is decoded once, as nginx does (``%XX``), from the bytes the client
sent; then refused (None, a 404) when it holds a NUL, a backslash, an encoded
slash or backslash (``%2F``, ``%5C``), a ``.`` or ``..`` segment (also encoded,
``%2e%2e``, or encoded twice, ``%252e%252e``), or bytes that are not strict
UTF-8 (overlong forms such as ``%c0%ae`` included). Empty segments merge, as
nginx's ``merge_slashes`` does, so ``//etc/passwd`` is ``etc/passwd`` under the
root. Last, the path is walked from the root one segment at a time (``lstat``):
a segment that is a symlink is resolved and must still lie under the root's own
resolved path, else the target is refused like a missing file. A path without
links costs one ``lstat`` per segment, and the last one is the file's ``stat``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

__all__ = ["Located", "inside", "locate"]

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
_ABSOLUTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?]*")
# a path of letters, digits, "-", "_", "~" and single dots inside names: taken as it is
_PLAIN = re.compile(r"^(?:/[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*)+/?$|^/$")


@dataclass(frozen=True, slots=True)
class Located:
    """A target that stays under the root: the file system path and how it was asked for."""

    path: str  # under the root, its links resolved
    uri: str  # the decoded path, as nginx's $uri (for redirects and listings)
    slash: bool  # the target ended in "/"
    query: str  # the query string, as sent (without "?")
    stat: os.stat_result | None  # what is there (followed), None: nothing


def inside(base: str, path: str) -> tuple[str, os.stat_result] | None:
    """``path`` (under ``base``, a resolved directory) and its ``stat``, with a last segment
    that is a symlink resolved; None if it points outside ``base`` or nothing is there."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            path = os.path.realpath(path)
            if path != base and not path.startswith(base + os.sep):
                return None
            st = os.stat(path)
    except OSError:
        return None
    return path, st


def _decoded(raw: str) -> tuple[str, list[str]] | None:
    """The decoded path and its segments, or None when it must be refused."""
    raw = _ABSOLUTE.sub("", raw, count=1) or "/"  # absolute-form: its path only
    if not raw.startswith("/") or _ENCODED_SEPARATOR.search(raw):
        return None
    decoded = unquote_to_bytes(raw.encode("utf-8", "surrogateescape"))
    if b"\0" in decoded or b"\\" in decoded:
        return None
    try:
        uri = decoded.decode("utf-8")  # strict: overlong forms and surrogates are refused
    except UnicodeDecodeError:
        return None
    segments = [s for s in uri.split("/") if s]
    for segment in segments:
        twice = unquote(segment, errors="strict") if "%" in segment else segment
        if segment in (".", "..") or twice in (".", "..") or "/" in twice or "\\" in twice:
            return None
        if "\0" in twice:
            return None
    return uri, segments


def locate(root: str, target: str) -> Located | None:
    """Map a request target (``request.raw_path``) to a path under ``root``; None: 404.

    ``root`` must be resolved already (``os.path.realpath``).
    """
    raw, _, query = target.partition("?")
    if _PLAIN.match(raw):  # the common case: nothing to decode, no dot segment
        uri = raw
        segments = [s for s in raw.split("/") if s]
    else:
        located = _decoded(raw)
        if located is None:
            return None
        uri, segments = located
    base = path = root
    found: tuple[str, os.stat_result] | None = None
    for segment in segments:
        found = inside(base, os.path.join(path, segment))
        if found is None:
            return Located(os.path.join(path, segment), uri, uri.endswith("/"), query, None)
        path = found[0]
    if found is None:
        found = inside(base, base)
    return Located(path, uri, uri.endswith("/"), query, found[1] if found else None)
