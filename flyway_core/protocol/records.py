"""Records: sealing plaintexts onto a byte stream and opening them off it again.

A record carrying a plaintext P (1 to 65535 bytes) is two AEAD outputs back to back::

    seal(len(P) as u16 big-endian)   18 bytes: 2 + 16 tag
    seal(P)                          len(P) + 16 bytes

The sealed length lets a reader know how much to wait for before it touches the body, so the
reader never holds more than one partial record.
"""

from __future__ import annotations

from flyway_core.protocol.crypto import TAG_SIZE, Bytes, Opener, Sealer
from flyway_core.protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HEADER_SIZE",
    "MAX_PLAINTEXT",
    "MAX_RECORD",
    "RecordReader",
    "RecordWriter",
    "record_size",
]

MAX_PLAINTEXT = 65535
HEADER_SIZE = 2 + TAG_SIZE
MAX_RECORD = HEADER_SIZE + MAX_PLAINTEXT + TAG_SIZE


def record_size(plaintext_size: int) -> int:
    """Return how many bytes a record carrying ``plaintext_size`` bytes takes on the wire."""
    return HEADER_SIZE + plaintext_size + TAG_SIZE


class RecordWriter:
    """Seal plaintexts into records for one direction of a session."""

    __slots__ = ("_sealer",)

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def seal_parts(self, plaintext: Bytes) -> tuple[bytes, bytes]:
        """Return a record as its two parts, sealed length and sealed body, to join later."""
        size = len(plaintext)
        if not 0 < size <= MAX_PLAINTEXT:
            raise LocalProtocolError(
                f"record plaintext must be 1-{MAX_PLAINTEXT} bytes, not {size}"
            )
        return self._sealer.seal(size.to_bytes(2, "big")), self._sealer.seal(plaintext)

    def seal(self, plaintext: Bytes) -> bytes:
        """Return the record carrying ``plaintext``."""
        header, body = self.seal_parts(plaintext)
        return header + body


class RecordReader:
    """Open records off a byte stream fed in arbitrary pieces.

    ``feed()`` appends received bytes; ``next_record()`` returns the next plaintext, or None
    when the rest of it has not arrived yet. Consumed bytes are dropped as soon as the reader
    runs dry, so between calls it holds less than one record (at most ``MAX_RECORD - 1`` bytes).
    Any authentication failure raises RemoteProtocolError, after which the reader is dead:
    it keeps no bytes, and every ``next_record()`` raises again.

    Records are opened straight out of a ``bytes`` piece when nothing partial is held
    (the common case: a carrier delivers whole records), and only the incomplete tail of
    the piece is copied into the reader's own buffer.
    """

    __slots__ = ("_buffer", "_failed", "_length", "_opener", "_piece", "_position")

    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self._buffer = bytearray()
        self._piece: memoryview | None = None  # the piece fed last, read without copying
        self._position = 0  # start of the unconsumed bytes in _piece, else in _buffer
        self._length: int | None = None  # plaintext length of the record whose body we await
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held for records not complete yet (a sealed length already opened excluded)."""
        source = self._buffer if self._piece is None else self._piece
        return len(source) - self._position

    def feed(self, data: Bytes) -> None:
        """Append received bytes (a dead reader drops them: it holds nothing after failing)."""
        if self._failed:
            return
        if self._piece is not None:  # fed again before the last piece was read to the end
            self._keep_rest()
        if self._position:
            self._compact()
        if self._buffer or not isinstance(data, bytes):
            self._buffer += data  # a caller's bytearray may change after we return: copy
        elif data:
            self._piece = memoryview(data)

    def next_record(self) -> bytes | None:
        """Return the next record's plaintext, or None if more bytes are needed."""
        if self._failed:
            raise RemoteProtocolError("record stream already failed")
        source: memoryview | bytearray = self._buffer if self._piece is None else self._piece
        position = self._position
        try:
            length = self._length
            if length is None:
                end = position + HEADER_SIZE
                if len(source) < end:
                    self._keep_rest()
                    return None
                length = int.from_bytes(self._opener.open(_view(source, position, end)), "big")
                if length == 0:
                    raise RemoteProtocolError("empty record")
                self._length = length
                self._position = position = end
            end = position + length + TAG_SIZE
            if len(source) < end:
                self._keep_rest()
                return None
            plaintext = self._opener.open(_view(source, position, end))
        except RemoteProtocolError:
            self._failed = True
            self._buffer = bytearray()
            self._piece = None
            self._position = 0
            raise
        self._length = None
        self._position = end
        return plaintext

    def _keep_rest(self) -> None:
        # The reader ran dry: keep the unconsumed bytes (less than one record), in our own
        # buffer, and forget what was consumed. CPython deletes a bytearray's prefix in O(1),
        # so this never copies a partial record of the buffer back.
        piece = self._piece
        if piece is not None:
            self._buffer = bytearray(piece[self._position :])
            self._piece = None
            self._position = 0
        else:
            self._compact()

    def _compact(self) -> None:
        if self._position:
            del self._buffer[: self._position]
            self._position = 0


def _view(source: memoryview | bytearray, start: int, end: int) -> memoryview:
    # A window without copying; the caller drops it before the buffer resizes.
    return memoryview(source)[start:end]
