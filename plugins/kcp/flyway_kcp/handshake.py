"""The first datagram of a conversation, and what both ends derive from it.

The client's hello (``ClientConnection.hello()``) travels alone in one datagram sealed with
the per-packet sealer under ``HELLO_LABEL``; the client sends it again until the server
answers. Both ends then derive the conversation's id, its KCP ``conv`` and its two
directional keys from the hello's salt (``DatagramKeys``, label ``DATAGRAM_LABEL``), so
every later datagram is ``session id || counter || sealed KCP segments``.
"""

from __future__ import annotations

from flyway_core.protocol.crypto import (
    PACKET_OVERHEAD,
    SALT_SIZE,
    DatagramKeys,
    PacketSealer,
)

__all__ = [
    "DATAGRAM_LABEL",
    "HELLO_LABEL",
    "MAX_HELLO_DATAGRAM",
    "MIN_HELLO_DATAGRAM",
    "conv_of",
    "keys_for",
]

HELLO_LABEL = b"kcp hello"
DATAGRAM_LABEL = b"kcp"
MIN_HELLO_DATAGRAM = PACKET_OVERHEAD + SALT_SIZE + 18 + 16  # seal, salt, sealed length, tag
MAX_HELLO_DATAGRAM = 1400  # a hello is ~90 bytes; padding keeps it far below this


def keys_for(master: bytes, hello: bytes) -> DatagramKeys:
    """The conversation's id and keys, from the salt that starts ``hello``."""
    return DatagramKeys.derive(master, hello[:SALT_SIZE], DATAGRAM_LABEL)


def conv_of(keys: DatagramKeys) -> int:
    """The KCP ``conv`` both ends use: the session id's first four bytes."""
    return int.from_bytes(keys.session_id[:4], "big")


def seal_hello(master: bytes, hello: bytes) -> bytes:
    """The client's first datagram."""
    return PacketSealer(master, HELLO_LABEL).seal(hello)
