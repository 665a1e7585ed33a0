"""Whole-session properties: chunking never changes the events, and tampering never gets through."""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol.helpers import MASTER, NOW, SALT, TunnelPair, data_of

from flyway_core.address import Address
from flyway_core.errors import HandshakeRejected, RemoteProtocolError
from flyway_core.protocol import (
    ClientConnection,
    ConnectionEvent,
    ReplayCache,
    ResetReason,
    ServerConnection,
    StreamOpened,
)


@functools.cache
def _session_streams() -> tuple[bytes, bytes]:
    """Both directions of a session with a few streams, data both ways, ends and a reset."""
    pair = TunnelPair()
    client, server = pair.client, pair.server
    one = client.open_stream(Address("example.com", 80), b"hello")
    two = client.open_stream(Address("192.0.2.7", 22), b"")
    three = client.open_stream(Address("2001:db8::2", 443), b"tls")
    client.send_data(one, bytes(range(250)) * 240)  # within INITIAL_WINDOW
    client.end_stream(two)
    client.ping(NOW)
    c2s = client.data_to_send()
    server.receive_data(c2s, NOW)
    for stream_id in (one, two, three):
        server.accept_stream(stream_id)
    server.send_data(one, b"response" * 5000)
    server.end_stream(two)
    server.reset_stream(three, ResetReason.UNREACHABLE, "unreachable")
    s2c = server.data_to_send()
    return c2s, s2c


def _feed(
    conn: ClientConnection | ServerConnection, data: bytes, cuts: list[int]
) -> list[ConnectionEvent]:
    events: list[ConnectionEvent] = []
    _feed_into(conn, data, cuts, events)
    return events


def _fresh_server() -> ServerConnection:
    return ServerConnection(MASTER, ReplayCache(), now=NOW, padding=b"")


def _fresh_client() -> ClientConnection:
    client = ClientConnection(MASTER, now=NOW, salt=SALT, padding=b"")
    client.data_to_send()
    for _ in range(3):  # the streams the server answers about
        client.open_stream(Address("example.com", 80))
    return client


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**20), max_size=20))
def test_any_chunking_of_the_client_stream_yields_the_same_events(cuts: list[int]) -> None:
    c2s, _ = _session_streams()
    assert _feed(_fresh_server(), c2s, cuts) == _fresh_server().receive_data(c2s, NOW)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**20), max_size=20))
def test_any_chunking_of_the_server_stream_yields_the_same_events(cuts: list[int]) -> None:
    _, s2c = _session_streams()
    assert _feed(_fresh_client(), s2c, cuts) == _fresh_client().receive_data(s2c, NOW)


def test_the_reference_session_carries_what_it_should() -> None:
    c2s, s2c = _session_streams()
    events = _fresh_server().receive_data(c2s, NOW)
    assert StreamOpened(1, Address("example.com", 80), b"hello") in events
    assert data_of(events, 1) == bytes(range(250)) * 240
    assert data_of(_fresh_client().receive_data(s2c, NOW), 1) == b"response" * 5000


def _check_tampered(
    conn: ClientConnection | ServerConnection, original: bytes, bit: int, cuts: list[int]
) -> None:
    tampered = bytearray(original)
    tampered[bit // 8] ^= 1 << (bit % 8)
    genuine = _reference_data(conn, original)
    events: list[ConnectionEvent] = []
    with pytest.raises(RemoteProtocolError):
        _feed_into(conn, bytes(tampered), cuts, events)
    for stream_id, data in genuine.items():
        assert data.startswith(data_of(events, stream_id))  # a genuine prefix, never altered


def _feed_into(
    conn: ClientConnection | ServerConnection,
    data: bytes,
    cuts: list[int],
    events: list[ConnectionEvent],
) -> None:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    for start, end in itertools.pairwise(points):
        events += conn.receive_data(data[start:end], NOW)


def _reference_data(conn: ClientConnection | ServerConnection, original: bytes) -> dict[int, bytes]:
    fresh = _fresh_server() if isinstance(conn, ServerConnection) else _fresh_client()
    events = fresh.receive_data(original, NOW)
    return {stream_id: data_of(events, stream_id) for stream_id in (1, 3, 5)}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_flipped_bit_in_the_client_stream_is_always_caught(data: st.DataObject) -> None:
    c2s, _ = _session_streams()
    bit = data.draw(st.integers(0, len(c2s) * 8 - 1), label="bit")
    cuts = data.draw(st.lists(st.integers(0, len(c2s)), max_size=6), label="cuts")
    server = _fresh_server()
    _check_tampered(server, c2s, bit, cuts)
    if bit < (32 + 18) * 8:  # the salt or the Hello's sealed length: nobody gets in
        assert not server.accepted


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_flipped_bit_in_the_server_stream_is_always_caught(data: st.DataObject) -> None:
    _, s2c = _session_streams()
    bit = data.draw(st.integers(0, len(s2c) * 8 - 1), label="bit")
    cuts = data.draw(st.lists(st.integers(0, len(s2c)), max_size=6), label="cuts")
    _check_tampered(_fresh_client(), s2c, bit, cuts)


def test_a_flipped_salt_bit_is_a_rejected_handshake() -> None:
    c2s, _ = _session_streams()
    tampered = bytes([c2s[0] ^ 0x80]) + c2s[1:]
    with pytest.raises(HandshakeRejected, match="authentication failed"):
        _fresh_server().receive_data(tampered, NOW)
