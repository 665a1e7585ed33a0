"""Fuzzing the protocol's parsers: every input is a frame, a record, a session or a typed error.

Each parser faces bytes from a peer. Each test feeds it random bytes and damaged copies of
valid encodings (``flyway_core.testing.mutations``), in any chunking, and asserts that the only
exception is the documented one (RemoteProtocolError; HandshakeRejected before a session
starts), that buffers stay bounded, and that nothing forged gets through. Behind the AEAD the
plaintexts are fuzzed too: authentic records carrying garbage frames must end the session with
a Close the peer can read, never crash it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from protocol.helpers import MASTER, NOW, SALT, TunnelPair, data_of

from flyway_core.address import Address
from flyway_core.protocol import (
    CLOCK_SKEW,
    DEFAULT_WINDOW,
    MAX_PLAINTEXT,
    MAX_WINDOW,
    MIN_WINDOW,
    PROTOCOL_VERSION,
    SALT_SIZE,
    Accept,
    AcceptBound,
    Cipher,
    ClientConnection,
    Close,
    CloseReason,
    Connection,
    ConnectionEvent,
    Data,
    Datagram,
    End,
    Frame,
    FrameType,
    HandshakeRejected,
    Hello,
    Open,
    Opener,
    OpenFlow,
    PacketSealer,
    Ping,
    Pong,
    RecordReader,
    RecordWriter,
    RemoteProtocolError,
    ReplayCache,
    Reset,
    ResetReason,
    Sealer,
    ServerConnection,
    SessionClosed,
    SessionStarted,
    Welcome,
    Window,
    decode_frame,
    encode_frame,
    session_keys,
)
from flyway_core.protocol.addressing import AddressType, decode_address, encode_address
from flyway_core.protocol.constants import FRAME_HEADER_SIZE
from flyway_core.protocol.handshake import HelloReader
from flyway_core.protocol.records import MAX_RECORD, record_size
from flyway_core.testing.mutations import cuts, mutations_of, pieces

# FLYWAY_FUZZ_EXAMPLES=20000 for a long run; the suite's default keeps this file to seconds
FUZZ = settings(
    max_examples=int(os.environ.get("FLYWAY_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FRAME_CLASSES = (
    Hello,
    Welcome,
    Open,
    Accept,
    AcceptBound,
    Data,
    End,
    Reset,
    Window,
    Ping,
    Pong,
    Close,
    OpenFlow,
    Datagram,
)

# --- seeds: a valid encoding of every frame type, address type, record stream, hello -------

FRAME_SEEDS: list[Frame] = [
    Hello(PROTOCOL_VERSION, int(NOW * 1000), DEFAULT_WINDOW, 0, b"pad"),
    Welcome(PROTOCOL_VERSION, DEFAULT_WINDOW, 0, b"p"),
    Open(1, Address("example.com", 443), b"GET / HTTP/1.1\r\n"),
    Open(3, Address("192.0.2.1", 80)),
    Open(5, Address("2001:db8::1", 8080), b"x"),
    Accept(1),
    AcceptBound(1, Address("192.0.2.9", 40000)),
    AcceptBound(3, Address("2001:db8::9", 40001)),
    Data(1, b"some stream bytes"),
    End(1),
    Reset(1, ResetReason.REFUSED, "connection refused"),
    Window(1, 65536),
    Ping(bytes(range(8))),
    Pong(bytes(range(8))),
    Close(CloseReason.PROTOCOL_ERROR, "bye"),
    OpenFlow(7),
    Datagram(7, Address("dns.example", 53), b"\x12\x34 a query"),
    Datagram(7, Address("2001:db8::53", 53), b""),
]
FRAME_ENCODINGS = [encode_frame(frame) for frame in FRAME_SEEDS]

KEY = bytes(range(100, 132))
RECORD_PLAINTEXTS = [b"a", bytes(range(256)) * 20, b"x" * MAX_PLAINTEXT, b"last"]


def _record_stream() -> bytes:
    writer = RecordWriter(Sealer(KEY, Cipher.AES_256_GCM))
    return b"".join(writer.seal(plaintext) for plaintext in RECORD_PLAINTEXTS)


RECORD_STREAM = _record_stream()


def _client(*, streams: bool = False) -> ClientConnection:
    """The same client every time (fixed salt, clock and padding), so its bytes are seeds."""
    client = ClientConnection(MASTER, now=NOW, salt=SALT, padding=b"pad")
    if streams:
        client.open_stream(Address("example.com", 80), b"hi")
        client.open_stream(Address("192.0.2.7", 22))
    return client


def _server() -> ServerConnection:
    return ServerConnection(MASTER, ReplayCache(), now=NOW, padding=b"")


def _session() -> tuple[ClientConnection, ServerConnection, bytes, bytes]:
    """A client with two streams, a server that accepted them, and what each sent."""
    client = _client(streams=True)
    client.send_data(1, b"more uplink")
    c2s = client.data_to_send()
    server = _server()
    server.receive_data(c2s, NOW)
    server.accept_stream(1)
    server.send_data(1, b"downlink bytes")
    server.end_stream(1)
    server.accept_stream(3)
    return client, server, c2s, server.data_to_send()


FIRST_BYTES = _client().hello()  # salt and Hello record
_, _, C2S, S2C = _session()  # a client's opening (hello, two Opens, Data) and the server's answer
WELCOME_SIZE = record_size(len(encode_frame(Welcome(PROTOCOL_VERSION, DEFAULT_WINDOW))))


def _feed(
    conn: Connection, data: bytes, where: list[int], events: list[ConnectionEvent]
) -> RemoteProtocolError | None:
    """Feed ``data`` in pieces, collecting events; return the protocol error, if one came."""
    try:
        for piece in pieces(data, where):
            events += conn.receive_data(piece, NOW)
    except RemoteProtocolError as exc:  # anything else escapes and fails the test
        return exc
    return None


def _assert_dead(conn: Connection) -> None:
    assert conn.closed
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"", NOW)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(FIRST_BYTES, NOW)


def _assert_close_reaches(reply: bytes, peer: Connection, error: RemoteProtocolError) -> None:
    """The failed end queued a Close with the error's reason, and its peer can read it."""
    events = peer.receive_data(reply, NOW)
    assert events, "no Close was queued"
    last = events[-1]
    assert isinstance(last, SessionClosed)
    assert last.reason is CloseReason(error.code)


# --- frames --------------------------------------------------------------------------------


def test_the_seeds_cover_every_frame_type_and_address_type() -> None:
    assert {frame.frame_type for frame in FRAME_SEEDS} == set(FrameType)
    assert {encoding[0] for encoding in ADDRESS_SEEDS} == set(AddressType)


def _decoded(plaintext: bytes) -> Frame | None:
    """Decode ``plaintext``: a frame that encodes back to it, or None for RemoteProtocolError."""
    try:
        frame = decode_frame(plaintext)
    except RemoteProtocolError:
        event("refused")
        return None
    event(f"decoded {type(frame).__name__}")
    assert isinstance(frame, FRAME_CLASSES)
    if isinstance(frame, Open | Datagram) and plaintext[FRAME_HEADER_SIZE] == AddressType.DOMAIN:
        host = frame.target.host if isinstance(frame, Open) else frame.address.host
        try:  # a domain-typed name spelling an IP literal re-encodes as that IP: not canonical
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return frame
    assert encode_frame(frame) == plaintext  # decoding is exact: nothing dropped or invented
    return frame


frame_like = st.builds(
    lambda kind, stream_id, payload: bytes([kind]) + stream_id.to_bytes(4, "big") + payload,
    st.integers(0, 13),
    st.sampled_from([0, 1, 2, 2**32 - 1]) | st.integers(0, 2**32 - 1),
    st.binary(max_size=300),
)
oversized = st.builds(
    lambda kind, size: bytes([kind, 0, 0, 0, 1]) + bytes(size),
    st.sampled_from(FrameType),
    st.integers(MAX_PLAINTEXT - 40, MAX_PLAINTEXT + 40),
)
plaintexts = st.one_of(
    st.binary(max_size=200), frame_like, oversized, mutations_of(FRAME_ENCODINGS)
)


@FUZZ
@given(plaintexts)
def test_any_plaintext_decodes_exactly_or_raises_remote_protocol_error(plaintext: bytes) -> None:
    _decoded(plaintext)


@FUZZ
@given(mutations_of(FRAME_ENCODINGS, max_edits=2))
def test_a_damaged_frame_of_every_type_decodes_exactly_or_is_refused(plaintext: bytes) -> None:
    _decoded(plaintext)


# --- addresses -----------------------------------------------------------------------------

ADDRESS_SEEDS = [
    encode_address(Address(host, port))
    for host, port in [("192.0.2.1", 80), ("example.com", 443), ("2001:db8::1", 8080)]
]


@FUZZ
@given(st.binary(max_size=300) | mutations_of(ADDRESS_SEEDS), st.binary(max_size=8))
def test_any_address_bytes_decode_to_a_self_delimited_target_or_raise(
    payload: bytes, trailer: bytes
) -> None:
    try:
        target, size = decode_address(payload)
    except RemoteProtocolError:
        return
    assert isinstance(target, Address) and 0 <= target.port <= 65535
    assert 1 <= size <= len(payload)
    assert decode_address(payload[:size] + trailer) == (target, size)  # what follows is not read


# --- per-packet sealing --------------------------------------------------------------------

PACKETS = PacketSealer(MASTER, b"fuzz")
GENUINE_PACKETS = {
    (PACKETS.seal(b""), b""): b"",
    (PACKETS.seal(b"a header" * 5), b""): b"a header" * 5,
    (PACKETS.seal(b"with associated data", b"ad"), b"ad"): b"with associated data",
}
buffers: st.SearchStrategy[Callable[[bytes], bytes | bytearray | memoryview]] = st.sampled_from(
    [bytes, bytearray, memoryview]
)


@FUZZ
@given(
    st.binary(max_size=120) | mutations_of([packet for packet, _ in GENUINE_PACKETS]),
    st.sampled_from([b"", b"ad", b"other"]),
    buffers,
)
def test_a_packet_opens_only_as_sealed_else_remote_protocol_error(
    packet: bytes, associated: bytes, wrap: Callable[[bytes], bytes | bytearray | memoryview]
) -> None:
    genuine = GENUINE_PACKETS.get((packet, associated))
    if genuine is not None:
        assert PACKETS.open(wrap(packet), associated) == genuine
    else:
        with pytest.raises(RemoteProtocolError):
            PACKETS.open(wrap(packet), associated)


# --- records -------------------------------------------------------------------------------


def _read_records(
    data: bytes, where: list[int], wraps: list[Callable[[bytes], bytes | bytearray | memoryview]]
) -> tuple[list[bytes], RecordReader, bool]:
    """Feed ``data`` in pieces (as bytes, bytearray or memoryview), draining after each."""
    reader = RecordReader(Opener(KEY, Cipher.AES_256_GCM))
    out: list[bytes] = []
    try:
        for index, piece in enumerate(pieces(data, where)):
            reader.feed(wraps[index % len(wraps)](piece))
            while (plaintext := reader.next_record()) is not None:
                out.append(plaintext)
            assert reader.buffered < MAX_RECORD  # never more than one partial record held
    except RemoteProtocolError:
        return out, reader, True
    return out, reader, False


@FUZZ
@given(
    st.binary(max_size=600) | mutations_of(RECORD_STREAM),
    cuts(),
    st.lists(buffers, min_size=1, max_size=3),
)
def test_a_record_reader_yields_only_genuine_records_then_fails_for_good(
    data: bytes,
    where: list[int],
    wraps: list[Callable[[bytes], bytes | bytearray | memoryview]],
) -> None:
    out, reader, failed = _read_records(data, where, wraps)
    event(f"{len(out)} records, {'failed' if failed else 'waiting'}")
    assert out == RECORD_PLAINTEXTS[: len(out)]  # in order, unaltered, none invented
    if failed:
        reader.feed(RECORD_STREAM)
        assert reader.buffered == 0  # dead: it keeps nothing fed after the failure
        with pytest.raises(RemoteProtocolError):
            reader.next_record()  # and reads nothing, genuine bytes included
    elif data == RECORD_STREAM:
        assert out == RECORD_PLAINTEXTS


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, MAX_PLAINTEXT), st.binary(max_size=80)), min_size=1, max_size=5
    ),
    cuts(),
)
def test_authentic_lengths_with_bodies_that_disagree_are_refused(
    records: list[tuple[int, bytes]], where: list[int]
) -> None:
    # The plaintext side of the record layer: sealed lengths (zero and 65535 included) whose
    # sealed bodies are shorter, longer or right; a reader waits, refuses, or reads them.
    sealer = Sealer(KEY, Cipher.AES_256_GCM)
    data = b"".join(sealer.seal(n.to_bytes(2, "big")) + sealer.seal(body) for n, body in records)
    expected = []
    for length, body in records:
        if length == 0 or len(body) != length:
            break
        expected.append(body)
    out, _, failed = _read_records(data, where, [bytes])
    assert out == expected[: len(out)]
    if len(expected) == len(records):
        assert out == expected and not failed
    elif records[len(expected)][0] == 0:
        assert failed and out == expected  # an empty record is refused as soon as it is seen


# --- the server's handshake ----------------------------------------------------------------

first_bytes = st.one_of(
    st.lists(st.binary(max_size=200), max_size=8).map(b"".join),
    mutations_of([FIRST_BYTES, C2S]),
    st.binary(min_size=1, max_size=400).map(lambda garbage: SALT + garbage),  # salt, garbage
    st.binary(min_size=1, max_size=400).map(lambda garbage: FIRST_BYTES + garbage),
    st.binary(min_size=1, max_size=400).map(lambda garbage: C2S + garbage),
)


@FUZZ
@given(first_bytes, cuts())
def test_a_server_accepts_only_the_genuine_hello_and_refuses_the_rest_by_type(
    data: bytes, where: list[int]
) -> None:
    server = _server()
    events: list[ConnectionEvent] = []
    error = None
    try:
        for piece in pieces(data, where):
            got = server.receive_data(piece, NOW)
            events += got
            if not server.accepted:
                assert got == []
                assert server._hello is not None
                assert len(server._hello._pending) < SALT_SIZE + MAX_RECORD
    except RemoteProtocolError as exc:
        error = exc
    event(f"accepted={server.accepted} error={type(error).__name__}")
    if not server.accepted:  # a stranger: rejected by type, and nothing is sent back
        assert error is None or isinstance(error, HandshakeRejected)
        assert events == []
        assert server.data_to_send() == b""
        if error is not None:
            _assert_dead(server)
        return
    assert data.startswith(FIRST_BYTES)  # only the genuine salt and Hello record get in
    if events:
        assert events[0] == SessionStarted(Cipher.AES_256_GCM, DEFAULT_WINDOW)
    else:
        assert error is not None  # it came in the call that accepted the Hello
    client = _client(streams=True)
    client.data_to_send()
    reply = server.data_to_send()
    if error is None:
        client.receive_data(reply, NOW)  # whatever the server answered is legal
        return
    # garbage after a good Hello: a protocol error of the session, not a rejected handshake
    assert not isinstance(error, HandshakeRejected)
    _assert_dead(server)
    _assert_close_reaches(reply, client, error)


def _acceptable(plaintext: bytes) -> bool:
    try:
        frame = decode_frame(plaintext)
    except RemoteProtocolError:
        return False
    return (
        isinstance(frame, Hello)
        and frame.version == PROTOCOL_VERSION
        and MIN_WINDOW <= frame.window <= MAX_WINDOW
        and abs(frame.timestamp_ms / 1000 - NOW) <= CLOCK_SKEW
    )


_NOW_MS = int(NOW * 1000)
_SKEW_MS = int(CLOCK_SKEW * 1000)
hellos = st.builds(  # near every boundary the server checks, on both sides of it
    Hello,
    st.sampled_from([PROTOCOL_VERSION] * 4 + [0, 2, 255]),
    st.integers(-_SKEW_MS - 2000, _SKEW_MS + 2000).map(lambda skew: _NOW_MS + skew)
    | st.integers(0, 2**64 - 1),
    st.sampled_from([MIN_WINDOW - 1, MIN_WINDOW, DEFAULT_WINDOW, MAX_WINDOW, MAX_WINDOW + 1])
    | st.integers(MIN_WINDOW - 2, MAX_WINDOW + 2),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=16),
).map(encode_frame)
hello_plaintexts = st.one_of(
    hellos,
    mutations_of(hellos, max_edits=1),
    mutations_of(FRAME_ENCODINGS),
    st.binary(min_size=1, max_size=80),
)


@FUZZ
@given(hello_plaintexts, st.sampled_from(Cipher), cuts())
def test_an_authentic_first_record_is_accepted_exactly_when_it_is_an_acceptable_hello(
    plaintext: bytes, cipher: Cipher, where: list[int]
) -> None:
    assume(0 < len(plaintext) <= MAX_PLAINTEXT)
    to_server, _ = session_keys(MASTER, SALT, cipher)
    data = SALT + RecordWriter(Sealer(to_server, cipher)).seal(plaintext)
    server = _server()
    events: list[ConnectionEvent] = []
    error = _feed(server, data, where, events)
    event(f"acceptable={_acceptable(plaintext)}")
    if _acceptable(plaintext):
        assert error is None
        window = decode_frame(plaintext).window  # type: ignore[union-attr]
        assert events == [SessionStarted(cipher, window)]
    else:
        assert isinstance(error, HandshakeRejected), error
        assert server.data_to_send() == b""


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8) | mutations_of(FIRST_BYTES))
def test_a_hello_reader_holds_at_most_a_salt_and_one_record_and_nothing_once_rejected(
    chunks: list[bytes] | bytes,
) -> None:
    reader = HelloReader(MASTER, ReplayCache())
    for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
        try:
            handshake = reader.receive(chunk, NOW)
        except HandshakeRejected:  # the only exception allowed; the reader is dead from now on
            assert len(reader._pending) == 0
            with pytest.raises(HandshakeRejected):
                reader.receive(FIRST_BYTES, NOW)  # even a genuine hello, and kept nowhere
            assert len(reader._pending) == 0
            return
        assert len(reader._pending) < SALT_SIZE + MAX_RECORD
        if handshake is not None:
            assert isinstance(handshake.hello, Hello)
            return


# --- the client facing something that is not (quite) its server ----------------------------

server_bytes = st.one_of(
    st.lists(st.binary(max_size=200), max_size=6).map(b"".join),
    mutations_of(S2C),
    st.binary(min_size=1, max_size=300).map(lambda garbage: S2C[:WELCOME_SIZE] + garbage),
    st.binary(min_size=1, max_size=300).map(lambda garbage: S2C + garbage),
    st.sampled_from(
        [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", b"<html>" + b"x" * 200]
    ),
)


@FUZZ
@given(server_bytes, cuts())
def test_a_client_refuses_garbage_from_a_server_by_type_and_reads_only_genuine_data(
    data: bytes, where: list[int]
) -> None:
    client, server, _, _ = _session()  # the server that would read the client's Close
    events: list[ConnectionEvent] = []
    error = _feed(client, data, where, events)
    event(f"started={client._started} error={type(error).__name__}")
    assert b"downlink bytes".startswith(data_of(events, 1))  # a genuine prefix, never altered
    if error is None:
        return
    _assert_dead(client)
    if isinstance(error, HandshakeRejected):  # before Welcome: nothing more to say
        assert not client._started
        assert client.data_to_send() == b""
    else:
        assert client._started
        _assert_close_reaches(client.data_to_send(), server, error)


# --- authentic records carrying garbage frames, both ways ----------------------------------

small_ids = st.integers(1, 7)
frames = st.one_of(
    st.sampled_from(FRAME_SEEDS),
    st.builds(
        Open, small_ids, st.sampled_from([Address("example.com", 80)]), st.binary(max_size=8)
    ),
    st.builds(Accept, small_ids),
    st.builds(AcceptBound, small_ids, st.sampled_from([Address("192.0.2.9", 40000)])),
    st.builds(Data, small_ids, st.binary(min_size=1, max_size=64)),
    st.builds(End, small_ids),
    st.builds(Reset, small_ids, st.sampled_from(ResetReason)),
    st.builds(Window, small_ids, st.integers(1, 2**32 - 1)),
    st.builds(Welcome, st.integers(0, 2), st.integers(0, 2**32 - 1)),
)
record_plaintexts = st.one_of(frames.map(encode_frame), plaintexts)


@FUZZ
@given(st.lists(record_plaintexts, min_size=1, max_size=6), st.booleans(), cuts())
def test_authentic_records_of_garbage_frames_end_the_session_with_a_close(
    plaintexts_sent: list[bytes], to_server: bool, where: list[int]
) -> None:
    assume(all(0 < len(p) <= MAX_PLAINTEXT for p in plaintexts_sent))
    pair = TunnelPair()
    stream = pair.client.open_stream(Address("example.com", 80), b"hi")
    pair.flush()
    pair.server.accept_stream(stream)
    pair.flush()
    sender: Connection = pair.client if to_server else pair.server
    receiver: Connection = pair.server if to_server else pair.client
    assert sender._writer is not None  # play a rogue peer: seal whatever it likes
    data = b"".join(b"".join(sender._writer.seal_parts(p)) for p in plaintexts_sent)
    events: list[ConnectionEvent] = []
    error = _feed(receiver, data, where, events)
    event(f"error={type(error).__name__} code={getattr(error, 'code', None)}")
    reply = receiver.data_to_send()
    if error is None:
        sender.receive_data(reply, NOW)  # its answers to garbage are still legal frames
        return
    assert not isinstance(error, HandshakeRejected)
    _assert_dead(receiver)
    _assert_close_reaches(reply, sender, error)
