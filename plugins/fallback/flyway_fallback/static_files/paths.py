"""Where a request target points under the root, or nowhere: nothing outside the root, ever.

The target is decoded once, as nginx does (``%XX``), from the bytes the client
sent; then refused (None, a 404) when it holds a NUL, a backslash, an encoded
slash or backslash (``%2F``, ``%5C``), a ``.`` or ``..`` segment (also encoded,
``%2e%2e``, or encoded twice, ``%252e%252e``), or bytes that are not strict
UTF-8 (overlong forms such as ``%c0%ae`` included). Empty segments merge, as
nginx's ``merge_slashes`` does, so ``//etc/passwd`` is ``etc/passwd`` under the
root. Last, the path is resolved with its symlinks and must still lie under the
root's own resolved path: a link pointing outside is refused like a missing file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes

__all__ = ["Located", "locate"]

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
_ABSOLUTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*")


@dataclass(frozen=True, slots=True)
class Located:
    """A target that stays under the root: the file system path and how it was asked for."""

    path: Path  # resolved, under the root (may not exist)
    uri: str  # the decoded path, as nginx's $uri (for redirects and listings)
    slash: bool  # the target ended in "/"
    query: str  # the query string, as sent (without "?")


def locate(root: Path, target: str) -> Located | None:
    """Map a request target (``request.raw_path``) to a path under ``root``; None: 404."""
    target = _ABSOLUTE.sub("", target, count=1) or "/"  # absolute-form: its path only
    raw, _, query = target.partition("?")
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
    base = root.resolve()
    path = base.joinpath(*segments).resolve()
    if path != base and base not in path.parents:
        return None
    return Located(path, uri, uri.endswith("/"), query)
