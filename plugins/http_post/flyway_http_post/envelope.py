"""Envelopes: what every request and response body is made of, sealed whole (sans-I/O).

A body is ``sealed header | payload | padding | seal``. The sealed header is one
packet of the protocol's per-packet sealer (``flyway_core.protocol.PacketSealer``,
label ``http envelope``: a random 16-byte salt, then the header under a key used
for it alone; ``docs/PROTOCOL.md`` section 11). It carries the session id, the
request's number, offsets and sizes, so nothing an observer sees repeats between
requests: no session id, sequence number or length field sits in the clear. The
final seal is a second packet with an empty plaintext whose associated data is
everything before it (sealed header, payload and padding), so the whole envelope
is authenticated, and a reader learns the sizes from the header before the rest
has arrived. The payload is the session's own sealed records, or a hello.
A streamed response is several envelopes back to back.

Freshness is checked by the server (``server.py``): each request of a session has a
number of its own, and a PING carries the client's clock.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from flyway_core.protocol import PacketSealer, RemoteProtocolError
from flyway_core.protocol.crypto import PACKET_OVERHEAD, PACKET_SALT_SIZE

__all__ = [
    "ENVELOPE_OVERHEAD",
    "MAX_ENVELOPE_PAYLOAD",
    "MAX_HOLD_MS",
    "MAX_PADDING",
    "VERSION",
    "EnvelopeKeys",
    "Kind",
    "OpenedRequest",
    "PingInfo",
    "Request",
    "RequestFlags",
    "Response",
    "ResponseFlags",
    "ResponseReader",
    "Status",
    "new_session_id",
]

VERSION = 2
# version kind session number time_ms up_offset down_ack flags padding size
_REQUEST = struct.Struct(">BB16sQQQQBHI")
# version status flags number up_ack down_offset down_end padding size
_RESPONSE = struct.Struct(">BBBQQQQHI")
_SEAL = PACKET_OVERHEAD  # the final seal: an empty plaintext, so salt and tag only
MAX_PADDING = 255  # the most padding our own envelopes carry
REQUEST_HEAD = PACKET_OVERHEAD + _REQUEST.size
RESPONSE_HEAD = PACKET_OVERHEAD + _RESPONSE.size
# what a body holds beside its payload, at most: both seals, the header and the padding
ENVELOPE_OVERHEAD = max(REQUEST_HEAD, RESPONSE_HEAD) + _SEAL + MAX_PADDING
MAX_ENVELOPE_PAYLOAD = 16 << 20  # a reader refuses an envelope announcing more


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
    """Modifiers of a request."""

    NONE = 0
    REWIND = 1  # POLL: resend everything after down_ack (a response was lost)
    STREAM = 2  # POLL: answer with a streamed (chunked) response, envelope by envelope
    PROBE = 4  # POLL: a short streamed answer that tells whether the path streams promptly;
    # SEND: the first envelope of that answer has arrived
    SESSION = 8  # PING: say whether the session named in the header is alive (OK or GONE)


class Status(IntEnum):
    """How the server answered."""

    OK = 0
    GONE = 1  # the session has ended (told only to a fresh, authentic request)
    RETRY = 2  # SEND: the bytes were not taken (too far ahead, reorder buffer full): resend


class ResponseFlags(IntFlag):
    """Modifiers of a response envelope."""

    NONE = 0
    ACKED = 1  # a probe's second envelope: the client said it had the first before this went


@dataclass(frozen=True, slots=True)
class Request:
    kind: Kind
    session: bytes  # 16 bytes, from new_session_id()
    up_offset: int = 0
    down_ack: int = 0
    flags: RequestFlags = RequestFlags.NONE
    number: int = 0  # the request's number in its session: OPEN is 0, then 1, 2, ... each new
    time_ms: int = 0  # PING: the client's clock, milliseconds since the Unix epoch


def new_session_id() -> bytes:
    """Return a random session id for a request's header (it only ever travels sealed)."""
    return os.urandom(16)


@dataclass(frozen=True, slots=True)
class Response:
    status: Status
    up_ack: int = 0
    down_offset: int = 0
    number: int = 0  # the number of the request this answers
    down_end: int = 0  # the offset after the newest downlink byte the server holds
    flags: ResponseFlags = ResponseFlags.NONE


@dataclass(frozen=True, slots=True)
class OpenedRequest:
    """A request body that opened: the request, its payload, and its header's salt."""

    request: Request
    payload: bytes
    salt: bytes  # unique per envelope (PING replays are refused by it)


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
        if not 0 <= padding <= 0xFFFF:
            raise ValueError(f"padding of {padding} bytes")
        body = b"".join((self._sealer.seal(header), payload, os.urandom(padding)))
        return body + self._sealer.seal(b"", body)

    def authentic(self, body: memoryview) -> bool:
        """Whether the final seal of a whole envelope covers everything before it."""
        try:
            self._sealer.open(body[-_SEAL:], body[:-_SEAL])
        except RemoteProtocolError:
            return False
        return True

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
            request.number,
            request.time_ms,
            request.up_offset,
            request.down_ack,
            request.flags,
            padding,
            len(payload),
        )
        return self._seal(header, payload, padding)

    def open_request(self, body: bytes) -> tuple[Request, bytes] | None:
        """Return the request and its payload, or None when ``body`` is not ours."""
        opened = self.open_request_whole(body)
        return None if opened is None else (opened.request, opened.payload)

    def open_request_whole(self, body: bytes) -> OpenedRequest | None:
        """Open a request body; None unless every byte of it is authentic and well formed."""
        if len(body) < REQUEST_HEAD + _SEAL:
            return None
        header = self.open_header(body[:REQUEST_HEAD])
        if header is None:
            return None
        fields = _REQUEST.unpack(header)
        version, kind, session, number, time_ms, up_offset, down_ack, flags, padding, size = fields
        if version != VERSION or kind not in Kind._value2member_map_:
            return None
        if len(body) != REQUEST_HEAD + size + padding + _SEAL:
            return None
        if not self.authentic(memoryview(body)):
            return None
        request = Request(
            Kind(kind),
            session,
            up_offset,
            down_ack,
            RequestFlags(flags & 15),
            number,
            time_ms,
        )
        payload = body[REQUEST_HEAD : REQUEST_HEAD + size]
        return OpenedRequest(request, payload, body[:PACKET_SALT_SIZE])

    def seal_response(self, response: Response, payload: bytes = b"", *, padding: int = 0) -> bytes:
        header = _RESPONSE.pack(
            VERSION,
            response.status,
            response.flags,
            response.number,
            response.up_ack,
            response.down_offset,
            response.down_end,
            padding,
            len(payload),
        )
        return self._seal(header, payload, padding)

    def reader(self, number: int | None = None) -> ResponseReader:
        """Return a parser for a (possibly streamed) response body.

        With ``number``, every envelope must answer the request of that number.
        """
        return ResponseReader(self, number)


class ResponseReader:
    """Parses envelopes from response bytes as they arrive, in any chunking."""

    def __init__(self, keys: EnvelopeKeys, number: int | None = None) -> None:
        self._keys = keys
        self._number = number
        self._buffer = bytearray()
        self._header: tuple[Response, int, int] | None = None  # response, payload, whole size

    def feed(self, data: bytes) -> list[tuple[Response, bytes]]:
        """Add bytes; return the envelopes they complete. ValueError if not ours."""
        self._buffer += data
        out: list[tuple[Response, bytes]] = []
        while True:
            if self._header is None:
                if len(self._buffer) < RESPONSE_HEAD:
                    return out
                header = self._keys.open_header(bytes(self._buffer[:RESPONSE_HEAD]))
                if header is None:
                    raise ValueError("response envelope failed authentication")
                fields = _RESPONSE.unpack(header)
                version, status, flags, number, up_ack, down_offset, down_end, padding, size = (
                    fields
                )
                if version != VERSION or status not in Status._value2member_map_:
                    raise ValueError(f"unexpected response envelope (version {version})")
                if size > MAX_ENVELOPE_PAYLOAD:
                    raise ValueError(f"a response envelope of {size} bytes")
                if self._number is not None and number != self._number:
                    raise ValueError(f"an answer to request {number}, not {self._number}")
                response = Response(
                    Status(status), up_ack, down_offset, number, down_end, ResponseFlags(flags & 1)
                )
                self._header = (response, size, RESPONSE_HEAD + size + padding + _SEAL)
            response, size, total = self._header
            if len(self._buffer) < total:
                return out
            with memoryview(self._buffer) as view:
                if not self._keys.authentic(view[:total]):
                    raise ValueError("response envelope failed authentication")
            payload = bytes(self._buffer[RESPONSE_HEAD : RESPONSE_HEAD + size])
            del self._buffer[:total]
            self._header = None
            out.append((response, payload))

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole envelope."""
        return len(self._buffer) + (0 if self._header is None else 1)
