"""Keys and AEAD: the password's master key, per-session keys and counter-nonce sealing.

Key schedule (see ``docs/PROTOCOL.md``)::

    master = scrypt(password, salt=b"flyway/v1 master key", n=2**15, r=8, p=1, length=32)
    c2s    = HKDF-SHA256(master, salt=session salt, info=b"flyway/v1 c2s" + cipher id, length=32)
    s2c    = HKDF-SHA256(master, salt=session salt, info=b"flyway/v1 s2c" + cipher id, length=32)

Every AEAD operation in one direction uses the next value of a 96-bit big-endian counter as
its nonce, starting at 0, so a nonce is never used twice under one key.

Self-contained packets (HTTP envelopes, KCP datagrams), which may be lost, repeated or
reordered, cannot share a counter, so each is sealed under a key of its own instead::

    label key  = HKDF-SHA256(master, salt=none, info=b"flyway/v1 " + label, length=32)
    packet key = HKDF-Expand-SHA256(label key, info=packet salt, length=32)
    packet     = packet salt (16 random bytes) || AES-256-GCM(packet key, nonce=0, plaintext, ad)

(``PacketSealer``). A key is used for one packet only, so the fixed nonce is never reused.
"""

from __future__ import annotations

import functools
import os
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from flyway_core.protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "KEY_SIZE",
    "MASTER_KEY_SALT",
    "MAX_OPERATIONS",
    "NONCE_SIZE",
    "PACKET_OVERHEAD",
    "PACKET_SALT_SIZE",
    "SALT_SIZE",
    "TAG_SIZE",
    "Bytes",
    "Cipher",
    "Opener",
    "PacketSealer",
    "Sealer",
    "derive_master_key",
    "session_keys",
]

KEY_SIZE = 32
SALT_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MASTER_KEY_SALT = b"flyway/v1 master key"
MAX_OPERATIONS = 2**64  # AEAD operations per key; the nonce counter never reaches this
PACKET_SALT_SIZE = 16
PACKET_OVERHEAD = PACKET_SALT_SIZE + TAG_SIZE  # what PacketSealer.seal adds to a plaintext
_ZERO_NONCE = bytes(NONCE_SIZE)

_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1

Bytes = bytes | bytearray | memoryview  # what the AEADs accept


class Cipher(IntEnum):
    """The AEAD that seals a session's records; its value is part of the key derivation."""

    AES_256_GCM = 1
    CHACHA20_POLY1305 = 2

    @property
    def label(self) -> str:
        """The cipher's name on the command line: ``aes-256-gcm`` or ``chacha20-poly1305``."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, name: str) -> Cipher:
        """Return the cipher called ``name`` (as ``label`` spells it), or raise ValueError."""
        wanted = name.strip().lower()
        for cipher in cls:
            if cipher.label == wanted:
                return cipher
        choices = ", ".join(cipher.label for cipher in cls)
        raise ValueError(f"unknown cipher {name!r} (choose from {choices})")


@functools.lru_cache(maxsize=8)
def derive_master_key(password: str) -> bytes:
    """Stretch ``password`` into the 32-byte master key (scrypt; cached, so once per process)."""
    kdf = Scrypt(salt=MASTER_KEY_SALT, length=KEY_SIZE, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(password.encode("utf-8"))


def session_keys(master: bytes, salt: bytes, cipher: Cipher) -> tuple[bytes, bytes]:
    """Derive one session's ``(client_to_server, server_to_client)`` keys from its salt."""
    if len(master) != KEY_SIZE:
        raise LocalProtocolError(f"master key must be {KEY_SIZE} bytes, not {len(master)}")
    return (
        _hkdf(master, salt, b"flyway/v1 c2s" + bytes([cipher])),
        _hkdf(master, salt, b"flyway/v1 s2c" + bytes([cipher])),
    )


def _hkdf(master: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(master)


def _aead(key: bytes, cipher: Cipher) -> AESGCM | ChaCha20Poly1305:
    if len(key) != KEY_SIZE:
        raise LocalProtocolError(f"session key must be {KEY_SIZE} bytes, not {len(key)}")
    return AESGCM(key) if cipher is Cipher.AES_256_GCM else ChaCha20Poly1305(key)


class Sealer:
    """Encrypt and authenticate one direction's plaintexts, each under the next counter nonce."""

    __slots__ = ("_aead", "_counter")

    def __init__(self, key: bytes, cipher: Cipher, *, counter: int = 0) -> None:
        self._aead = _aead(key, cipher)
        self._counter = counter  # the next nonce; tests start near the limit

    @property
    def counter(self) -> int:
        """How many AEAD operations this direction has used."""
        return self._counter

    def seal(self, plaintext: Bytes) -> bytes:
        """Return ``ciphertext || tag`` (``len(plaintext) + 16`` bytes)."""
        counter = self._counter
        if counter >= MAX_OPERATIONS:
            raise LocalProtocolError("nonce counter exhausted: start a new session")
        self._counter = counter + 1
        return self._aead.encrypt(counter.to_bytes(NONCE_SIZE, "big"), plaintext, None)


class Opener:
    """Authenticate and decrypt what the peer's :class:`Sealer` produced, in the same order."""

    __slots__ = ("_aead", "_counter")

    def __init__(self, key: bytes, cipher: Cipher, *, counter: int = 0) -> None:
        self._aead = _aead(key, cipher)
        self._counter = counter

    @property
    def counter(self) -> int:
        """How many AEAD operations this direction has used."""
        return self._counter

    def open(self, sealed: Bytes) -> bytes:
        """Return the plaintext, or raise RemoteProtocolError if ``sealed`` is not authentic."""
        counter = self._counter
        if counter >= MAX_OPERATIONS:
            raise LocalProtocolError("nonce counter exhausted: start a new session")
        self._counter = counter + 1
        try:
            return self._aead.decrypt(counter.to_bytes(NONCE_SIZE, "big"), sealed, None)
        except InvalidTag:
            raise RemoteProtocolError("authentication failed") from None


class PacketSealer:
    """Seal and open self-contained packets, each under a key of its own (module docstring).

    One instance serves both directions: what a packet's key depends on is its random salt,
    so either end opens what the other sealed. A packet that fails authentication is a
    RemoteProtocolError; the caller decides whether that means silence or a fallback.
    """

    __slots__ = ("_key",)

    def __init__(self, master: bytes, label: bytes) -> None:
        if len(master) != KEY_SIZE:
            raise LocalProtocolError(f"master key must be {KEY_SIZE} bytes, not {len(master)}")
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=b"flyway/v1 " + label
        ).derive(master)

    def _aead(self, salt: Bytes) -> AESGCM:
        info = bytes(salt)
        key = HKDFExpand(algorithm=hashes.SHA256(), length=KEY_SIZE, info=info).derive(self._key)
        return AESGCM(key)

    def seal(self, plaintext: Bytes, associated: Bytes = b"") -> bytes:
        """Return ``salt || ciphertext || tag`` (``PACKET_OVERHEAD`` bytes more than ``plaintext``).

        ``associated`` is authenticated, not sent: the opener must pass the same bytes.
        """
        salt = os.urandom(PACKET_SALT_SIZE)
        return salt + self._aead(salt).encrypt(_ZERO_NONCE, plaintext, associated or None)

    def open(self, packet: Bytes, associated: Bytes = b"") -> bytes:
        """Return the plaintext of a sealed packet; RemoteProtocolError if it is not authentic."""
        if len(packet) < PACKET_OVERHEAD:
            raise RemoteProtocolError(f"packet of {len(packet)} bytes is shorter than its seal")
        view = memoryview(packet)
        try:
            return self._aead(view[:PACKET_SALT_SIZE]).decrypt(
                _ZERO_NONCE, view[PACKET_SALT_SIZE:], associated or None
            )
        except InvalidTag:
            raise RemoteProtocolError("packet authentication failed") from None
