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

A carrier of many datagrams per session (KCP) cannot afford an HKDF per packet, and its
datagrams must not open in the other direction. It derives per-session, per-direction keys
once and numbers its datagrams::

    session id  = HKDF-SHA256(master, salt=session salt, info=b"flyway/v1 " + label + b" id", 8)
    c2s         = HKDF-SHA256(master, salt=session salt, info=b"flyway/v1 " + label + b" c2s", 32)
    s2c         = HKDF-SHA256(master, salt=session salt || server salt,
                              info=b"flyway/v1 " + label + b" s2c", 32)
    c2s datagram = session id  || u64 counter || AES-256-GCM(c2s, nonce=u32 0 || u64 counter,
                                                             plaintext, ad=session id)
    s2c datagram = server salt || u64 counter || AES-256-GCM(s2c, ..., ad=session id)

The session salt is the client's (its handshake's); the server salt is 8 random bytes the
server draws per session and puts where the session id would be, so a hello replayed to a
server that forgot it (one that restarted) gets a fresh s2c: the server never seals two
plaintexts under one key and nonce. (The client draws a fresh session salt every session.)
(``DatagramKeys``, ``DatagramSealer``, ``DatagramOpener``.) Each counter starts at 0 and goes
up by one per datagram; the opener refuses a counter it has already accepted or one too far
behind the newest (``ReplayWindow``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
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
    "DATAGRAM_HEADER",
    "DATAGRAM_OVERHEAD",
    "SERVER_SALT_SIZE",
    "SESSION_ID_SIZE",
    "Cipher",
    "DatagramKeys",
    "DatagramOpener",
    "DatagramSealer",
    "Opener",
    "PacketSealer",
    "ReplayWindow",
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
SESSION_ID_SIZE = 8
SERVER_SALT_SIZE = SESSION_ID_SIZE  # it takes the session id's place in server datagrams
DATAGRAM_HEADER = SESSION_ID_SIZE + 8  # session id, counter
DATAGRAM_OVERHEAD = DATAGRAM_HEADER + TAG_SIZE  # what DatagramSealer.seal adds to a plaintext
REPLAY_WINDOW = 4096  # datagrams behind the newest that may still arrive (reordering)

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


@dataclass(frozen=True, slots=True)
class DatagramKeys:
    """One datagram session's id and client-to-server key, and how to make the other key."""

    session_id: bytes
    client_to_server: bytes = field(repr=False)
    _master: bytes = field(repr=False)
    _salt: bytes = field(repr=False)
    _info: bytes = field(repr=False)

    @classmethod
    def derive(cls, master: bytes, salt: bytes, label: bytes) -> DatagramKeys:
        """Derive the keys of the session whose handshake carried ``salt`` (module docstring)."""
        if len(master) != KEY_SIZE:
            raise LocalProtocolError(f"master key must be {KEY_SIZE} bytes, not {len(master)}")
        info = b"flyway/v1 " + label
        session_id = HKDF(
            algorithm=hashes.SHA256(), length=SESSION_ID_SIZE, salt=salt, info=info + b" id"
        ).derive(master)
        return cls(session_id, _hkdf(master, salt, info + b" c2s"), master, salt, info)

    def server_to_client(self, server_salt: bytes) -> bytes:
        """The server-to-client key under ``server_salt`` (``SERVER_SALT_SIZE`` bytes)."""
        if len(server_salt) != SERVER_SALT_SIZE:
            raise LocalProtocolError(f"server salt must be {SERVER_SALT_SIZE} bytes")
        return _hkdf(self._master, self._salt + server_salt, self._info + b" s2c")

    def client_sealer(self) -> DatagramSealer:
        """What the client seals with: ``session id || counter || ...``."""
        return DatagramSealer(self.client_to_server, self.session_id, self.session_id)

    def server_opener(self) -> DatagramOpener:
        """What the server opens the client's datagrams with."""
        return DatagramOpener(self.client_to_server, self.session_id)

    def server_sealer(self, server_salt: bytes) -> DatagramSealer:
        """What the server seals with: ``server salt || counter || ...``."""
        return DatagramSealer(self.server_to_client(server_salt), server_salt, self.session_id)

    def client_opener(self, server_salt: bytes) -> DatagramOpener:
        """What the client opens the server's datagrams with, once it saw ``server_salt``."""
        return DatagramOpener(self.server_to_client(server_salt), self.session_id)


class ReplayWindow:
    """Which counters were accepted: the newest, and a bitmap of the ``size`` before it.

    A counter is fresh if it is newer than any accepted, or within ``size`` behind the newest
    and not yet accepted (RFC 4303's anti-replay window). Memory is fixed by ``size``.
    """

    __slots__ = ("_bits", "_mask", "_top", "size")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        if size <= 0:
            raise ValueError("replay window size must be positive")
        self.size = size
        self._mask = (1 << size) - 1
        self._top = -1  # the newest accepted counter
        self._bits = 0  # bit i: counter top - i was accepted

    @property
    def newest(self) -> int:
        """The highest counter accepted so far (-1 before the first)."""
        return self._top

    def fresh(self, counter: int) -> bool:
        """Return True if ``counter`` was not accepted and is not too old to tell."""
        behind = self._top - counter
        if behind < 0:
            return True
        return behind < self.size and not (self._bits >> behind) & 1

    def accept(self, counter: int) -> None:
        """Remember ``counter`` as accepted (call only after it authenticated)."""
        behind = self._top - counter
        if behind <= -self.size:  # a jump past the whole window: nothing in it survives
            self._bits = 1
            self._top = counter
        elif behind < 0:
            self._bits = ((self._bits << -behind) | 1) & self._mask
            self._top = counter
        elif behind < self.size:
            self._bits |= 1 << behind


class DatagramSealer:
    """Seal one direction's datagrams: a prefix, the counter, AES-256-GCM under the counter."""

    __slots__ = ("_aead", "_associated", "_counter", "_prefix")

    def __init__(self, key: bytes, prefix: bytes, associated: bytes, *, counter: int = 0) -> None:
        if len(prefix) != SESSION_ID_SIZE:
            raise LocalProtocolError(f"datagram prefix must be {SESSION_ID_SIZE} bytes")
        self._aead = _aead(key, Cipher.AES_256_GCM)
        self._prefix = prefix
        self._associated = associated
        self._counter = counter

    @property
    def counter(self) -> int:
        """How many datagrams this direction has sealed."""
        return self._counter

    def seal(self, plaintext: Bytes) -> bytes:
        """Return ``prefix || counter || ciphertext || tag`` (``DATAGRAM_OVERHEAD`` more)."""
        counter = self._counter
        if counter >= MAX_OPERATIONS:
            raise LocalProtocolError("datagram counter exhausted: start a new session")
        self._counter = counter + 1
        number = counter.to_bytes(8, "big")
        return (
            self._prefix
            + number
            + self._aead.encrypt(b"\0\0\0\0" + number, plaintext, self._associated)
        )


class DatagramOpener:
    """Open the peer's datagrams once each, in any order; refuse replays and forgeries."""

    __slots__ = ("_aead", "_associated", "window")

    def __init__(self, key: bytes, associated: bytes, *, window: int = REPLAY_WINDOW) -> None:
        self._aead = _aead(key, Cipher.AES_256_GCM)
        self._associated = associated
        self.window = ReplayWindow(window)

    def open(self, datagram: Bytes) -> bytes:
        """Return the plaintext; RemoteProtocolError if forged, replayed, too old or too short.

        The prefix (session id or server salt) is the caller's to match: it picks the
        opener by it.
        """
        if len(datagram) < DATAGRAM_OVERHEAD:
            raise RemoteProtocolError(f"datagram of {len(datagram)} bytes is shorter than its seal")
        view = memoryview(datagram)
        number = bytes(view[SESSION_ID_SIZE:DATAGRAM_HEADER])
        counter = int.from_bytes(number, "big")
        if not self.window.fresh(counter):
            raise RemoteProtocolError("replayed or too old datagram")
        try:
            plaintext = self._aead.decrypt(
                b"\0\0\0\0" + number, view[DATAGRAM_HEADER:], self._associated
            )
        except InvalidTag:
            raise RemoteProtocolError("datagram authentication failed") from None
        self.window.accept(counter)
        return plaintext
