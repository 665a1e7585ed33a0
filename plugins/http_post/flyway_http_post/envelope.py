"""Envelopes: the small sealed header on every request and response body (sans-I/O).

A body is ``sealed header | payload | padding``. The header is one packet of the
protocol's per-packet sealer (``flyway_core.protocol.PacketSealer``, label
``http envelope``: a random 16-byte salt, then the header under a key used for
it alone; ``docs/PROTOCOL.md`` section 11). It carries the session id,
offsets and sizes, so nothing an observer sees repeats between requests: no
session id, sequence number or length field sits in the clear. The payload is
the session's own sealed records (already authenticated), or a hello.
A streamed response is several envelopes back to back.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from flyway_core.protocol import PacketSealer, RemoteProtocolError
from flyway_core.protocol.crypto import PACKET_OVERHEAD

__all__ = [
    "ENVELOPE_OVERHEAD",
    "EnvelopeKeys",
    "Kind",
    "MAX_HOLD_MS",
    "PingInfo",
    "Request",
    "RequestFlags",
    "Response",
    "ResponseReader",
    "Status",
    "new_session_id",
]

VERSION = 1
_REQUEST = struct.Struct(">BB16sQQBHI")  # version kind session up_offset down_ack flags pad len
_RESPONSE = struct.Struct(">BBQQHI")  # version status up_ack down_offset pad len
ENVELOPE_OVERHEAD = PACKET_OVERHEAD + _REQUEST.size + 0xFFFF  # the most a payload can grow by


class Kind(IntEnum):
    """What a request asks for."""

    OPEN = 1  # payload: the client's hello; starts a session
    SEND = 2  # payload: uplink bytes at ``up_offset``
    POLL = 3  # wait for downlink bytes; acknowledges ``down_ack``
    CLOSE = 4  # the client is done with the session
    PING = 5  # touches no session; the server waits ``up_offset`` ms, then says what arrived


MAX_HOLD_MS = 120_000  # the longest a PING is held (its ``up_offset``: milliseconds)
_PING_INFO = struct.Struct(">QQI")  # max_body, largest_request, poll timeout in ms


class RequestFlags(IntFlag):
    """Modifiers of a POLL."""

    NONE = 0
    REWIND = 1  # resend everything after down_ack (a response was lost)
    STREAM = 2  # answer with a streamed (chunked) response, envelope by envelope
    PROBE = 4  # a short streamed answer that tells whether the path streams promptly


class Status(IntEnum):
    """How the server answered."""

    OK = 0
    GONE = 1  # no such session (the server restarted, or the session ended)


@dataclass(frozen=True, slots=True)
class Request:
    kind: Kind
    session: bytes  # 16 bytes, from new_session_id()
    up_offset: int = 0
    down_ack: int = 0
    flags: RequestFlags = RequestFlags.NONE


def new_session_id() -> bytes:
    """Return a random session id for a request's header (it only ever travels sealed)."""
    return os.urandom(16)


@dataclass(frozen=True, slots=True)
class Response:
    status: Status
    up_ack: int = 0
    down_offset: int = 0


@dataclass(frozen=True, slots=True)
class PingInfo:
    """The payload of a PING answer: the server's own limits, for ``flyway doctor``.

    The answer itself says ``up_ack`` = payload bytes received and
    ``down_offset`` = the hold applied in milliseconds.
    """

    max_body: int  # the server's --http-max-body
    largest_request: int  # the largest request body the server reads at all
    poll_timeout: float  # seconds the server holds a POLL that has nothing to answer

    def pack(self) -> bytes:
        return _PING_INFO.pack(self.max_body, self.largest_request, round(self.poll_timeout * 1000))

    @classmethod
    def unpack(cls, payload: bytes) -> PingInfo | None:
        if len(payload) < _PING_INFO.size:
            return None
        max_body, largest, poll_ms = _PING_INFO.unpack_from(payload)
        return cls(max_body, largest, poll_ms / 1000)


class EnvelopeKeys:
    """Seals and opens envelopes for one password."""

    def __init__(self, master_key: bytes) -> None:
        self._sealer = PacketSealer(master_key, b"http envelope")

    def _seal(self, header: bytes, payload: bytes, padding: int) -> bytes:
        return b"".join((self._sealer.seal(header), payload, os.urandom(padding)))

    def open_header(self, sealed: bytes) -> bytes | None:
        """Return a sealed header's plaintext, or None when it is not ours."""
        try:
            return self._sealer.open(sealed)
        except RemoteProtocolError:
            return None

    def seal_request(self, request: Request, payload: bytes = b"", *, padding: int = 0) -> bytes:
        header = _REQUEST.pack(
            VERSION,
            request.kind,
            request.session,
            request.up_offset,
            request.down_ack,
            request.flags,
            padding,
            len(payload),
        )
        return self._seal(header, payload, padding)

    def open_request(self, body: bytes) -> tuple[Request, bytes] | None:
        """Return the request and its payload, or None when ``body`` is not ours."""
        end = PACKET_OVERHEAD + _REQUEST.size
        if len(body) < end:
            return None
        header = self.open_header(body[:end])
        if header is None:
            return None
        version, kind, session, up_offset, down_ack, flags, padding, size = _REQUEST.unpack(header)
        if version != VERSION or kind not in Kind._value2member_map_:
            return None
        if len(body) != end + size + padding:
            return None
        request = Request(Kind(kind), session, up_offset, down_ack, RequestFlags(flags & 7))
        return request, body[end : end + size]

    def seal_response(self, response: Response, payload: bytes = b"", *, padding: int = 0) -> bytes:
        header = _RESPONSE.pack(
            VERSION, response.status, response.up_ack, response.down_offset, padding, len(payload)
        )
        return self._seal(header, payload, padding)

    def reader(self) -> ResponseReader:
        """Return a parser for a (possibly streamed) response body."""
        return ResponseReader(self)


class ResponseReader:
    """Parses envelopes from response bytes as they arrive, in any chunking."""

    def __init__(self, keys: EnvelopeKeys) -> None:
        self._keys = keys
        self._buffer = bytearray()
        self._header: tuple[Response, int, int] | None = None  # response, payload, padding

    def feed(self, data: bytes) -> list[tuple[Response, bytes]]:
        """Add bytes; return the envelopes they complete. ValueError if not ours."""
        self._buffer += data
        out: list[tuple[Response, bytes]] = []
        end = PACKET_OVERHEAD + _RESPONSE.size
        while True:
            if self._header is None:
                if len(self._buffer) < end:
                    return out
                header = self._keys.open_header(bytes(self._buffer[:end]))
                if header is None:
                    raise ValueError("response envelope failed authentication")
                version, status, up_ack, down_offset, padding, size = _RESPONSE.unpack(header)
                if version != VERSION or status not in Status._value2member_map_:
                    raise ValueError(f"unexpected response envelope (version {version})")
                del self._buffer[:end]
                self._header = (Response(Status(status), up_ack, down_offset), size, padding)
            response, size, padding = self._header
            if len(self._buffer) < size + padding:
                return out
            payload = bytes(self._buffer[:size])
            del self._buffer[: size + padding]
            self._header = None
            out.append((response, payload))

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole envelope."""
        return len(self._buffer) + (0 if self._header is None else 1)
