"""Small files kept in memory while their ``stat`` says they are unchanged."""

from __future__ import annotations

import os
from collections import OrderedDict

__all__ = ["SMALL_CACHE", "SmallFiles"]

SMALL_CACHE = 16 << 20  # bytes of small files kept in memory (SmallFiles)


class SmallFiles:
    """The bytes of recently sent small files, ``limit`` bytes in all, least recent out.

    An entry is good while the file's inode, size and modification time (ns) are
    what they were: the ``stat`` every request makes anyway says so.
    """

    def __init__(self, limit: int = SMALL_CACHE) -> None:
        self.limit = limit
        self._held = 0
        self._entries: OrderedDict[str, tuple[tuple[int, int, int], bytes]] = OrderedDict()

    def read(self, path: str, st: os.stat_result) -> bytes:
        key, version = path, (st.st_ino, st.st_size, st.st_mtime_ns)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == version:
            self._entries.move_to_end(key)
            return entry[1]
        with open(path, "rb") as file:
            data = file.read()
        if entry is not None:
            self._held -= len(self._entries.pop(key)[1])
        if len(data) == st.st_size:
            self._entries[key] = (version, data)
            self._held += len(data)
            while self._held > self.limit:
                _, (_, old) = self._entries.popitem(last=False)
                self._held -= len(old)
        return data
