"""Where a request target points under the root, or nowhere: nothing outside the root, ever.

The target is read as nginx's ``ngx_http_parse_complex_uri`` reads it: ``%XX``
decoded once, from the bytes the client sent (a ``%`` not followed by two hex
digits, ``%u002e`` included, is invalid: ``InvalidTarget``, nginx's 400), a
``#`` ends it, a NUL (``%00``) is invalid; then ``/`` (``%2F`` too) separates
segments, empty ones merge (``merge_slashes``: ``//etc/passwd`` is ``etc/passwd``
under the root), ``.`` segments go and ``..`` takes the one before it off, and
one that would climb above the root is invalid. The path that is left is refused
(None, a 404) when it holds a backslash or bytes that are not strict UTF-8
(overlong forms such as ``%c0%ae`` included). Last, the path is walked from the
root one segment at a time (``lstat``): a segment that is a symlink is resolved
and must still lie under the root's own resolved path, else the target is refused
like a missing file. A path without links costs one ``lstat`` per segment, and the
last one is the file's ``stat``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

__all__ = ["InvalidTarget", "Located", "inside", "locate"]

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


class InvalidTarget(ValueError):
    """A target nginx answers with 400 (and a close): a bad ``%`` escape, a NUL, too many ``..``."""


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _unescaped(raw: bytes) -> bytes:
    """``raw`` with its ``%XX`` decoded, up to a ``#``; ``InvalidTarget`` for a bad escape."""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # "%"
            pair = raw[i + 1 : i + 3]
            if len(pair) < 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise InvalidTarget(raw)
            out.append(int(pair, 16))
            i += 3
            continue
        if byte == 0x23:  # "#": nginx ends the path there
            break
        out.append(byte)
        i += 1
    if 0 in out:
        raise InvalidTarget(raw)
    return bytes(out)


def _decoded(raw: str) -> tuple[str, list[str]] | None:
    """The decoded, normalised path and its segments, or None when it must be refused."""
    raw = _ABSOLUTE.sub("", raw, count=1) or "/"  # absolute-form: its path only
    if not raw.startswith("/"):
        return None
    parts = _unescaped(raw.encode("utf-8", "surrogateescape")).split(b"/")
    segments: list[bytes] = []
    for part in parts:
        if part == b"..":
            if not segments:
                raise InvalidTarget(raw)
            segments.pop()
        elif part not in (b"", b"."):
            segments.append(part)
    slash = parts[-1] in (b"", b".", b"..")
    joined = b"/" + b"/".join(segments) + (b"/" if slash and segments else b"")
    if b"\\" in joined:
        return None
    try:
        uri = joined.decode("utf-8")  # strict: overlong forms and surrogates are refused
    except UnicodeDecodeError:
        return None
    return uri, [segment.decode("utf-8") for segment in segments]


def locate(root: str, target: str) -> Located | None:
    """Map a request target (``request.raw_path``) to a path under ``root``; None: 404.

    Raises ``InvalidTarget`` for what nginx answers with 400.

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
