"""The machinery client and server connections share: records, streams, flow control, liveness.

Theory of operation
===================

A connection is one end of one session. It never does I/O: the driver feeds it what the carrier
delivered (``receive_data``), acts on the events it returns, calls it to open, send, end and
reset streams, and writes out whatever ``data_to_send()`` returns. Time is passed in as ``now``
(wall-clock seconds, since the Hello carries a timestamp the server compares with its clock);
``next_deadline()`` says when to call ``tick()``.

Every record carries one frame. Frames on stream 0 (Ping, Pong, Close) are handled here; stream
frames go through the stream's transition table (``streams.py``). Client stream ids are odd and
increase, so a frame for an id above the highest opened one names a stream that was never opened
(a protocol error), while a missing id below it belongs to a forgotten stream and its frames are
dropped. After ``close()``, a Close from the peer, or the idle timeout, no stream survives:
stream calls raise LocalProtocolError, except ``reset_stream`` and ``acknowledge``, which become
no-ops so that cleanup code need not check first. A RemoteProtocolError from ``receive_data``
leaves the connection dead: every later ``receive_data`` raises again; once the session had
started, the Close telling the peer why is already queued (``data_to_send``).

Features: each end advertises the optional features it speaks (Hello, Welcome); ``features``
is what both advertised, and a frame of a feature outside it is refused both ways (sending
raises LocalProtocolError, receiving RemoteProtocolError). A RemoteProtocolError after the
session started queues Close with the error's code (``ProtocolError.code``).

Liveness: ``_last_received`` moves whenever bytes arrive. With nothing received for
``keepalive`` seconds (clients only) ``tick()`` sends a Ping, then another every ``keepalive``
seconds; with nothing for ``idle_timeout`` seconds it queues Close(IDLE_TIMEOUT) and reports
SessionClosed. A carrier that notices a dead peer itself turns both off
(``carrier_watches_liveness``).
"""

from __future__ import annotations

import ipaddress
import math
from typing import ClassVar

from flyway_core.protocol.address import Address
from flyway_core.protocol.constants import (
    FRAME_FEATURES,
    INITIAL_WINDOW,
    MAX_DATA,
    CloseReason,
    FrameType,
    ResetReason,
)
from flyway_core.protocol.crypto import Bytes, Cipher
from flyway_core.protocol.errors import LocalProtocolError, RemoteProtocolError
from flyway_core.protocol.events import (
    ConnectionEvent,
    CreditAvailable,
    DatagramReceived,
    DataReceived,
    PongReceived,
    SessionClosed,
    StreamEnded,
    StreamReset,
)
from flyway_core.protocol.frames import (
    Close,
    Data,
    Datagram,
    End,
    Frame,
    Ping,
    Pong,
    Reset,
    Window,
    decode_frame,
    encode_data,
    encode_frame,
    truncate_message,
)
from flyway_core.protocol.handshake import check_window
from flyway_core.protocol.records import RecordReader, RecordWriter
from flyway_core.protocol.streams import HalfState, StreamState

__all__ = ["Connection"]

_MICROS = 1_000_000


class Connection:
    """What client and server share: the record layer, streams, flow control and liveness."""

    _peer: ClassVar[str]

    def __init__(
        self,
        *,
        now: float,
        window: int,
        idle_timeout: float,
        keepalive: float | None,
        features: int = 0,
    ) -> None:
        check_window(window, LocalProtocolError)
        if idle_timeout <= 0 or (keepalive is not None and keepalive <= 0):
            raise LocalProtocolError("idle timeout and keepalive must be positive")
        self._window = window
        self._peer_window = INITIAL_WINDOW
        self._idle_timeout = idle_timeout
        self._keepalive = keepalive
        self._last_received = now
        self._last_ping = now
        self._cipher: Cipher | None = None
        self._writer: RecordWriter | None = None
        self._reader: RecordReader | None = None
        self._out: list[bytes] = []
        self._out_data = 0  # stream bytes among them (record overhead aside)
        self._out_datagrams = 0  # datagram bytes among them
        self._streams: dict[int, StreamState] = {}
        self._highest_id = 0
        self._started = False
        self._closed = False
        self._error: RemoteProtocolError | None = None
        if not 0 <= features < 2**32:
            raise LocalProtocolError("features must fit a u32")
        self._features = features  # what we advertise
        self._shared = 0  # what both ends advertised, once the handshake is done

    # --- introspection -----------------------------------------------------------------

    @property
    def cipher(self) -> Cipher | None:
        """The session's AEAD (None on a server until the Hello arrives)."""
        return self._cipher

    @property
    def window(self) -> int:
        """The receive window we grant the peer per stream."""
        return self._window

    @property
    def peer_window(self) -> int:
        """Our send credit per stream: the peer's window, but never more than our own.

        A peer that announces a huge window and then never reads would otherwise make us
        queue that much per stream; capped, each side holds at most its own ``-W``.
        """
        return self._peer_window

    @property
    def features(self) -> int:
        """The optional features both ends advertised (``Feature`` bits; 0 before the start)."""
        return self._shared

    @property
    def closed(self) -> bool:
        """True once the session is over: Close sent or received, idle timeout, or failure."""
        return self._closed or self._error is not None

    @property
    def open_streams(self) -> int:
        """How many streams are alive."""
        return len(self._streams)

    def stream_ids(self) -> list[int]:
        """Return the ids of the live streams, oldest first."""
        return list(self._streams)

    def has_stream(self, stream_id: int) -> bool:
        """Return True while ``stream_id`` is live (opened, not yet forgotten)."""
        return stream_id in self._streams

    def send_window(self, stream_id: int) -> int:
        """Return how many bytes ``send_data`` accepts now (0 for unknown or ended streams)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.sending is HalfState.ENDED:
            return 0
        return stream.credit

    def buffered(self, stream_id: int) -> int:
        """Return the bytes received on the stream and not yet acknowledged."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.buffered

    # --- receiving ---------------------------------------------------------------------

    def receive_data(self, data: Bytes, now: float) -> list[ConnectionEvent]:
        """Feed bytes from the carrier; return what they meant, in order.

        Raises RemoteProtocolError (HandshakeRejected before the session starts) if the peer
        broke the protocol; the connection is then dead and every later call raises again.
        """
        if self._error is not None:
            raise type(self._error)(f"connection failed: {self._error}", code=self._error.code)
        if self._closed:
            return []
        if data:
            self._last_received = now
        try:
            return self._receive(data, now)
        except RemoteProtocolError as exc:
            self._error = exc
            self._streams.clear()
            self._discard_input()
            if self._started and not self._closed:  # tell the peer why before hanging up
                self._closed = True
                self._send(Close(_close_reason(exc.code), truncate_message(str(exc))))
            raise

    def _receive(self, data: Bytes, now: float) -> list[ConnectionEvent]:
        reader = self._reader
        if reader is None:  # pragma: no cover - subclasses set it before calling here
            raise LocalProtocolError("no record reader")
        reader.feed(data)
        events: list[ConnectionEvent] = []
        while not self._closed:
            plaintext = reader.next_record()
            if plaintext is None:
                break
            frame = decode_frame(plaintext)
            if self._started:
                needed = FRAME_FEATURES.get(frame.frame_type)
                if needed is not None and not needed & self._shared:
                    raise RemoteProtocolError(
                        f"{frame.frame_type.name} needs the {needed.name} feature,"
                        " which this session does not use"
                    )
                self._handle(frame, now, events)
            else:
                self._start(frame, events)
        return events

    def _discard_input(self) -> None:
        self._reader = None

    def _start(self, frame: Frame, events: list[ConnectionEvent]) -> None:  # pragma: no cover
        raise RemoteProtocolError(f"unexpected {frame.frame_type.name} before the handshake")

    def _handle(self, frame: Frame, now: float, events: list[ConnectionEvent]) -> None:
        match frame:
            case Data(stream_id, data):
                if stream := self._incoming(stream_id, frame):
                    stream.receive(FrameType.DATA)
                    stream.take(len(data), self._window)
                    events.append(DataReceived(stream_id, data))
            case Datagram(stream_id, address, data):
                if stream := self._incoming(stream_id, frame):
                    stream.receive(FrameType.DATAGRAM)
                    if self._peer == "server" and not _is_ip(address.host):
                        raise RemoteProtocolError(f"DATAGRAM from a name ({address.host!r})")
                    events.append(DatagramReceived(stream_id, address, data))
            case Window(stream_id, increment):
                if stream := self._incoming(stream_id, frame):
                    if stream.flow:
                        raise RemoteProtocolError(f"WINDOW on {stream.name}")
                    stream.grant(increment, self._peer_window)
                    events.append(CreditAvailable(stream_id))
            case End(stream_id):
                if stream := self._incoming(stream_id, frame):
                    stream.receive(FrameType.END)
                    events.append(StreamEnded(stream_id))
                    self._forget_if_finished(stream)
            case Reset(stream_id, reason, message):
                if self._incoming(stream_id, frame):
                    del self._streams[stream_id]
                    events.append(StreamReset(stream_id, reason, message))
            case Ping(payload):
                self._send(Pong(payload))
            case Pong(payload):
                sent = int.from_bytes(payload, "big")
                events.append(PongReceived((_micros(now) - sent) % 2**64 / _MICROS))
            case Close(reason, message):
                self._closed = True
                self._streams.clear()
                events.append(SessionClosed(reason, message))
            case _:
                self._handle_role(frame, events)

    def _handle_role(self, frame: Frame, events: list[ConnectionEvent]) -> None:
        raise RemoteProtocolError(f"the {self._peer} may not send {frame.frame_type.name}")

    def _incoming(self, stream_id: int, frame: Frame) -> StreamState | None:
        stream = self._streams.get(stream_id)
        if stream is None and (stream_id % 2 == 0 or stream_id > self._highest_id):
            raise RemoteProtocolError(
                f"{frame.frame_type.name} for stream {stream_id}, which was never opened"
            )
        return stream  # None: a stream we forgot; its late frames are a legal race

    def _forget_if_finished(self, stream: StreamState) -> None:
        if stream.finished:
            del self._streams[stream.stream_id]

    # --- sending -----------------------------------------------------------------------

    @property
    def wants_to_send(self) -> bool:
        """True when bytes are queued for the carrier (``data_to_send`` would return some)."""
        return bool(self._out)

    def data_to_send(self) -> bytes:
        """Return (and forget) every byte queued for the carrier, possibly none."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        self._out_data = self._out_datagrams = 0
        return data

    @property
    def queued_data(self) -> int:
        """Stream bytes queued for the carrier and not yet taken by ``data_to_send``."""
        return self._out_data

    @property
    def queued_datagrams(self) -> int:
        """Datagram bytes queued for the carrier and not yet taken by ``data_to_send``."""
        return self._out_datagrams

    def _send(self, frame: Frame) -> None:
        if self._writer is None:
            raise LocalProtocolError("the session has not started")
        needed = FRAME_FEATURES.get(frame.frame_type)
        if needed is not None and not needed & self._shared:
            raise LocalProtocolError(
                f"cannot send {frame.frame_type.name}: the peer did not advertise {needed.name}"
            )
        self._out.extend(self._writer.seal_parts(encode_frame(frame)))

    def _usable(self) -> None:
        if self._error is not None:
            raise LocalProtocolError(f"the session failed: {self._error}")
        if self._closed:
            raise LocalProtocolError("the session is closed")
        if self._writer is None:
            raise LocalProtocolError("the session has not started")

    def _stream(self, stream_id: int) -> StreamState:
        self._usable()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        return stream

    def open_stream(self, target: Address, data: bytes = b"") -> int:
        """Open a stream to ``target`` carrying ``data``; return its id (client only)."""
        raise LocalProtocolError("only the client opens streams")

    def open_flow(self) -> int:
        """Open a datagram flow; return its id (client only, feature DATAGRAM_FLOWS)."""
        raise LocalProtocolError("only the client opens flows")

    def accept_stream(self, stream_id: int, bound: Address | None = None) -> None:
        """Tell the client its stream reached the target (server only).

        ``bound`` is our local address of the connection to the target. It goes out (as
        AcceptBound) only in a session using ``Feature.BOUND_ADDRESS``, and only if the wire
        can carry it (not a scoped IPv6 address); otherwise a plain Accept goes out.
        """
        raise LocalProtocolError("only the server accepts streams")

    def send_data(self, stream_id: int, data: Bytes) -> None:
        """Queue ``data`` on the stream; it must fit ``send_window(stream_id)``."""
        stream = self._stream(stream_id)
        if not stream.can_send(FrameType.DATA):
            stream.send(FrameType.DATA)  # raises, naming the state
        stream.spend(len(data))
        writer = self._writer
        if writer is None:  # pragma: no cover - streams exist only once the session started
            raise LocalProtocolError("the session has not started")
        out = self._out
        self._out_data += len(data)
        view = memoryview(data) if len(data) > MAX_DATA else data  # slices without copying
        for start in range(0, len(data), MAX_DATA):
            out.extend(writer.seal_parts(encode_data(stream_id, view[start : start + MAX_DATA])))

    def send_datagram(self, stream_id: int, address: Address, data: Bytes) -> None:
        """Queue one datagram on a flow: to ``address`` (client), or from it (server).

        Datagrams take no credit: bounding them (dropping what is over a budget) is
        the caller's business. LocalProtocolError if it is no open flow, or if
        ``data`` is over ``max_datagram(address)``.
        """
        stream = self._stream(stream_id)
        stream.send(FrameType.DATAGRAM)
        self._send(Datagram(stream_id, address, bytes(data)))
        self._out_datagrams += len(data)

    def end_stream(self, stream_id: int) -> None:
        """Queue End: we send nothing more on the stream, but may still receive."""
        stream = self._stream(stream_id)
        stream.send(FrameType.END)
        self._send(End(stream_id))
        self._forget_if_finished(stream)

    def reset_stream(self, stream_id: int, reason: ResetReason, message: str = "") -> None:
        """Queue Reset and forget the stream; a no-op if it is already gone."""
        if self.closed or stream_id not in self._streams:
            return
        del self._streams[stream_id]
        self._send(Reset(stream_id, ResetReason(reason), truncate_message(message)))

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Report that the application consumed ``size`` received bytes of the stream.

        A Window frame returns them to the peer once a quarter of the window has piled up:
        of the window both sides use, the smaller of the two, which is all the peer may
        have in flight (``peer_window``: both ends compute the same minimum).
        """
        stream = None if self.closed else self._streams.get(stream_id)
        window = min(self._window, self._peer_window)
        if stream is not None and (increment := stream.consume(size, window)):
            self._send(Window(stream_id, increment))

    # --- liveness ----------------------------------------------------------------------

    def ping(self, now: float) -> None:
        """Queue a Ping; the Pong comes back as PongReceived with the round-trip time."""
        self._usable()
        self._last_ping = now
        self._send(Ping((_micros(now) % 2**64).to_bytes(8, "big")))

    def carrier_watches_liveness(self) -> None:
        """Stop keepalive pings and the idle timeout: the carrier notices a dead peer itself."""
        self._idle_timeout = math.inf
        self._keepalive = None

    def next_deadline(self) -> float | None:
        """Return when ``tick()`` has something to do, or None once the session is over."""
        if self.closed:
            return None
        deadline = self._last_received + self._idle_timeout
        if self._keepalive is not None and self._writer is not None:
            keepalive = max(self._last_received, self._last_ping) + self._keepalive
            deadline = min(deadline, keepalive)
        return deadline

    def tick(self, now: float) -> list[ConnectionEvent]:
        """Send a keepalive Ping, or close the session when it has been idle too long."""
        if self.closed:
            return []
        if now >= self._last_received + self._idle_timeout:
            message = f"nothing received for {self._idle_timeout:g} s"
            self.close(CloseReason.IDLE_TIMEOUT, message)
            return [SessionClosed(CloseReason.IDLE_TIMEOUT, message)]
        keepalive = self._keepalive
        if keepalive is not None and now >= max(self._last_received, self._last_ping) + keepalive:
            self.ping(now)
        return []

    def close(self, reason: CloseReason = CloseReason.NORMAL, message: str = "") -> None:
        """Queue Close and end every stream; a no-op if the session is already closed.

        Also allowed after receive_data raised, to tell the peer why before hanging up.
        """
        if self._closed:
            return
        self._closed = True
        self._streams.clear()
        if self._writer is not None:
            self._send(Close(CloseReason(reason), truncate_message(message)))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _close_reason(code: int) -> CloseReason:
    try:
        return CloseReason(code)
    except ValueError:
        return CloseReason.PROTOCOL_ERROR


def _micros(now: float) -> int:
    """Return ``now`` (seconds) in whole microseconds."""
    return int(now * _MICROS)
