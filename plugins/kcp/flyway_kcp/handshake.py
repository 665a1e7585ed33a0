"""The first datagram of a conversation, and what both ends derive from it.

The client's hello (``ClientConnection.hello()``), after two bytes naming its FEC groups
(data, parity; 0, 0 for none), travels alone in one datagram sealed with the per-packet
sealer under ``HELLO_LABEL``; the client sends it again until the server answers, and the
server uses the client's FEC for the session. Both ends then derive the conversation's
id, its KCP ``conv`` and the client's key from the hello's salt (``DatagramKeys``, label
``DATAGRAM_LABEL``); the server's key also takes a server salt of 8 random bytes that starts
each of its datagrams. So the client's datagrams are ``session id || counter || sealed KCP
segments`` and the server's ``server salt || counter || ...`` (FEC shards, with FEC).
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
    "parse_hello",
    "seal_hello",
]

HELLO_LABEL = b"kcp hello"
DATAGRAM_LABEL = b"kcp"
MIN_HELLO_DATAGRAM = PACKET_OVERHEAD + 2 + SALT_SIZE + 18 + 16  # seal, FEC, salt, length, tag
MAX_HELLO_DATAGRAM = 1400  # a hello is ~90 bytes; padding keeps it far below this


def keys_for(master: bytes, hello: bytes) -> DatagramKeys:
    """The conversation's id and keys, from the salt that starts ``hello``."""
    return DatagramKeys.derive(master, hello[:SALT_SIZE], DATAGRAM_LABEL)


def conv_of(keys: DatagramKeys) -> int:
    """The KCP ``conv`` both ends use: the session id's first four bytes."""
    return int.from_bytes(keys.session_id[:4], "big")


def seal_hello(master: bytes, hello: bytes, fec: tuple[int, int]) -> bytes:
    """The client's first datagram."""
    return PacketSealer(master, HELLO_LABEL).seal(bytes(fec) + hello)


def parse_hello(plaintext: bytes) -> tuple[tuple[int, int], bytes]:
    """The FEC the client asks for, and its hello."""
    return (plaintext[0], plaintext[1]), plaintext[2:]
