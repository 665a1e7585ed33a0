"""The server's side of the handshake: learn the client's cipher, check its Hello, or reject it.

A client's first bytes are its 32-byte salt in clear, then the Hello record; the server's first
bytes are a 32-byte salt of its own, then the Welcome record (``client_key``, ``server_key``).
The server derives the client-to-server key for each cipher from the client's salt and tries
each on the record's 18-byte sealed length: only the right key and cipher authenticate it, and
a wrong guess costs one HKDF and one 18-byte AEAD. Then it waits for the rest of the record
(bounded: the sealed length says how much is coming, at most ``SALT_SIZE + MAX_RECORD`` bytes
in all), opens it and checks, in order: it is a Hello, the version is ours, the window is sane,
the clock is within ``CLOCK_SKEW`` and the salt is new (``ReplayCache``, consulted last so that
only acceptable Hellos are remembered). Every failure is a ``HandshakeRejected`` with a short
reason.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from flyway_core.protocol.constants import MAX_WINDOW, MIN_WINDOW, PROTOCOL_VERSION
from flyway_core.protocol.crypto import SALT_SIZE, Bytes, Cipher, Opener, session_keys
from flyway_core.protocol.errors import HandshakeRejected, ProtocolError, RemoteProtocolError
from flyway_core.protocol.frames import Hello, decode_frame
from flyway_core.protocol.records import HEADER_SIZE, RecordReader, record_size
from flyway_core.protocol.replay import ReplayCache

__all__ = [
    "MAX_PADDING",
    "Handshake",
    "HelloReader",
    "check_window",
    "client_key",
    "random_padding",
    "server_key",
]

MAX_PADDING = 63  # the most random padding a Hello or Welcome gets by default


def random_padding(size: int | None = None) -> bytes:
    """Return ``size`` random bytes, or between 0 and ``MAX_PADDING`` of them."""
    return os.urandom(secrets.randbelow(MAX_PADDING + 1) if size is None else size)


def client_key(master: bytes, salt: bytes, cipher: Cipher) -> bytes:
    """The client-to-server key: from the client's salt alone (it speaks first)."""
    return session_keys(master, salt, cipher)[0]


def server_key(master: bytes, salt: bytes, server_salt: bytes, cipher: Cipher) -> bytes:
    """The server-to-client key: from both salts, so no two sessions share it.

    A Hello replayed to a server that forgot it (restarted) gets a fresh server salt,
    hence a fresh key: the server's records never reuse a (key, nonce) pair.
    """
    return session_keys(master, salt + server_salt, cipher)[1]


def check_window(window: int, error: type[ProtocolError]) -> None:
    """Raise ``error`` unless ``window`` is a legal per-stream window."""
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        raise error(f"window {window} is outside {MIN_WINDOW}-{MAX_WINDOW}")


@dataclass(frozen=True, slots=True)
class Handshake:
    """An accepted Hello, and what the server needs to run the session it opens."""

    hello: Hello
    cipher: Cipher
    reader: RecordReader  # positioned after the Hello, holding any records that followed it
    salt: bytes  # the client's: with the server's own, it makes the server-to-client key
    size: int  # bytes the salt and the Hello record took


class HelloReader:
    """Collect a client's first bytes until the Hello record is complete, then judge it."""

    __slots__ = ("_found", "_master", "_pending", "_rejected", "_replay")

    def __init__(self, master_key: bytes, replay: ReplayCache) -> None:
        self._master = master_key
        self._replay = replay
        self._pending = bytearray()
        self._found: tuple[Cipher, bytes, int] | None = None  # key and bytes to wait for
        self._rejected = False

    def receive(self, data: Bytes, now: float) -> Handshake | None:
        """Feed bytes; return the Handshake once the Hello is complete and valid, else None.

        Raises HandshakeRejected as soon as the bytes cannot be a valid Hello; the reader is
        then dead: it keeps no bytes and rejects whatever comes after.
        """
        if self._rejected:
            raise HandshakeRejected("handshake already rejected")
        try:
            return self._receive(data, now)
        except HandshakeRejected:
            self._rejected = True
            self._pending = bytearray()
            raise

    def _receive(self, data: Bytes, now: float) -> Handshake | None:
        pending = self._pending
        pending += data
        if len(pending) < SALT_SIZE + HEADER_SIZE:
            return None
        salt = bytes(pending[:SALT_SIZE])
        if self._found is None:
            self._found = self._identify(salt, bytes(pending[SALT_SIZE : SALT_SIZE + HEADER_SIZE]))
        cipher, to_server, size = self._found
        if len(pending) < size:
            return None
        reader = RecordReader(Opener(to_server, cipher))
        reader.feed(pending[SALT_SIZE:])
        self._pending = bytearray()
        try:
            plaintext = reader.next_record()
            frame = decode_frame(plaintext or b"")
        except RemoteProtocolError as exc:
            raise HandshakeRejected(f"malformed hello ({exc})") from None
        if not isinstance(frame, Hello):
            raise HandshakeRejected(f"expected HELLO, got {frame.frame_type.name}")
        if frame.version != PROTOCOL_VERSION:
            raise HandshakeRejected(f"unsupported version {frame.version}")
        check_window(frame.window, HandshakeRejected)
        reason = self._replay.check(salt, frame.timestamp_ms / 1000, now)
        if reason is not None:
            raise HandshakeRejected(reason)
        return Handshake(frame, cipher, reader, salt, size)

    def _identify(self, salt: bytes, header: bytes) -> tuple[Cipher, bytes, int]:
        for cipher in Cipher:
            to_server = client_key(self._master, salt, cipher)
            try:
                length = int.from_bytes(Opener(to_server, cipher).open(header), "big")
            except RemoteProtocolError:
                continue
            if length == 0:
                raise HandshakeRejected("malformed hello (empty record)")
            return cipher, to_server, SALT_SIZE + record_size(length)
        raise HandshakeRejected("authentication failed")
