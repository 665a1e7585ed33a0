"""Follow HTTP/1.1 messages in one direction of a connection to find where their bodies are.

Done by hand (no h11): the FaultRelay needs byte offsets into the raw stream, which
h11's events do not give.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Direction", "Exchange", "Framer"]

Direction = Literal["request", "response"]
MAX_HEAD = 64 << 10
MAX_LINE = 8 << 10


class _State(enum.Enum):
    HEAD = enum.auto()
    LENGTH = enum.auto()
    CHUNK_SIZE = enum.auto()
    CHUNK_DATA = enum.auto()
    CHUNK_END = enum.auto()
    TRAILERS = enum.auto()
    UNTIL_CLOSE = enum.auto()
    PASSTHROUGH = enum.auto()


@dataclass
class Exchange:
    """What the two directions of one connection share: methods awaiting a response."""

    methods: deque[bytes] = field(default_factory=deque)
    tunnel: bool = False  # CONNECT or Upgrade: stop parsing either way


class Framer:
    """Follows HTTP/1.1 messages in one direction of a connection to find their bodies.

    ``feed(data)`` returns ``(n, reset)``: forward ``data[:n]``, then reset the
    connection when ``reset``. ``choose(length)`` is asked once per non-empty body
    whether to cut it; a cut body is forwarded up to about its middle.
    """

    def __init__(
        self, role: Direction, exchange: Exchange, choose: Callable[[int | None], bool]
    ) -> None:
        self.role = role
        self.exchange = exchange
        self.choose = choose
        self.state = _State.HEAD
        self.buffer = bytearray()  # an incomplete head or line
        self.remaining = 0  # bytes left in the body (LENGTH) or chunk (CHUNK_DATA/END)
        self.counted = False  # the current body was offered to choose()
        self.cut_in: int | None = None  # body bytes still to forward before the reset
        self.cut_at: int | None = None

    def feed(self, data: bytes) -> tuple[int, bool]:
        pos = 0
        self.cut_at = None
        while pos < len(data) and self.cut_at is None:
            if self.exchange.tunnel:
                self.state = _State.PASSTHROUGH
            pos = self._step(data, pos)
        if self.cut_at is not None:
            return self.cut_at, True
        return len(data), False

    def _step(self, data: bytes, pos: int) -> int:
        match self.state:
            case _State.HEAD:
                return self._head(data, pos)
            case _State.LENGTH | _State.CHUNK_DATA:
                return self._counted_bytes(data, pos)
            case _State.CHUNK_END:
                take = min(self.remaining, len(data) - pos)
                self.remaining -= take
                if not self.remaining:
                    self.state = _State.CHUNK_SIZE
                return pos + take
            case _State.CHUNK_SIZE:
                return self._chunk_size(data, pos)
            case _State.TRAILERS:
                return self._trailers(data, pos)
            case _State.UNTIL_CLOSE:
                if not self.counted and self._offer(None):
                    self.cut_at = pos + (len(data) - pos) // 2
                return len(data)
            case _:
                return len(data)

    # heads

    def _head(self, data: bytes, pos: int) -> int:
        before = len(self.buffer)
        self.buffer += data[pos:]
        end = self.buffer.find(b"\r\n\r\n", max(0, before - 3))
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.exchange.tunnel = True  # not HTTP as we know it: stop looking
            return len(data)
        head = bytes(self.buffer[:end]).lstrip(b"\r\n")
        self.buffer.clear()
        pos += end + 4 - before
        if head:
            self._message(head)
            if self.cut_in == 0:
                self.cut_at = pos
        return pos

    def _message(self, head: bytes) -> None:
        start, *lines = head.split(b"\r\n")
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            headers[key] = headers[key] + b"," + value.strip() if key in headers else value.strip()
        if self.role == "request":
            self._request(start, headers)
        else:
            self._response(start, headers)

    def _request(self, start: bytes, headers: dict[bytes, bytes]) -> None:
        method = start.split(b" ", 1)[0].upper()
        self.exchange.methods.append(method)
        if method == b"CONNECT":
            self.state = _State.PASSTHROUGH  # what follows is tunnel data, if anything
            return
        self._body(headers, until_close=False)

    def _response(self, start: bytes, headers: dict[bytes, bytes]) -> None:
        parts = start.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status == 101:
            self.exchange.tunnel = True
            return
        if 100 <= status < 200:
            return  # interim (100 Continue): the final response follows
        method = self.exchange.methods.popleft() if self.exchange.methods else b"GET"
        if method == b"CONNECT" and 200 <= status < 300:
            self.exchange.tunnel = True
            return
        if method == b"HEAD" or status in (204, 304):
            self._done()
            return
        self._body(headers, until_close=True)

    def _body(self, headers: dict[bytes, bytes], *, until_close: bool) -> None:
        coding = headers.get(b"transfer-encoding", b"").split(b",")[-1].strip().lower()
        length = headers.get(b"content-length", b"").split(b",")[0].strip()
        self._done()
        if coding == b"chunked":
            self.state = _State.CHUNK_SIZE
        elif coding or (not length and until_close):
            self.state = _State.UNTIL_CLOSE
        elif length.isdigit() and int(length) > 0:
            self.state = _State.LENGTH
            self.remaining = int(length)
            if self._offer(self.remaining):
                self.cut_in = self.remaining // 2

    def _done(self) -> None:
        self.state = _State.HEAD
        self.counted = False
        self.cut_in = None

    def _offer(self, length: int | None) -> bool:
        self.counted = True
        return self.choose(length)

    # bodies

    def _counted_bytes(self, data: bytes, pos: int) -> int:
        take = min(self.remaining, len(data) - pos)
        if self.cut_in is not None and self.cut_in <= take:
            self.cut_at = pos + self.cut_in
            return self.cut_at
        if self.cut_in is not None:
            self.cut_in -= take
        self.remaining -= take
        if not self.remaining:
            if self.state is _State.LENGTH:
                self._done()
            else:
                self.state = _State.CHUNK_END
                self.remaining = 2  # the CRLF after the chunk's data
        return pos + take

    def _line(self, data: bytes, pos: int) -> tuple[int, bytes | None]:
        end = data.find(b"\n", pos)
        if end < 0:
            self.buffer += data[pos:]
            if len(self.buffer) > MAX_LINE:
                self.exchange.tunnel = True
            return len(data), None
        self.buffer += data[pos:end]
        line = bytes(self.buffer).rstrip(b"\r")
        self.buffer.clear()
        return end + 1, line

    def _chunk_size(self, data: bytes, pos: int) -> int:
        pos, line = self._line(data, pos)
        if line is None:
            return pos
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            self.exchange.tunnel = True  # broken framing: pass the rest through
            return pos
        if size == 0:
            self.state = _State.TRAILERS
            return pos
        self.state = _State.CHUNK_DATA
        self.remaining = size
        if not self.counted and self._offer(None):
            self.cut_in = size // 2
            if self.cut_in == 0:
                self.cut_at = pos
        return pos

    def _trailers(self, data: bytes, pos: int) -> int:
        pos, line = self._line(data, pos)
        if line == b"":
            self._done()
        return pos
