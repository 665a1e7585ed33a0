"""``--static-autoindex``: a directory listing in the form of nginx's ``autoindex on``.

Names link relative, escaped; directories first, each group sorted by name as nginx
sorts (bytewise), with the modification time (``dd-Mon-yyyy hh:mm``, UTC) and the
size in bytes (``-`` for directories), padded as nginx pads them.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path
from urllib.parse import quote

__all__ = ["listing"]

_NAME_WIDTH = 50


def _entry(entry: os.DirEntry[str]) -> tuple[bool, str, str, str]:
    st = entry.stat()
    is_dir = entry.is_dir()
    name = entry.name + ("/" if is_dir else "")
    when = time.strftime("%d-%b-%Y %H:%M", time.gmtime(st.st_mtime))
    return is_dir, name, when, "-" if is_dir else str(st.st_size)


def listing(directory: Path, uri: str) -> bytes:
    """The HTML page nginx's autoindex gives for ``directory`` at ``uri``."""
    with os.scandir(directory) as scan:
        entries = [_entry(e) for e in scan if not e.name.startswith(".")]
    entries.sort(key=lambda e: (not e[0], e[1].encode()))
    title = html.escape(uri, quote=False)
    out = [
        f"<html>\r\n<head><title>Index of {title}</title></head>\r\n<body>\r\n",
        f'<h1>Index of {title}</h1><hr><pre><a href="../">../</a>\r\n',
    ]
    for _, name, when, size in entries:
        shown = name if len(name) <= _NAME_WIDTH else name[: _NAME_WIDTH - 3] + "..>"
        pad = " " * (_NAME_WIDTH + 1 - len(shown))
        href = quote(name, safe="/")
        out.append(
            f'<a href="{href}">{html.escape(shown, quote=False)}</a>{pad}{when} {size:>19}\r\n'
        )
    out.append("</pre><hr></body>\r\n</html>\r\n")
    return "".join(out).encode()
